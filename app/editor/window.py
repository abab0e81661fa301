"""The editor's main window: canvas, docks and editing; menus (menus.py), files and
autosave (files.py) and runs (running.py, runview.py) are mixed in."""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDockWidget,
    QMainWindow,
)

from engine import GraphNode, Link, WorkflowError
from engine import workflow as wf
from engine.graph import Group

from . import theme
from .document import AddItems, Document, Move, RemoveItems, SetGroups, SetNodeField
from .files import FileActions
from .inspector import Inspector
from .menus import MenuActions
from .panels import Gallery, ImageViewer, Library, Problems, RunPanel
from .runner import Runner
from .running import RunActions
from .runview import RunView
from .scene import GraphScene, WireItem
from .search import NodeSearch, matching_port


class MainWindow(FileActions, MenuActions, RunActions, QMainWindow):
    MAX_RECENT = 10

    def __init__(self, registry, settings: QSettings | None = None, make_executor=None,
                 output_dir: Path | None = None):
        super().__init__()
        self.registry = registry
        self.settings = settings or QSettings("Loom", "Loom")
        self.import_report = None  # what a ComfyUI import could not carry, while it is open
        self.doc = Document(registry)
        self.scene = GraphScene(self.doc)
        from .view import GraphView

        self.view = GraphView(self.scene)
        self.setCentralWidget(self.view)
        self.setStyleSheet(theme.STYLE_SHEET)
        self.search = NodeSearch(registry, self)
        self._search_at = QPointF()
        self._search_port = None
        self.view.search_requested.connect(self.open_search)
        self.view.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.search.chosen.connect(self._add_from_search)

        self._make_executor = make_executor or self._default_executor
        self._executor = None
        self.runner = Runner(self.executor, output_dir or Path.cwd() / "output")
        self.run_state = RunView(self.doc)

        self.library = Library(registry)
        self.library.add_node.connect(lambda t: self.add_node(t, self.view.mapToScene(
            self.view.viewport().rect().center())))
        self.inspector = Inspector(self.doc, self.list_models)
        self.run_panel = RunPanel()
        self.run_panel.run_clicked.connect(self.run)
        self.run_panel.stop_clicked.connect(self.stop)
        self.problems = Problems()
        self.problems.node_clicked.connect(self.select_node)
        self.gallery = Gallery()
        self.viewer = ImageViewer()
        self.gallery.open_image.connect(
            lambda pair, path: self.viewer.show_image(pair[0], path, pair[1]))
        self.docks = {}
        for name, title, widget, area in (
                ("library", "Nodes", self.library, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("inspector", "Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea),
                ("run", "Run", self.run_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                ("gallery", "Outputs", self.gallery, Qt.DockWidgetArea.BottomDockWidgetArea),
                ("problems", "Problems", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{name}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        self.tabifyDockWidget(self.docks["gallery"], self.docks["problems"])
        self.docks["gallery"].raise_()
        self.resizeDocks([self.docks["gallery"]], [150], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["library"], self.docks["inspector"]], [210, 320],
                         Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["inspector"], self.docks["run"]], [480, 230],
                         Qt.Orientation.Vertical)

        self.scene.selectionChanged.connect(self._selection_changed)
        self.doc.undo.cleanChanged.connect(lambda _c: self.update_title())
        self.doc.edited.connect(self._schedule_plan)
        self._plan_timer = QTimer(self)
        self._plan_timer.setSingleShot(True)
        self._plan_timer.setInterval(200)
        self._plan_timer.timeout.connect(self.refresh_markers)
        self._autosave = QTimer(self)
        self._autosave.setInterval(60_000)
        self._autosave.timeout.connect(self.autosave)
        self._autosave.start()
        self._follow_runs()
        self.setAcceptDrops(True)
        self._build_menus()
        self.resize(1400, 860)
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        state = self.settings.value("windowState")
        if state is not None:
            self.restoreState(state)
        self.update_title()

    # ---- engine access ---------------------------------------------------------------------
    def _default_executor(self):
        """Made on the worker thread at the first run (so torch loads there)."""
        from engine import Cache, Executor, MemoryCache
        from engine.runtime.models import ModelManager

        device = self.settings.value("device") or "auto"
        choice = None
        if device != "auto":
            from engine.runtime.device import choose

            choice = choose(device)
        budget = int(float(self.settings.value("cache_gb") or 4.0) * (1 << 30))
        return Executor(cache=Cache(MemoryCache(budget)),
                        models=ModelManager(device=choice, paths=self.model_folders()))

    def model_folders(self):
        from app.paths import RESOURCES
        from engine.modelpaths import ModelFolders

        bundled = RESOURCES / "models"
        extra = [p for p in (self.settings.value("model_folders") or []) if p]
        return ModelFolders(list(extra), bundled=bundled if bundled.is_dir() else None,
                            kinds=self.registry.model_kinds)

    def executor(self):
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def list_models(self, kind: str) -> list[str]:
        try:
            return [e.name for e in self.model_folders().list(kind)]
        except Exception:
            return []

    def closeEvent(self, event) -> None:
        if not self.confirm_discard():
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        if self.doc.path is not None:
            self.settings.setValue("last", str(self.doc.path))
        self.recovery_file().unlink(missing_ok=True)
        self.runner.shutdown()
        self.viewer.close()
        event.accept()

    # ---- editing ---------------------------------------------------------------------------
    def open_search(self, scene_pos: QPointF, port=None) -> None:
        self._search_at, self._search_port = scene_pos, port
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(scene_pos))
        self.search.open_at(global_pos, port)

    def _add_from_search(self, type_id: str) -> None:
        port, self._search_port = self._search_port, None
        self.add_node(type_id, self._search_at, port)

    def add_node(self, type_id: str, scene_pos: QPointF, port=None, **params) -> str:
        cls = self.registry.get(type_id)
        node_id = self.doc.graph.new_id(cls.type.split("_")[0] if cls else "n")
        node = GraphNode(node_id, cls.type, cls.version, dict(params), None,
                         (round(scene_pos.x()), round(scene_pos.y())))
        links = []
        if port is not None:
            other = matching_port(cls, port)
            if other is not None:
                links.append(Link(port.node, port.name, node_id, other) if port.output
                             else Link(node_id, other, port.node, port.name))
        self.doc.push(AddItems(self.doc, [node], links, f"Add {cls.title}"))
        self.select_node(node_id, center=False)
        return node_id

    def selected(self) -> list[str]:
        return self.scene.selected_node_ids()

    def select_node(self, node_id: str, center: bool = True) -> None:
        item = self.scene.nodes.get(node_id)
        if item is None:
            return
        self.scene.clearSelection()
        item.setSelected(True)
        if center:
            self.view.centerOn(item)

    def select_all(self) -> None:
        for item in self.scene.nodes.values():
            item.setSelected(True)

    def delete_selected(self) -> None:
        ids = self.selected()
        wires = [(w.link.dst, w.link.dst_input) for w in self.scene.selectedItems()
                 if isinstance(w, WireItem) and w.link.src not in ids and w.link.dst not in ids]
        if ids or wires:
            self.doc.push(RemoveItems(self.doc, ids, wires, "Delete"))

    def selection_json(self) -> str | None:
        ids = self.selected()
        return wf.dumps(self.doc.graph.subgraph(ids)) if ids else None

    def copy(self) -> None:
        text = self.selection_json()
        if text is not None:
            QGuiApplication.clipboard().setText(text)

    def cut(self) -> None:
        self.copy()
        self.delete_selected()

    def paste(self, text: str | None = None, at: QPointF | None = None) -> list[str]:
        text = text if text is not None else QGuiApplication.clipboard().text()
        try:
            sub = wf.loads(text, file="clipboard", registry=self.registry)
        except (WorkflowError, ValueError):
            self.statusBar().showMessage("The clipboard holds no Loom nodes", 4000)
            return []
        if not len(sub):
            return []
        if at is None:
            cursor = self.view.mapFromGlobal(self.view.cursor().pos())
            inside = self.view.viewport().rect().contains(cursor)
            at = self.view.mapToScene(cursor) if inside else None
        xs = [n.pos[0] for n in sub]
        ys = [n.pos[1] for n in sub]
        dx, dy = (at.x() - min(xs), at.y() - min(ys)) if at is not None else (40, 40)
        added = self.doc.graph.pasteable(sub, (dx, dy))
        nodes = list(added)
        self.doc.push(AddItems(self.doc, nodes, list(added.links.values()), "Paste",
                               added.groups))
        self.scene.clearSelection()
        for n in nodes:
            self.scene.nodes[n.id].setSelected(True)
        return [n.id for n in nodes]

    def duplicate(self) -> None:
        text = self.selection_json()
        if text is not None:
            self.paste(text)

    def toggle_mode(self, mode: str) -> None:
        ids = self.selected()
        if not ids:
            return
        everyone = all(self.doc.graph.node(i).mode == mode for i in ids)
        target = "active" if everyone else mode
        self.doc.push(SetNodeField(self.doc, ids, "mode", target,
                                   {"bypassed": "Bypass", "muted": "Mute",
                                    "active": "Activate"}[target]))

    def align(self, edge: str) -> None:
        ids = self.selected()
        if len(ids) < 2:
            return
        nodes = [self.doc.graph.node(i) for i in ids]
        k = 0 if edge == "left" else 1
        line = min(n.pos[k] for n in nodes)
        moves = {}
        for n in nodes:
            new = (line, n.pos[1]) if k == 0 else (n.pos[0], line)
            if new != tuple(n.pos):
                moves[n.id] = (tuple(n.pos), new)
        if moves:
            self.doc.push(Move(self.doc, moves, f"Align {edge}"))

    def group_selected(self, title: str = "Frame") -> None:
        ids = self.selected()
        if not ids:
            return
        groups = [Group(g.title, [n for n in g.nodes if n not in ids], g.color, g.extra)
                  for g in self.doc.graph.groups]
        groups = [g for g in groups if g.nodes]
        colour = random.Random(len(groups)).choice(["#3f6b8f", "#6b8f3f", "#8f6b3f",
                                                    "#6b3f8f", "#3f8f7c"])
        groups.append(Group(title, ids, colour))
        self.doc.push(SetGroups(self.doc, groups, "Frame selection"))

    def ungroup_selected(self) -> None:
        ids = set(self.selected())
        groups = [g for g in self.doc.graph.groups if not set(g.nodes) & ids]
        if len(groups) != len(self.doc.graph.groups):
            self.doc.push(SetGroups(self.doc, groups, "Remove frame"))

    def frame_selected(self) -> None:
        ids = self.selected()
        self.view.frame_rect(self.scene.items_bounds(ids or None))

    def fit_all(self) -> None:
        self.view.frame_rect(self.scene.items_bounds())

    def _selection_changed(self) -> None:
        try:
            ids = self.selected()
        except RuntimeError:  # the scene is being torn down with the window
            return
        self.inspector.show_node(ids[0] if len(ids) == 1 else None)

    # ---- settings --------------------------------------------------------------------------
    def open_settings(self) -> None:
        from .settings import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        if dlg.exec():
            self._executor = None  # new folders or device: a fresh executor for the next run
            self.runner.worker._make = self.executor
            self.runner.worker.executor = None  # the next run makes a new one

