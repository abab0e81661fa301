"""The open workflow: a `Graph`, its file, and the undo stack every edit goes through.

The document is the only thing that changes the graph; it says what changed through
signals, and the canvas, inspector and problems panel redraw from them. Each edit is a
QUndoCommand holding enough to undo it exactly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from engine import Graph, GraphError, GraphNode, Link
from engine.graph import Group


class Document(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    node_changed = Signal(str)  # params, title, mode
    node_moved = Signal(str)
    link_added = Signal(object)  # Link
    link_removed = Signal(object)  # Link
    groups_changed = Signal()
    reset = Signal()  # a different graph: rebuild everything
    edited = Signal()  # after any change (debounced consumers: plan markers, validation)

    def __init__(self, registry, graph: Graph | None = None, path: Path | None = None):
        super().__init__()
        self.registry = registry
        self.graph = graph if graph is not None else Graph(registry)
        self.path = path
        self.undo = QUndoStack(self)
        self.undo.indexChanged.connect(self._index_changed)

    def _index_changed(self, _index: int) -> None:
        self.edited.emit()

    @property
    def dirty(self) -> bool:
        return not self.undo.isClean()

    def replace(self, graph: Graph, path: Path | None) -> None:
        self.graph, self.path = graph, path
        self.undo.clear()
        self.undo.setClean()
        self.reset.emit()
        self.edited.emit()

    def push(self, cmd: QUndoCommand) -> None:
        """Run an edit through the undo stack (callers check links first: `check_link`)."""
        self.undo.push(cmd)

    def check_link(self, src: tuple[str, str], dst: tuple[str, str]) -> str | None:
        """Why `src` may not feed `dst` (incompatible types, a cycle), or None if it may."""
        from engine.types import can_connect

        g = self.graph
        if src[0] not in g or dst[0] not in g:
            return "that node is gone"
        a, b = self.registry.get(g.node(src[0]).type), self.registry.get(g.node(dst[0]).type)
        if a is not None and b is not None:
            out, inp = a.output_map.get(src[1]), b.input_map.get(dst[1])
            if out is None or inp is None:
                return "no such port"
            if not can_connect(out.type, inp.type):
                return (f"cannot connect {out.type.value} output {self.title_of(src[0])}."
                        f"{src[1]} to {inp.type.value} input {self.title_of(dst[0])}.{dst[1]}")
        if src[0] == dst[0] or src[0] in g.downstream(dst[0]):
            return (f"connecting {self.title_of(src[0])} to {self.title_of(dst[0])} would make "
                    "a cycle")
        return None

    # ---- primitive changes: only commands call these --------------------------------------
    def _insert(self, node: GraphNode) -> None:
        self.graph.insert(copy.deepcopy(node))
        self.node_added.emit(node.id)

    def _remove(self, node_id: str) -> None:
        for link in [l for l in self.graph.links.values() if node_id in (l.src, l.dst)]:
            self._unlink(link.dst, link.dst_input)
        self.graph.remove(node_id)
        self.node_removed.emit(node_id)

    def _link(self, link: Link, checked: bool = True) -> None:
        key = (link.dst, link.dst_input)
        old = self.graph.links.get(key)
        if checked and self.registry.get(self.graph.node(link.src).type) and \
                self.registry.get(self.graph.node(link.dst).type):
            new = self.graph.connect((link.src, link.src_output), key)
            new.extra = dict(link.extra)
        else:  # placeholders, and undo: keep the link as it was written
            self.graph.links[key] = copy.deepcopy(link)
            self.graph.revision += 1
        if old is not None:
            self.link_removed.emit(old)
        self.link_added.emit(self.graph.links[key])

    def _unlink(self, dst: str, dst_input: str) -> Link:
        link = self.graph.disconnect(dst, dst_input)
        self.link_removed.emit(link)
        return link

    def _set_param(self, node_id: str, name: str, value: Any) -> None:
        if value is _UNSET:
            self.graph.node(node_id).params.pop(name, None)
            self.graph.revision += 1
        else:
            self.graph.set_param(node_id, name, value)
        self.node_changed.emit(node_id)

    def _move(self, node_id: str, pos: tuple[float, float]) -> None:
        self.graph.node(node_id).pos = (float(pos[0]), float(pos[1]))
        self.node_moved.emit(node_id)

    def title_of(self, node_id: str) -> str:
        node = self.graph.node(node_id)
        cls = self.registry.get(node.type)
        return node.title or (cls.title if cls else node.type)


_UNSET = object()


class AddItems(QUndoCommand):
    """Add nodes (and links among or into them): add, paste, duplicate, drop."""

    def __init__(self, doc: Document, nodes: list[GraphNode], links: list[Link] = (),
                 text: str = "Add node", groups: list[Group] = ()):
        super().__init__(text)
        self.doc, self.nodes, self.links = doc, list(nodes), list(links)
        self.groups = list(groups)
        self.replaced: list[Link] = []

    def redo(self) -> None:
        for n in self.nodes:
            self.doc._insert(n)
        self.replaced = []
        try:
            for link in self.links:
                old = self.doc.graph.links.get((link.dst, link.dst_input))
                if old is not None:
                    self.replaced.append(copy.deepcopy(old))
                self.doc._link(link)
        except GraphError:
            self.undo()
            raise
        for g in self.groups:
            self.doc.graph.groups.append(copy.deepcopy(g))
        if self.groups:
            self.doc.groups_changed.emit()

    def undo(self) -> None:
        for g in self.groups:
            for i, have in enumerate(self.doc.graph.groups):
                if have.title == g.title and have.nodes == g.nodes:
                    del self.doc.graph.groups[i]
                    break
        if self.groups:
            self.doc.groups_changed.emit()
        for n in reversed(self.nodes):
            if n.id in self.doc.graph:
                self.doc._remove(n.id)
        for link in self.replaced:
            self.doc._link(link, checked=False)


class RemoveItems(QUndoCommand):
    """Delete nodes (with every link touching them) and links."""

    def __init__(self, doc: Document, node_ids: list[str], links: list[tuple[str, str]] = (),
                 text: str = "Delete"):
        super().__init__(text)
        self.doc, self.node_ids, self.link_keys = doc, list(node_ids), list(links)

    def redo(self) -> None:
        g = self.doc.graph
        ids = set(self.node_ids)
        self.nodes = [copy.deepcopy(g.node(i)) for i in self.node_ids]
        self.links = [copy.deepcopy(l) for k, l in g.links.items()
                      if l.src in ids or l.dst in ids or k in self.link_keys]
        self.groups = copy.deepcopy(g.groups)
        self.order = (list(g.nodes), list(g.links))
        for link in self.links:
            if (link.dst, link.dst_input) in g.links:
                self.doc._unlink(link.dst, link.dst_input)
        for i in self.node_ids:
            self.doc._remove(i)
        if any(set(gr.nodes) & ids for gr in self.groups):
            self.doc.groups_changed.emit()

    def undo(self) -> None:
        for n in self.nodes:
            self.doc._insert(n)
        for link in self.links:
            self.doc._link(link, checked=False)
        g = self.doc.graph  # the file keeps its order: undo puts things back where they were
        nodes, links = self.order
        g.nodes = {k: g.nodes[k] for k in nodes + [k for k in g.nodes if k not in nodes]
                   if k in g.nodes}
        g.links = {k: g.links[k] for k in links + [k for k in g.links if k not in links]
                   if k in g.links}
        g.groups = copy.deepcopy(self.groups)
        self.doc.groups_changed.emit()


class Connect(QUndoCommand):
    def __init__(self, doc: Document, src: tuple[str, str], dst: tuple[str, str]):
        super().__init__("Connect")
        self.doc, self.src, self.dst = doc, src, dst
        self.old: Link | None = None

    def redo(self) -> None:
        old = self.doc.graph.links.get(self.dst)
        self.old = copy.deepcopy(old) if old is not None else None
        self.doc._link(Link(self.src[0], self.src[1], self.dst[0], self.dst[1]))

    def undo(self) -> None:
        self.doc._unlink(*self.dst)
        if self.old is not None:
            self.doc._link(self.old, checked=False)


class Move(QUndoCommand):
    def __init__(self, doc: Document, moves: dict[str, tuple[tuple[float, float],
                                                              tuple[float, float]]],
                 text: str = "Move"):
        super().__init__(text)
        self.doc, self.moves = doc, dict(moves)

    def redo(self) -> None:
        for i, (_old, new) in self.moves.items():
            self.doc._move(i, new)

    def undo(self) -> None:
        for i, (old, _new) in self.moves.items():
            self.doc._move(i, old)


class SetParam(QUndoCommand):
    """One widget value; typing into the same field merges into one step."""

    ID = 1001

    def __init__(self, doc: Document, node_id: str, name: str, value: Any):
        super().__init__(f"Set {name}")
        self.doc, self.node_id, self.name, self.new = doc, node_id, name, value
        self.old = copy.deepcopy(doc.graph.node(node_id).params.get(name, _UNSET))

    def id(self) -> int:
        return self.ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetParam) or (other.node_id, other.name) != \
                (self.node_id, self.name) or isinstance(self.new, bool):
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        self.doc._set_param(self.node_id, self.name, self.new)

    def undo(self) -> None:
        self.doc._set_param(self.node_id, self.name, self.old)


class SetNodeField(QUndoCommand):
    """Title or mode (active / muted / bypassed) of some nodes."""

    def __init__(self, doc: Document, node_ids: list[str], field: str, value: Any, text: str):
        super().__init__(text)
        self.doc, self.ids, self.field, self.value = doc, list(node_ids), field, value
        self.old = {i: getattr(doc.graph.node(i), field) for i in self.ids}

    def _apply(self, values: dict[str, Any]) -> None:
        for i, v in values.items():
            setattr(self.doc.graph.node(i), self.field, v)
            self.doc.graph.revision += 1
            self.doc.node_changed.emit(i)

    def redo(self) -> None:
        self._apply(dict.fromkeys(self.ids, self.value))

    def undo(self) -> None:
        self._apply(self.old)


class SetGroups(QUndoCommand):
    """Replace the list of frames (add, remove, rename, recolour a frame)."""

    def __init__(self, doc: Document, groups: list[Group], text: str):
        super().__init__(text)
        self.doc = doc
        self.old, self.new = copy.deepcopy(doc.graph.groups), copy.deepcopy(groups)

    def redo(self) -> None:
        self.doc.graph.groups = copy.deepcopy(self.new)
        self.doc.groups_changed.emit()

    def undo(self) -> None:
        self.doc.graph.groups = copy.deepcopy(self.old)
        self.doc.groups_changed.emit()


class SetReroutes(QUndoCommand):
    """The reroute dots of one wire: points its curve passes through, kept in the link's
    `reroutes` field of the file."""

    def __init__(self, doc: Document, key: tuple[str, str], points: list[list[float]],
                 text: str = "Reroute wire"):
        super().__init__(text)
        self.doc, self.key = doc, key
        self.old = copy.deepcopy(doc.graph.links[key].extra.get("reroutes"))
        self.new = [list(map(float, p)) for p in points]

    def _apply(self, points) -> None:
        link = self.doc.graph.links[self.key]
        if points:
            link.extra["reroutes"] = copy.deepcopy(points)
        else:
            link.extra.pop("reroutes", None)
        self.doc.graph.revision += 1
        self.doc.link_added.emit(link)

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)
