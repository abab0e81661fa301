"""Run state of the open workflow: each node's status, progress, message and thumbnail,
and which nodes the next run would compute. Fed the runner's events (dispatched by
type); the canvas and the panels subscribe to its signals and only draw."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from engine.events import NodeFailed, NodeFinished, NodeStarted, NodeStatus, Progress, RunStarted

from .runner import RunEvent


@dataclass
class NodeRun:
    status: NodeStatus = NodeStatus.NONE
    progress: float = 0.0  # of the running node, 0..1
    message: str = ""  # why it failed
    stale: bool = False  # the next run computes it
    memory: dict | None = None  # its estimated peak ({peak, weights, activations}, bytes)


class RunView(QObject):
    node_changed = Signal(str)  # status, progress, message or stale of one node
    thumbnail = Signal(str, object)  # node, QImage
    plan_started = Signal(int)  # how many nodes this run computes
    node_progress = Signal(int)  # percent of the running node
    computed = Signal(int)  # nodes computed so far in this run
    preview = Signal(object)  # QImage: the newest live preview
    image_made = Signal(object, object, str)  # QImage, file or None, node title
    node_failed = Signal(str, str)  # node, message

    def __init__(self, doc) -> None:
        super().__init__()
        self.doc = doc
        self.nodes: dict[str, NodeRun] = {}
        self.done = 0
        self._handlers = {RunStarted: self._run_started, NodeStarted: self._node_started,
                          Progress: self._progress, NodeFinished: self._node_finished,
                          NodeFailed: self._node_failed}

    def state(self, node_id: str) -> NodeRun:
        return self.nodes.setdefault(node_id, NodeRun())

    def _set(self, node_id: str, **changes) -> None:
        st = self.state(node_id)
        for k, v in changes.items():
            setattr(st, k, v)
        self.node_changed.emit(node_id)

    def clear(self) -> None:
        """A different workflow: nothing has run."""
        for nid in list(self.nodes):
            self._set(nid, status=NodeStatus.NONE, progress=0.0, message="", stale=False)
        self.nodes.clear()

    def on_event(self, rev: RunEvent) -> None:
        handler = self._handlers.get(type(rev.event))
        if handler is None:
            return
        if not isinstance(rev.event, RunStarted) and rev.node not in self.doc.graph:
            return  # deleted while running
        handler(rev.event, rev)

    def finished(self) -> None:
        """The run ended: whatever was still running is not running any more."""
        for nid, st in self.nodes.items():
            if st.status == NodeStatus.RUNNING:
                self._set(nid, status=NodeStatus.NONE)

    def mark_stale(self, will_run: set[str], memory: dict[str, dict] | None = None) -> None:
        """Which nodes the next run computes, and (when known) each one's memory estimate."""
        memory = memory or {}
        for nid in self.doc.graph.nodes:
            st = self.state(nid)
            if (nid in will_run) != st.stale or memory.get(nid) != st.memory:
                self._set(nid, stale=nid in will_run, memory=memory.get(nid))

    def _run_started(self, ev: RunStarted, _rev: RunEvent) -> None:
        runs, cached = set(ev.plan.get("run", [])), set(ev.plan.get("cached", []))
        estimates = ev.memory.get("nodes", {})
        self.done = 0
        self.plan_started.emit(len(runs))
        for nid in self.doc.graph.nodes:
            # a node this run does not need was computed before and is unchanged
            done_before = self.state(nid).status in (NodeStatus.COMPUTED, NodeStatus.CACHED) \
                and nid not in runs
            status = NodeStatus.CACHED if nid in cached or done_before else NodeStatus.NONE
            self._set(nid, status=status, progress=0.0, message="",
                      memory=estimates.get(nid))

    def _node_started(self, ev: NodeStarted, _rev: RunEvent) -> None:
        self._set(ev.node, status=NodeStatus.RUNNING, progress=0.0)
        self.node_progress.emit(0)

    def _progress(self, ev: Progress, rev: RunEvent) -> None:
        total = max(1, ev.total)
        self._set(ev.node, progress=ev.step / total)
        self.node_progress.emit(int(100 * ev.step / total))
        if rev.preview is not None:
            self.thumbnail.emit(ev.node, rev.preview)
            self.preview.emit(rev.preview)

    def _node_finished(self, ev: NodeFinished, rev: RunEvent) -> None:
        self._set(ev.node, status=NodeStatus.CACHED if ev.cached else NodeStatus.COMPUTED,
                  stale=False)
        if not ev.cached:
            self.done += 1
            self.computed.emit(self.done)
        shown: QImage | None = rev.images[0] if rev.images else rev.thumbnail
        if shown is not None:
            self.thumbnail.emit(ev.node, shown)
        if rev.images and not ev.cached:
            title = self.doc.title_of(ev.node)
            for i, img in enumerate(rev.images):
                self.image_made.emit(img, rev.files[i] if i < len(rev.files) else None, title)

    def _node_failed(self, ev: NodeFailed, _rev: RunEvent) -> None:
        message = str(ev.error) if ev.error else "failed"
        self._set(ev.node, status=NodeStatus.FAILED, message=message)
        self.node_failed.emit(ev.node, message)
