"""The inspector: typed widgets for the selected node's values. Every change is an undoable
SetParam; model inputs list what the model folders hold."""

from __future__ import annotations

import random
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.spec import REQUIRED
from engine.types import T

from .document import Document, SetNodeField, SetParam

INT_LIMIT = 2**31 - 1


class Inspector(QScrollArea):
    def __init__(self, doc: Document, list_models=None):
        super().__init__()
        self.doc = doc
        self.list_models = list_models or (lambda kind: [])
        self.node_id: str | None = None
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.fields: dict[str, QWidget] = {}
        self._updating = False
        doc.node_changed.connect(self._changed)
        doc.node_removed.connect(lambda i: self.show_node(None) if i == self.node_id else None)
        doc.reset.connect(lambda: self.show_node(None))
        self.show_node(None)

    def show_node(self, node_id: str | None) -> None:
        self.node_id = node_id
        self.fields = {}
        page = QWidget()
        lay = QVBoxLayout(page)
        if node_id is None or node_id not in self.doc.graph:
            hint = QLabel("Select a node to edit its values.")
            hint.setStyleSheet("color: #9aa0a6")
            lay.addWidget(hint)
            lay.addStretch(1)
            self.setWidget(page)
            return
        node = self.doc.graph.node(node_id)
        cls = self.doc.registry.get(node.type)
        title = QLineEdit(self.doc.title_of(node_id))
        title.editingFinished.connect(lambda: self._set_title(title.text()))
        lay.addWidget(title)
        if cls is None:
            lay.addWidget(QLabel(f"Unknown node type “{node.type}”.\nIts values and links are "
                                 "kept and saved back unchanged."))
            lay.addStretch(1)
            self.setWidget(page)
            return
        if cls.description:
            d = QLabel(cls.description)
            d.setWordWrap(True)
            d.setStyleSheet("color: #9aa0a6")
            lay.addWidget(d)
        form = QFormLayout()
        lay.addLayout(form)
        for spec in cls.inputs:
            if not spec.is_widget or spec.ui_only and spec.name != "control_after_run":
                continue
            linked = (node_id, spec.name) in self.doc.graph.links
            value = node.params.get(spec.name, spec.default)
            self._value_widget = None
            w = self._widget(spec, value)
            w.setEnabled(not linked)
            if linked:
                w.setToolTip("set by the wire into this input")
            elif spec.description:
                w.setToolTip(spec.description)
            self.fields[spec.name] = self._value_widget or w  # the one holding the value
            form.addRow(spec.name.replace("_", " "), w)
        lay.addStretch(1)
        self.setWidget(page)

    def _changed(self, node_id: str) -> None:
        if node_id == self.node_id and not self._updating:
            self.show_node(node_id)

    def _set(self, name: str, value: Any) -> None:
        if self.node_id is None:
            return
        node = self.doc.graph.node(self.node_id)
        if node.params.get(name, REQUIRED) == value:
            return
        self._updating = True
        try:
            self.doc.push(SetParam(self.doc, self.node_id, name, value))
        finally:
            self._updating = False

    def _set_title(self, text: str) -> None:
        if self.node_id is not None and text != self.doc.title_of(self.node_id):
            self.doc.push(SetNodeField(self.doc, [self.node_id], "title", text or None,
                                       "Rename node"))

    def _widget(self, spec, value) -> QWidget:
        name = spec.name
        if value is REQUIRED:
            value = None
        if spec.type == T.bool:
            w = QCheckBox()
            w.setChecked(bool(value))
            w.toggled.connect(lambda v: self._set(name, bool(v)))
            return w
        if spec.type in (T.int, T.seed):
            spin = QSpinBox()
            spin.setRange(int(spec.min if spec.min is not None else -INT_LIMIT),
                          int(min(spec.max, INT_LIMIT) if spec.max is not None else INT_LIMIT))
            if spec.step:
                spin.setSingleStep(int(spec.step))
            spin.setValue(int(value or 0))
            spin.valueChanged.connect(lambda v: self._set(name, int(v)))
            if spec.type != T.seed:
                return spin
            dice = QPushButton("Random")
            dice.setToolTip("a new random seed")
            dice.clicked.connect(lambda: spin.setValue(random.randint(0, INT_LIMIT)))
            return self._row(spin, (spin, 1), (dice, 0))
        if spec.type == T.float:
            spin = QDoubleSpinBox()
            spin.setDecimals(3)
            lo = spec.min if spec.min is not None else -1e9
            hi = spec.max if spec.max is not None else 1e9
            spin.setRange(lo, hi)
            spin.setSingleStep(spec.step or (0.05 if hi - lo <= 2 else 0.5))
            spin.setValue(float(value or 0.0))
            spin.valueChanged.connect(lambda v: self._set(name, float(v)))
            if spec.min is None or spec.max is None or hi - lo > 100:
                return spin
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(0, 1000)
            slider.setValue(int(round((float(value or 0) - lo) / (hi - lo) * 1000)))
            slider.valueChanged.connect(lambda s: spin.setValue(lo + (hi - lo) * s / 1000))
            return self._row(spin, (slider, 2), (spin, 1))
        if spec.choices:
            combo = QComboBox()
            combo.addItems(list(spec.choices))
            combo.setCurrentText(str(value))
            combo.currentTextChanged.connect(lambda v: self._set(name, v))
            return combo
        kind = self.doc.registry.model_kinds.get(spec.file) if spec.file else None
        if kind is not None:
            combo = QComboBox()
            combo.setEditable(True)
            kinds = (kind, *(self.doc.registry.model_kinds.get(k, k) for k in kind.with_kinds))
            names = [n for k in kinds for n in self.list_models(k)]
            combo.addItems(names)
            combo.setCurrentText(str(value or ""))
            combo.currentTextChanged.connect(lambda v: self._set(name, v))
            return combo
        if spec.multiline:
            edit = QPlainTextEdit(str(value or ""))
            edit.setMinimumHeight(90)
            edit.textChanged.connect(lambda: self._set(name, edit.toPlainText()))
            return edit
        line = QLineEdit(str(value or ""))
        line.editingFinished.connect(lambda: self._set(name, line.text()))
        if spec.file:
            browse = QPushButton("…")
            browse.setToolTip("choose a file")

            def pick() -> None:
                path, _ = QFileDialog.getOpenFileName(self, f"Choose {name}")
                if path:
                    line.setText(path)
                    self._set(name, path)

            browse.clicked.connect(pick)
            return self._row(line, (line, 1), (browse, 0))
        return line

    def _row(self, value: QWidget, *parts: tuple[QWidget, int]) -> QWidget:
        """Widgets side by side in one form row (with their stretch factors); `value` is
        the one that holds the input's value, and becomes its entry in `fields`."""
        self._value_widget = value
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in parts:
            row.addWidget(widget, stretch)
        return box
