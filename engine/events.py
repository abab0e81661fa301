"""Run events, delivered to subscribers in order on the thread that runs the graph.

Names follow what ComfyUI users know (execution started, cached, executing, progress,
executed, error, interrupted), spelled as Loom's `--events json` spells them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from .errors import NodeFailure

log = logging.getLogger("loom.events")


class RunStatus(StrEnum):
    """How a run ended; a str, so it compares with and prints as its value."""

    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INVALID = "invalid"  # refused by validation before anything ran


class NodeStatus(StrEnum):
    """Where one node stands in the latest run (what the editor draws)."""

    NONE = ""
    RUNNING = "running"
    COMPUTED = "computed"
    CACHED = "cached"
    FAILED = "failed"


@dataclass
class Event:
    event: ClassVar[str] = ""
    run_id: str

    def to_json(self) -> dict[str, Any]:
        d = {"event": self.event}
        d.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        return d


@dataclass
class RunStarted(Event):
    event: ClassVar[str] = "run_started"
    plan: dict[str, list[str]] = field(default_factory=dict)  # {"run": [...], "cached": [...]}
    targets: list[str] = field(default_factory=list)
    # engine.estimates.MemoryEstimate.to_dict(): per node {peak, weights, activations} in
    # bytes, the run's peak and node, the limit, whether it fits, and a warning if not
    memory: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeStarted(Event):
    event: ClassVar[str] = "node_started"
    node: str = ""
    type: str = ""


@dataclass
class Progress(Event):
    event: ClassVar[str] = "progress"
    node: str = ""
    step: int = 0
    total: int = 0
    preview: Any = None  # an image for the editor; never in JSON

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event, "run_id": self.run_id, "node": self.node,
                "step": self.step, "total": self.total}


@dataclass
class NodeFinished(Event):
    event: ClassVar[str] = "node_finished"
    node: str = ""
    type: str = ""
    cached: bool = False
    seconds: float = 0.0
    ui: Any = None  # what an output node reports (files written, previews)
    outputs: Any = None  # the node's output values (for the editor's thumbnails); never in JSON

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d.pop("outputs", None)
        return d


@dataclass
class NodeFailed(Event):
    event: ClassVar[str] = "node_failed"
    node: str = ""
    type: str = ""
    error: NodeFailure | None = None

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event, "run_id": self.run_id, "node": self.node, "type": self.type,
                "error": self.error.to_dict() if self.error else None}


@dataclass
class RunFinished(Event):
    event: ClassVar[str] = "run_finished"
    status: RunStatus = RunStatus.OK
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def emit(self, ev: Event) -> None:
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:  # a broken listener must not break the run
                log.exception("event listener failed on %s", ev.event)
