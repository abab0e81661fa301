"""What a node's `run` gets as `ctx`: progress, cancellation, models, paths, a logger."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from .errors import Cancelled
from .events import EventBus, Progress
from .protocols import Models, PathResolver


class CancelToken:
    """Set from any thread; checked between nodes and inside long nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("the run was cancelled")


class NodeContext:
    PROGRESS_INTERVAL = 0.1  # seconds between progress events (first and last always sent)
    PREVIEW_INTERVAL = 0.25  # at most 4 previews a second

    def __init__(self, *, run_id: str, node_id: str, node_type: str, bus: EventBus,
                 cancel: CancelToken, models: Models, resolve_path: PathResolver,
                 output_dir: Path,
                 workflow: Any = None, logger: logging.Logger | None = None):
        self.run_id, self.node_id, self.node_type = run_id, node_id, node_type
        self._bus, self._cancel = bus, cancel
        self.models = models
        self._resolve = resolve_path
        self.output_dir = output_dir
        self.workflow = workflow  # the graph as a workflow dict, for embedding in outputs
        self.log = logger or logging.getLogger(f"loom.node.{node_type}")
        self._last_progress = 0.0
        self._last_preview = 0.0

    def check_cancelled(self) -> None:
        self._cancel.check()

    @property
    def cancelled(self) -> bool:
        return self._cancel.cancelled

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report progress; also a cancellation point. Throttled, first and last kept."""
        self._cancel.check()
        now = time.monotonic()
        edge = step <= 1 or step >= total
        if not edge and now - self._last_progress < self.PROGRESS_INTERVAL:
            return
        self._last_progress = now
        if preview is not None:
            if now - self._last_preview < self.PREVIEW_INTERVAL and step < total:
                preview = None
            else:
                self._last_preview = now
        if callable(preview):  # a preview may be passed lazily: made only when shown
            preview = preview()
        self._bus.emit(Progress(self.run_id, self.node_id, step, total, preview))

    def resolve_path(self, value: str) -> Path | None:
        """A file named in a param: absolute, or relative to the workflow's folder or cwd."""
        return self._resolve(value)
