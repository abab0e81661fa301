"""Runs workflows off the GUI thread. A run executes a snapshot of the graph on a worker
thread; engine events come back through a queue that the GUI thread drains once a frame and
re-emits as signals (images already turned into QImages on the worker), so the GUI thread
only paints. Runs queue up; Stop cancels the current one within one sampler step."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from engine import CancelToken, Graph
from engine.events import Event, NodeFinished, Progress, RunStatus

THUMB_SIZE = 192


def _is_image(v: Any) -> bool:
    return hasattr(v, "shape") and len(v.shape) == 4 and v.shape[1] in (3, 4)


def to_qimages(images: Any, limit: int = 8, size: int | None = None) -> list[QImage]:
    """IMAGE tensors (B, 3, H, W) in [0, 1] -> QImages (copied, safe to send across threads);
    `size` shrinks them first (thumbnails)."""
    if images is None or not hasattr(images, "shape") or len(images.shape) != 4:
        return []
    out = []
    for i in range(min(images.shape[0], limit)):
        img = images[i: i + 1, :3].detach().float()
        if size is not None and max(img.shape[-2:]) > size:
            import torch.nn.functional as F

            s = size / max(img.shape[-2:])
            img = F.interpolate(img, scale_factor=s, mode="area")
        arr = (img[0].clamp(0, 1) * 255).round().byte()
        arr = arr.permute(1, 2, 0).contiguous().cpu().numpy()
        h, w = arr.shape[:2]
        out.append(QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())
    return out


@dataclass
class RunEvent:
    """An engine event as the GUI thread gets it: the dataclass itself, tensors dropped,
    with the images the worker made from them (QImages, safe to hand across threads)."""

    event: Event
    preview: QImage | None = None  # Progress: the sampler's live preview
    images: list[QImage] = field(default_factory=list)  # NodeFinished: what it shows or saved
    files: list[str] = field(default_factory=list)  # NodeFinished: the files it wrote
    thumbnail: QImage | None = None  # NodeFinished: the first image output, small

    @property
    def node(self) -> str:
        return getattr(self.event, "node", "")


def prepare(ev: Event) -> RunEvent:
    """Turn an event's tensors into QImages (on the worker thread)."""
    if isinstance(ev, Progress):
        p = ev.preview
        preview = None if p is None else \
            (to_qimages(p[None] if getattr(p, "ndim", 0) == 3 else p, 1) or [None])[0]
        return RunEvent(replace(ev, preview=None), preview=preview)
    if isinstance(ev, NodeFinished):
        ui = ev.ui if isinstance(ev.ui, dict) else {}
        outs = ev.outputs if isinstance(ev.outputs, dict) else {}
        shown = (outs.get("ui") or {}).get("images") if isinstance(outs.get("ui"), dict) \
            else None
        files = list(ui.get("files") or [])
        out = RunEvent(replace(ev, outputs=None), images=to_qimages(shown)
                       or [QImage(f) for f in files[:8]], files=files)
        if not out.images:  # any node that makes an image shows it, small
            first = next((v for k, v in outs.items() if k != "ui" and _is_image(v)), None)
            out.thumbnail = (to_qimages(first, 1, THUMB_SIZE) or [None])[0] \
                if first is not None else None
        return out
    return RunEvent(ev)


@dataclass
class Job:
    graph: Graph
    label: str
    id: int
    token: CancelToken = field(default_factory=CancelToken)


class _Worker:
    """Executes jobs on a plain Python thread. Nothing Qt crosses threads: events go into a
    queue that the GUI thread drains on a timer (PySide6 6.8+ can crash when Python objects
    ride on signals emitted from a non-Qt-created thread, PYSIDE-3124)."""

    def __init__(self, make_executor, outbox: queue.Queue):
        self._make = make_executor
        self.executor = None
        self.outbox = outbox
        self.inbox: queue.Queue = queue.Queue()
        self._job: Job | None = None
        self.thread = threading.Thread(target=self._loop, name="loom-run", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            self.execute(*item)

    def _forward(self, ev: Event) -> None:
        job = self._job
        if job is not None:
            self.outbox.put(("event", job.id, prepare(ev)))

    def execute(self, job: Job, output_dir: Path) -> None:
        from engine import InvalidGraph

        t = time.perf_counter()
        try:
            if self.executor is None:
                self.executor = self._make()
                self.executor.events.subscribe(self._forward)
            self._job = job
            result = self.executor.run(job.graph, cancel=job.token, output_dir=output_dir)
            status, problems = result.status, None
        except InvalidGraph as exc:
            status, problems = RunStatus.INVALID, exc.problems
        except Exception as exc:  # the editor must survive anything a run throws
            status, problems = RunStatus.FAILED, [str(exc)]
        self._job = None
        self.outbox.put(("done", job.id, status, time.perf_counter() - t, problems))


class Runner(QObject):
    """The queue of runs and the worker thread that executes them."""

    event = Signal(object)  # RunEvent (only for the current job)
    started = Signal(int, str)
    finished = Signal(int, str, float, object)
    queue_changed = Signal(int)

    def __init__(self, make_executor, output_dir: Path):
        super().__init__()
        self.output_dir = output_dir
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self._next_id = 1
        self.outbox: queue.Queue = queue.Queue()
        self.worker = _Worker(make_executor, self.outbox)
        self._poll = QTimer(self)
        self._poll.setInterval(16)  # a frame: events reach the screen as fast as it repaints
        self._poll.timeout.connect(self.drain)
        self._poll.start()

    @property
    def executor(self):
        return self.worker.executor

    @property
    def busy(self) -> bool:
        return self.current is not None

    def submit(self, graph: Graph, label: str) -> Job:
        job = Job(graph.copy(), label, self._next_id)
        self._next_id += 1
        self.queue.append(job)
        self.queue_changed.emit(len(self.queue))
        self._pump()
        return job

    def stop(self) -> None:
        """Cancel the running job (queued ones stay queued)."""
        if self.current is not None:
            self.current.token.cancel()

    def clear_queue(self) -> None:
        self.queue.clear()
        self.queue_changed.emit(0)

    def _pump(self) -> None:
        if self.current is None and self.queue:
            self.current = self.queue.popleft()
            self.queue_changed.emit(len(self.queue))
            self.started.emit(self.current.id, self.current.label)
            self.worker.inbox.put((self.current, self.output_dir))

    def drain(self) -> None:
        """Deliver what the worker reported since the last call (on the GUI thread). Of a
        node's progress events without a preview, only the newest is delivered."""
        items = []
        while True:
            try:
                items.append(self.outbox.get_nowait())
            except queue.Empty:
                break
        def bare_progress(item) -> bool:
            return item[0] == "event" and isinstance(item[2].event, Progress) \
                and item[2].preview is None

        newest = {item[2].node: i for i, item in enumerate(items) if bare_progress(item)}
        for i, item in enumerate(items):
            if item[0] == "event":
                if not bare_progress(item) or newest[item[2].node] == i:
                    self._on_event(*item[1:])
            else:
                self._on_done(*item[1:])

    def _on_event(self, job_id: int, ev: RunEvent) -> None:
        if self.current is not None and job_id == self.current.id:
            self.event.emit(ev)

    def _on_done(self, job_id: int, status: str, seconds: float, problems) -> None:
        self.current = None
        self.finished.emit(job_id, status, seconds, problems)
        self._pump()

    def shutdown(self) -> None:
        self.queue.clear()
        self.stop()
        self._poll.stop()
        self.worker.inbox.put(None)
        self.worker.thread.join(10)
