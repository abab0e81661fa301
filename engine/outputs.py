"""What a node's outputs must be: checks of computed and cached outputs, and the
failure a node's exception becomes."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import values as V
from .errors import InputError, NodeFailure, describe, is_out_of_memory
from .spec import Node


def check_outputs(cls: type[Node], nid: str, outs: Any) -> dict[str, Any]:
    if not isinstance(outs, dict):
        raise TypeError(f"{cls.type}.run returned {type(outs).__name__}, not a dict of outputs")
    missing = [o.name for o in cls.outputs if o.name not in outs]
    if missing:
        raise TypeError(f"{cls.type}.run returned no value for {missing}")
    for o in cls.outputs:
        if o.type in V.FINITE_TYPES and V.non_finite(outs[o.name]):
            raise ValueError(f"output '{o.name}' of {nid} holds NaN or infinite values "
                             "(a setting or a model's weights broke the computation)")
    return outs


def entry_problem(cls: type[Node], outs: Any, output_dir: Path) -> str | None:
    """Why a cached entry cannot stand for this node's outputs (None if it can)."""
    if not isinstance(outs, dict):
        return f"outputs are {type(outs).__name__}, not a dict"
    for o in cls.outputs:
        if o.name not in outs:
            return f"no value for output '{o.name}'"
        problem = V.kind_problem(o.type, outs[o.name])
        if problem is not None:
            return f"output '{o.name}': {problem}"
    ui = outs.get("ui")
    if ui is None and not cls.output:
        return None
    if not isinstance(ui, dict):  # an output node's result is what it shows: its ui
        return "no ui dict"
    files = ui.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return "ui files are not a list of paths"
    root = output_dir.resolve()
    for f in files:
        try:
            inside = Path(f).resolve().is_relative_to(root)
        except (OSError, ValueError):
            inside = False
        if not inside:
            return f"reports a file outside the output folder: {f!r}"
    return None


def failure_of(nid: str, node_type: str, exc: BaseException) -> NodeFailure:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, InputError):
        return NodeFailure(nid, node_type, str(exc), exc.input, exc.expected,
                           describe(exc.got) if exc.got is not None else None,
                           exc.hint or None, tb)
    if is_out_of_memory(exc):
        return NodeFailure(nid, node_type, f"out of memory: {exc}", hint="use a smaller size or "
                           "batch, or free memory", traceback=tb)
    return NodeFailure(nid, node_type, f"{type(exc).__name__}: {exc}", traceback=tb)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is None:
        yield
    else:
        with torch.no_grad():
            yield
