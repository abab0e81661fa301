"""The node search: type part of a name or category, Enter adds the node. Opened by Tab or a
double click on the canvas, or by dropping a wire on empty canvas, in which case it lists
only nodes with a port the wire can plug into."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout

from engine.types import can_connect


def matching_port(cls, port) -> str | None:
    """The name of the first port of node class `cls` a dragged `port` may connect to."""
    if port is None:
        return None
    if port.output:
        for i in cls.inputs:
            if not i.ui_only and (not port.type or can_connect(port.type, i.type)):
                return i.name
        return None
    for o in cls.outputs:
        if not port.type or can_connect(o.type, port.type):
            return o.name
    return None


def score(query: str, title: str, category: str, type_id: str) -> int | None:
    """Lower is better; None if no match. Words of the query must all appear."""
    q = query.lower().split()
    hay = f"{title} {category} {type_id}".lower()
    if not all(w in hay for w in q):
        return None
    t = title.lower()
    if q and t.startswith(q[0]):
        return 0
    if q and any(word.startswith(q[0]) for word in t.split()):
        return 1
    return 2


class NodeSearch(QFrame):
    chosen = Signal(str)  # node type

    def __init__(self, registry, parent=None):
        super().__init__(parent, Qt.WindowType.Popup)
        self.registry = registry
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumSize(320, 360)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText("Search nodes…")
        self.list = QListWidget(self)
        lay.addWidget(self.edit)
        lay.addWidget(self.list)
        self.port = None
        self.edit.textChanged.connect(self.refill)
        self.edit.returnPressed.connect(self._accept_current)
        self.list.itemActivated.connect(lambda it: self._accept(it))
        self.list.itemClicked.connect(lambda it: self._accept(it))
        self.edit.installEventFilter(self)

    def open_at(self, global_pos, port=None) -> None:
        self.port = port
        self.edit.clear()
        self.refill("")
        self.move(global_pos)
        self.show()
        self.edit.setFocus()

    def candidates(self, query: str) -> list[type]:
        found = []
        for cls in self.registry:
            if self.port is not None and matching_port(cls, self.port) is None:
                continue
            s = score(query, cls.title, cls.category, cls.type)
            if s is not None:
                found.append((s, cls.category, cls.title, cls))
        found.sort(key=lambda t: t[:3])
        return [t[3] for t in found]

    def refill(self, query: str) -> None:
        self.list.clear()
        for cls in self.candidates(query):
            item = QListWidgetItem(f"{cls.title}    ·  {cls.category}")
            item.setData(Qt.ItemDataRole.UserRole, cls.type)
            item.setToolTip(cls.description)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.edit and event.type() == event.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if event.key() == Qt.Key.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
            if event.key() == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)

    def _accept_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self._accept(item)

    def _accept(self, item: QListWidgetItem) -> None:
        type_id = item.data(Qt.ItemDataRole.UserRole)
        self.hide()
        self.chosen.emit(type_id)
