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

from engine import Graph, GraphNode, Link
from engine.graph import Group, Removed


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
        if src[0] not in self.graph or dst[0] not in self.graph:
            return "that node is gone"
        return self.graph.link_problem(src, dst, self.title_of)

    # ---- signals after graph edits: only commands call these ------------------------------
    def _added(self, nodes: list[GraphNode], links: list[Link], replaced: list[Link]) -> None:
        for n in nodes:
            self.node_added.emit(n.id)
        for old in replaced:
            self.link_removed.emit(old)
        for link in links:
            self.link_added.emit(self.graph.links[(link.dst, link.dst_input)])

    def _removed(self, gone: Removed) -> None:
        for link in gone.links:
            self.link_removed.emit(link)
        for n in gone.nodes:
            self.node_removed.emit(n.id)

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
        self.before = copy.deepcopy(self.doc.graph.groups)
        self.replaced = self.doc.graph.add_items(self.nodes, self.links, self.groups)
        self.doc._added(self.nodes, self.links, self.replaced)
        if self.groups:
            self.doc.groups_changed.emit()

    def undo(self) -> None:
        g = self.doc.graph
        self.doc._removed(g.remove_items([n.id for n in self.nodes if n.id in g]))
        for old in self.replaced:
            g.restore_link(old)
            self.doc.link_added.emit(g.links[(old.dst, old.dst_input)])
        if self.groups:
            g.set_groups(self.before)
            self.doc.groups_changed.emit()


class RemoveItems(QUndoCommand):
    """Delete nodes (with every link touching them) and links."""

    def __init__(self, doc: Document, node_ids: list[str], links: list[tuple[str, str]] = (),
                 text: str = "Delete"):
        super().__init__(text)
        self.doc, self.node_ids, self.link_keys = doc, list(node_ids), list(links)

    def redo(self) -> None:
        self.gone = self.doc.graph.remove_items(self.node_ids, self.link_keys)
        self.doc._removed(self.gone)
        ids = set(self.node_ids)
        if any(set(gr.nodes) & ids for gr in self.gone.groups):
            self.doc.groups_changed.emit()

    def undo(self) -> None:
        self.doc.graph.restore(self.gone)
        self.doc._added(self.gone.nodes, self.gone.links, [])
        self.doc.groups_changed.emit()


class Connect(QUndoCommand):
    def __init__(self, doc: Document, src: tuple[str, str], dst: tuple[str, str]):
        super().__init__("Connect")
        self.doc, self.src, self.dst = doc, src, dst
        self.old: Link | None = None

    def redo(self) -> None:
        old = self.doc.graph.links.get(self.dst)
        self.old = copy.deepcopy(old) if old is not None else None
        link = self.doc.graph.connect(self.src, self.dst)
        self.doc._added([], [link], [old] if old is not None else [])

    def undo(self) -> None:
        self.doc.link_removed.emit(self.doc.graph.disconnect(*self.dst))
        if self.old is not None:
            self.doc.graph.restore_link(self.old)
            self.doc._added([], [self.old], [])


class Move(QUndoCommand):
    def __init__(self, doc: Document, moves: dict[str, tuple[tuple[float, float],
                                                              tuple[float, float]]],
                 text: str = "Move"):
        super().__init__(text)
        self.doc, self.moves = doc, dict(moves)

    def _apply(self, which: int) -> None:
        for i, ends in self.moves.items():
            self.doc.graph.move(i, ends[which])
            self.doc.node_moved.emit(i)

    def redo(self) -> None:
        self._apply(1)

    def undo(self) -> None:
        self._apply(0)


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

    def _apply(self, value: Any) -> None:
        if value is _UNSET:
            self.doc.graph.unset_param(self.node_id, self.name)
        else:
            self.doc.graph.set_param(self.node_id, self.name, value)
        self.doc.node_changed.emit(self.node_id)

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)


class SetNodeField(QUndoCommand):
    """Title or mode (active / muted / bypassed) of some nodes."""

    def __init__(self, doc: Document, node_ids: list[str], field: str, value: Any, text: str):
        super().__init__(text)
        self.doc, self.ids, self.field, self.value = doc, list(node_ids), field, value
        self.old = {i: getattr(doc.graph.node(i), field) for i in self.ids}
        self.setter = {"title": doc.graph.set_title, "mode": doc.graph.set_mode}[field]

    def _apply(self, values: dict[str, Any]) -> None:
        for i, v in values.items():
            self.setter(i, v)
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

    def _apply(self, groups: list[Group]) -> None:
        self.doc.graph.set_groups(groups)
        self.doc.groups_changed.emit()

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)


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
        self.doc.link_added.emit(self.doc.graph.set_link_extra(self.key, "reroutes",
                                                               points or None))

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)
