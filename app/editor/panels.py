"""The dockable panels around the canvas: node library, run panel, problems, output gallery
and the full-size image viewer."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import theme


class Library(QWidget):
    """Every node type by category, filtered by a search field; double click adds one."""

    add_node = Signal(str)

    def __init__(self, registry):
        super().__init__()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter nodes…")
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        lay.addWidget(self.filter)
        lay.addWidget(self.tree)
        self.registry = registry
        self.filter.textChanged.connect(self.refill)
        self.tree.itemDoubleClicked.connect(self._activate)
        self.refill("")

    def refill(self, text: str) -> None:
        self.tree.clear()
        words = text.lower().split()
        cats: dict[str, QTreeWidgetItem] = {}
        for cls in sorted(self.registry, key=lambda c: (c.category, c.title)):
            hay = f"{cls.title} {cls.category} {cls.type}".lower()
            if not all(w in hay for w in words):
                continue
            cat = cats.get(cls.category)
            if cat is None:
                cat = cats[cls.category] = QTreeWidgetItem([cls.category])
                self.tree.addTopLevelItem(cat)
            item = QTreeWidgetItem([cls.title])
            item.setData(0, Qt.ItemDataRole.UserRole, cls.type)
            item.setToolTip(0, cls.description)
            item.setData(0, Qt.ItemDataRole.DecorationRole, self.colour_of(cls))
            cat.addChild(item)
        if words:
            self.tree.expandAll()

    def colour_of(self, cls) -> QColor:
        """The swatch beside a node: the colour of what it makes (its first output)."""
        if cls.outputs:
            return theme.type_colour(self.registry, cls.outputs[0].type)
        return theme.category_colour(cls.category)

    def _activate(self, item: QTreeWidgetItem) -> None:
        t = item.data(0, Qt.ItemDataRole.UserRole)
        if t:
            self.add_node.emit(t)


class RunPanel(QWidget):
    run_clicked = Signal()
    stop_clicked = Signal()

    def __init__(self):
        super().__init__()
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.run_button = QPushButton("▶  Run")
        self.run_button.setToolTip("Run the workflow (Ctrl+Enter)")
        self.stop_button = QPushButton("■  Stop")
        self.stop_button.setToolTip("Stop the current run (Esc)")
        self.stop_button.setEnabled(False)
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        lay.addLayout(row)
        self.status = QLabel("Ready")
        self.total = QProgressBar()
        self.total.setFormat("run: %v / %m nodes")
        self.node = QProgressBar()
        self.node.setFormat("node: %p%")
        self.elapsed = QLabel("")
        self.queue = QListWidget()
        self.queue.setMaximumHeight(90)
        lay.addWidget(self.status)
        lay.addWidget(self.total)
        lay.addWidget(self.node)
        lay.addWidget(self.elapsed)
        lay.addWidget(QLabel("Queued runs"))
        lay.addWidget(self.queue)
        lay.addStretch(1)
        self.run_button.clicked.connect(self.run_clicked)
        self.stop_button.clicked.connect(self.stop_clicked)
        self._t0 = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._tick)

    def started(self, label: str, to_run: int) -> None:
        self._t0 = time.perf_counter()
        self.status.setText(f"Running {label}")
        self.total.setRange(0, max(1, to_run))
        self.total.setValue(0)
        self.node.setValue(0)
        self.stop_button.setEnabled(True)
        self._timer.start()

    def follow_run(self, run) -> None:
        """Show a RunView's counts: nodes computed of those planned, the node's steps."""
        run.plan_started.connect(lambda n: self.total.setRange(0, max(1, n)))
        run.computed.connect(self.total.setValue)
        run.node_progress.connect(self.node.setValue)

    def _tick(self) -> None:
        self.elapsed.setText(f"{time.perf_counter() - self._t0:.1f} s")

    def finished(self, status: str, seconds: float) -> None:
        self._timer.stop()
        self.elapsed.setText(f"{seconds:.2f} s")
        self.status.setText({"ok": "Finished", "cancelled": "Stopped", "failed": "Failed",
                             "invalid": "Not run: the graph has problems"}.get(status, status))
        self.stop_button.setEnabled(False)
        if status == "ok":
            self.total.setValue(self.total.maximum())
            self.node.setValue(100)


class Problems(QListWidget):
    """Validation and run errors; clicking one selects its node."""

    node_clicked = Signal(str)

    def __init__(self):
        super().__init__()
        self.itemClicked.connect(self._clicked)

    def show_problems(self, problems: list[tuple[str | None, str, str]]) -> None:
        """(node id, severity, message) triples."""
        self.clear()
        for node, severity, message in problems:
            item = QListWidgetItem(("⛔ " if severity == "error" else "⚠ ") + message)
            item.setData(Qt.ItemDataRole.UserRole, node)
            item.setForeground(QColor("#e05252" if severity == "error" else "#e8c547"))
            self.addItem(item)

    def _clicked(self, item: QListWidgetItem) -> None:
        node = item.data(Qt.ItemDataRole.UserRole)
        if node:
            self.node_clicked.emit(node)


class Gallery(QListWidget):
    """Thumbnails of what runs produced, newest first; double click opens the viewer."""

    open_image = Signal(object, object)  # QImage, path or None

    def __init__(self):
        super().__init__()
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setIconSize(QSize(96, 96))
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.itemDoubleClicked.connect(self._open)
        self.images: list[tuple[QImage, str | None]] = []

    def add(self, image: QImage, path: str | None, label: str) -> None:
        self.images.insert(0, (image, path))
        item = QListWidgetItem(QIcon(QPixmap.fromImage(image)), label)
        item.setToolTip(path or label)
        item.setData(Qt.ItemDataRole.UserRole, len(self.images) - 1)
        self.insertItem(0, item)

    def image_of(self, item: QListWidgetItem) -> tuple[QImage, str | None]:
        return self.images[len(self.images) - 1 - item.data(Qt.ItemDataRole.UserRole)]

    def _open(self, item: QListWidgetItem) -> None:
        img, path = self.image_of(item)
        selected = [i for i in self.selectedItems() if i is not item]
        other = self.image_of(selected[0])[0] if selected else None
        self.open_image.emit((img, other), path)


class ImageViewer(QWidget):
    """Full-size image with zoom (wheel) and pan (drag); with a second image, a split
    slider compares the two."""

    def __init__(self):
        super().__init__()
        self.setWindowTitle("Loom — image")
        lay = QVBoxLayout(self)
        self.scene = QGraphicsScene()
        self.view = _ZoomView(self.scene)
        lay.addWidget(self.view, 1)
        row = QHBoxLayout()
        self.split = QSlider(Qt.Orientation.Horizontal)
        self.split.setRange(0, 1000)
        self.split.setValue(500)
        self.split.setVisible(False)
        self.split.valueChanged.connect(self._compose)
        self.folder = QPushButton("Open folder")
        self.folder.clicked.connect(self.open_folder)
        self.fit = QPushButton("Fit")
        self.fit.clicked.connect(self.fit_view)
        row.addWidget(self.split, 1)
        row.addWidget(self.fit)
        row.addWidget(self.folder)
        lay.addLayout(row)
        self.item = QGraphicsPixmapItem()
        self.scene.addItem(self.item)
        self.a: QImage | None = None
        self.b: QImage | None = None
        self.path: str | None = None
        self.resize(720, 720)

    def show_image(self, image: QImage, path: str | None = None,
                   compare: QImage | None = None) -> None:
        self.a, self.b, self.path = image, compare, path
        self.split.setVisible(compare is not None)
        self.folder.setEnabled(path is not None)
        self._compose()
        self.fit_view()
        self.show()
        self.raise_()

    def set_preview(self, image: QImage) -> None:
        if self.isVisible() and self.b is None:
            self.a = image
            self._compose()

    def _compose(self) -> None:
        if self.a is None:
            return
        if self.b is None:
            self.item.setPixmap(QPixmap.fromImage(self.a))
            return
        out = QPixmap(self.a.size())
        out.fill(Qt.GlobalColor.black)
        p = QPainter(out)
        x = int(self.a.width() * self.split.value() / 1000)
        p.drawImage(0, 0, self.a)
        b = self.b.scaled(self.a.size())
        p.drawImage(QRectF(x, 0, self.a.width() - x, self.a.height()), b,
                    QRectF(x, 0, self.a.width() - x, self.a.height()))
        p.setPen(QColor("#e8c547"))
        p.drawLine(x, 0, x, self.a.height())
        p.end()
        self.item.setPixmap(out)

    def fit_view(self) -> None:
        self.view.resetTransform()
        self.view.fitInView(self.item, Qt.AspectRatioMode.KeepAspectRatio)

    def open_folder(self) -> None:
        if self.path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.path).parent)))


class _ZoomView(QGraphicsView):
    def __init__(self, scene):
        super().__init__(scene)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#1e1f22"))

    def wheelEvent(self, event) -> None:
        f = 1.0015 ** (event.angleDelta().y() or 0)
        self.scale(f, f)
