"""Errors that carry enough to point a user at the node, the input and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class LoomError(Exception):
    """Base of every error Loom raises on purpose."""


class GraphError(LoomError):
    """An edit that would leave the graph invalid; the graph is unchanged."""


class WorkflowError(LoomError):
    """A workflow file that cannot be read: names the file and the place in it."""

    def __init__(self, file: str, place: str, message: str):
        self.file, self.place, self.message = file, place, message
        where = f"{file}: {place}" if place else file
        super().__init__(f"{where}: {message}")


class Cancelled(LoomError):
    """Raised by `ctx.check_cancelled()` once the run's cancel token is set."""


class InputError(LoomError):
    """Raised by a node's `run` for a bad input value: says what was expected."""

    def __init__(self, input: str | None, expected: str, got: Any = None, hint: str = "",
                 message: str | None = None):
        self.input, self.expected, self.got, self.hint = input, expected, got, hint
        text = message or (f"input '{input}': expected {expected}, got {_short(got)}" if input
                           else f"expected {expected}, got {_short(got)}")
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class PartialOutput(LoomError):
    """A node failed after writing some of its files: `files` lists the ones it wrote."""

    def __init__(self, message: str, files: list[str]):
        self.files = list(files)
        super().__init__(message)


@dataclass
class NodeFailure:
    """What went wrong in one node, structured for the CLI, the editor and JSON events."""

    node: str
    node_type: str
    message: str
    input: str | None = None
    expected: str | None = None
    got: str | None = None
    hint: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value)
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        text = f"{type(value).__name__}{list(shape)} {value.dtype}"
    if len(text) <= limit:
        return text
    # keep both ends: a long path's file name (at the end) is what the user recognises
    head = limit // 3
    return text[:head] + "..." + text[-(limit - head - 3):]


def describe(value: Any) -> str:
    """A short, human description of a value for error messages."""
    return _short(value)


_OOM_TEXT = ("out of memory", "can't allocate memory", "defaultcpuallocator",
             "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: MemoryError, or torch's error for CPU or GPU memory."""
    return isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in _OOM_TEXT)
