"""The editor's main window: canvas, docks, menus, files, runs, autosave."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from PySide6.QtCore import QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
)

from engine import Graph, GraphNode, Link, WorkflowError
from engine import workflow as wf
from engine.graph import Group

from . import theme
from .document import (
    AddItems,
    Document,
    Move,
    RemoveItems,
    SetGroups,
    SetNodeField,
    SetParam,
)
from .inspector import Inspector
from .panels import Gallery, ImageViewer, Library, Problems, RunPanel
from .runner import Runner
from .scene import GraphScene, NodeItem, WireItem
from .search import NodeSearch, matching_port

CLIPBOARD_FORMAT = "loom.workflow"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def data_dir() -> Path:
    from app.paths import data_dir as d

    return d()


class MainWindow(QMainWindow):
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
        self.runner.event.connect(self._on_run_event)
        self.runner.started.connect(self._on_run_started)
        self.runner.finished.connect(self._on_run_finished)
        self.runner.queue_changed.connect(self._on_queue)

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
        self._to_run = 0
        self._done = 0
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
        return ModelFolders(list(extra), bundled=bundled if bundled.is_dir() else None)

    def executor(self):
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def list_models(self, kind: str) -> list[str]:
        try:
            return [e.name for e in self.model_folders().list(kind)]
        except Exception:
            return []

    # ---- menus -----------------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcut=None, name: str | None = None) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(lambda _checked=False: slot())
        menu.addAction(act)
        self.actions_by_name[name or text.replace("&", "").replace("…", "").strip().lower()] = act
        return act

    def _build_menus(self) -> None:
        self.actions_by_name: dict[str, QAction] = {}
        bar = self.menuBar()
        m = bar.addMenu("&File")
        K = QKeySequence.StandardKey
        self._action(m, "&New", self.new_workflow, K.New)
        self._action(m, "&Open…", self.open_dialog, K.Open)
        self.recent_menu = m.addMenu("Open &Recent")
        self._fill_recent()
        self._action(m, "&Save", self.save, K.Save)
        self._action(m, "Save &As…", self.save_as, QKeySequence("Shift+Ctrl+S"), "save as")
        m.addSeparator()
        self._action(m, "Settings…", self.open_settings, None, "settings")
        m.addSeparator()
        self._action(m, "&Quit", self.close, K.Quit)
        m = bar.addMenu("&Edit")
        undo = self.doc.undo.createUndoAction(self, "&Undo")
        undo.setShortcut(K.Undo)
        redo = self.doc.undo.createRedoAction(self, "&Redo")
        redo.setShortcut(K.Redo)
        m.addAction(undo)
        m.addAction(redo)
        self.actions_by_name.update(undo=undo, redo=redo)
        m.addSeparator()
        self._action(m, "Cu&t", self.cut, K.Cut)
        self._action(m, "&Copy", self.copy, K.Copy)
        self._action(m, "&Paste", self.paste, K.Paste)
        self._action(m, "&Duplicate", self.duplicate, QKeySequence("Ctrl+D"))
        self._action(m, "&Delete", self.delete_selected, K.Delete)
        self._action(m, "Select &All", self.select_all, K.SelectAll, "select all")
        m.addSeparator()
        self._action(m, "&Frame Selection", self.group_selected, QKeySequence("Ctrl+G"),
                     "group")
        self._action(m, "Remove Frame", self.ungroup_selected, QKeySequence("Shift+Ctrl+G"),
                     "ungroup")
        self._action(m, "&Bypass", lambda: self.toggle_mode("bypassed"), QKeySequence("Ctrl+B"),
                     "bypass")
        self._action(m, "&Mute", lambda: self.toggle_mode("muted"), QKeySequence("Ctrl+M"),
                     "mute")
        self._action(m, "Align &Left", lambda: self.align("left"), None, "align left")
        self._action(m, "Align &Top", lambda: self.align("top"), None, "align top")
        m = bar.addMenu("&View")
        self._action(m, "Frame &Selected", self.frame_selected, QKeySequence("F"),
                     "frame selected")
        self._action(m, "Fit &All", self.fit_all, QKeySequence("Home"), "fit all")
        self._action(m, "Add Node…", lambda: self.view.search_requested.emit(
            self.view.mapToScene(self.view.viewport().rect().center()), None), None, "add node")
        m.addSeparator()
        for dock in self.docks.values():
            m.addAction(dock.toggleViewAction())
        m = bar.addMenu("&Run")
        self._action(m, "&Run", self.run, QKeySequence("Ctrl+Return"))
        self.stop_action = self._action(m, "&Stop", self.stop, QKeySequence("Escape"))
        self.stop_action.setEnabled(False)
        self._action(m, "Clear &Queue", self.runner.clear_queue, None, "clear queue")

    # ---- title, recent files ---------------------------------------------------------------
    def update_title(self) -> None:
        name = self.doc.path.name if self.doc.path else "Untitled"
        if self.doc.path is None and self.import_report is not None:
            name = f"{Path(self.import_report.file).name} (from ComfyUI)"
        self.setWindowModified(self.doc.dirty)
        self.setWindowTitle(f"{name}[*] — Loom")

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent") or []
        return [value] if isinstance(value, str) else list(value)

    def _remember(self, path: Path) -> None:
        items = [str(path)] + [p for p in self.recent_files() if p != str(path)]
        self.settings.setValue("recent", items[: self.MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, p=p: self.open_path(Path(p)))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    # ---- files -----------------------------------------------------------------------------
    def confirm_discard(self) -> bool:
        """Ask before losing unsaved changes; True to go on."""
        if not self.doc.dirty:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", "Save the changes to this workflow first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def new_workflow(self) -> None:
        if self.confirm_discard():
            self.import_report = None
            self.doc.replace(Graph(self.registry), None)
            self._clear_run_state()
            self.update_title()

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open workflow", "",
                                              "Workflows (*.json *.png);;All files (*)")
        if path:
            self.open_path(Path(path), ask=False)

    def open_path(self, path: Path, ask: bool = True) -> bool:
        """Open a Loom workflow (.json, or a PNG holding one) or a ComfyUI one, converted:
        its report joins the problems panel, and Save asks for a new file name so the
        ComfyUI file is never overwritten."""
        if ask and not self.confirm_discard():
            return False
        try:
            graph, report = self.read_workflow(path)
        except (WorkflowError, OSError, ValueError) as exc:
            QMessageBox.warning(self, "Cannot open", f"{path.name}: {exc}")
            return False
        self.import_report = report
        own = path.suffix.lower() == ".json" and report is None
        self.doc.replace(graph, path if own else None)
        self._clear_run_state()
        if own:
            self._remember(path)
        self.update_title()
        self.fit_all()
        self.refresh_problems()
        if report is not None:
            self.statusBar().showMessage(
                f"Converted from ComfyUI: {report.mapped_count} node(s) mapped, "
                f"{report.placeholder_count} kept as placeholders, "
                f"{len(report.values) + len(report.links) + len(report.models)} issue(s) "
                "listed under Problems", 15000)
            if self.problems.count():
                self.docks["problems"].raise_()  # what did not carry, in view at once
            return True
        unknown = sorted({n.type for n in graph if self.registry.get(n.type) is None})
        if unknown:
            self.statusBar().showMessage("Unknown node types kept as placeholders: "
                                         + ", ".join(unknown), 10000)
        return True

    def read_workflow(self, path: Path):
        """(graph, ComfyUI import report or None) for a workflow file of either kind."""
        from engine.comfyui import open_workflow

        return open_workflow(path, registry=self.registry, models=self.model_folders())

    def save(self) -> bool:
        if self.doc.path is None:
            return self.save_as()
        return self._write(self.doc.path)

    def save_as(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save workflow", "workflow.json",
                                              "Workflows (*.json)")
        if not path:
            return False
        return self._write(Path(path))

    def _write(self, path: Path) -> bool:
        try:
            wf.save(self.doc.graph, path)
        except (WorkflowError, OSError) as exc:
            QMessageBox.warning(self, "Cannot save", f"{path}: {exc}")
            return False
        self.doc.path = path
        self.doc.undo.setClean()
        self._remember(path)
        self.update_title()
        return True

    # ---- autosave and recovery -------------------------------------------------------------
    @staticmethod
    def recovery_file() -> Path:
        return data_dir() / "recovery.json"

    def autosave(self) -> None:
        if not self.doc.dirty:
            return
        from engine.fsutil import atomic_write

        target = self.recovery_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        doc = {"path": str(self.doc.path) if self.doc.path else None,
               "workflow": json.loads(wf.dumps(self.doc.graph))}
        atomic_write(target, json.dumps(doc).encode())

    def offer_recovery(self) -> bool:
        f = self.recovery_file()
        if not f.is_file():
            return False
        try:
            data = json.loads(f.read_text())
            graph = wf.from_dict(data["workflow"], file=str(f), registry=self.registry)
        except Exception:
            f.unlink(missing_ok=True)
            return False
        answer = QMessageBox.question(self, "Restore unsaved work?",
                                      "Loom did not close cleanly last time. Restore the "
                                      "workflow you were editing?")
        if answer != QMessageBox.StandardButton.Yes:
            f.unlink(missing_ok=True)
            return False
        path = Path(data["path"]) if data.get("path") else None
        self.doc.replace(graph, path)
        self.doc.undo.resetClean()  # restored work is unsaved work
        self.update_title()
        self.fit_all()
        return True

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

    # ---- running ---------------------------------------------------------------------------
    def run(self) -> None:
        from engine import validate
        from engine.validate import errors

        problems = validate(self.doc.graph)
        self.show_problems(problems)
        if errors(problems):
            self.docks["problems"].raise_()
            self.statusBar().showMessage("Not run: fix the problems listed first", 6000)
            return
        self.runner.submit(self.doc.graph, self.doc.path.name if self.doc.path else "Untitled")
        self.apply_seed_control()

    def apply_seed_control(self) -> None:
        """Seeds set to 'randomize' or 'increment' change after each run is queued."""
        for node in list(self.doc.graph):
            control = node.params.get("control_after_run")
            if control not in ("randomize", "increment"):
                continue
            cls = self.registry.get(node.type)
            seed_inputs = [i.name for i in cls.inputs if i.type.value == "SEED"] if cls else []
            for name in seed_inputs:
                if (node.id, name) in self.doc.graph.links:
                    continue
                old = int(node.params.get(name, cls.input_map[name].default))
                new = random.randint(0, 2**31 - 1) if control == "randomize" \
                    else (old + 1) % 2**63
                self.doc.push(SetParam(self.doc, node.id, name, new))

    def stop(self) -> None:
        self.runner.stop()

    def _clear_run_state(self) -> None:
        for item in self.scene.nodes.values():
            item.state, item.progress, item.message = "", 0.0, ""
            item.tooltip_text()
            item.update()

    def _on_queue(self, n: int) -> None:
        self.run_panel.queue.clear()
        for job in self.runner.queue:
            self.run_panel.queue.addItem(f"#{job.id} {job.label}")

    def _on_run_started(self, job_id: int, label: str) -> None:
        self.stop_action.setEnabled(True)
        self.run_panel.started(label, 1)
        self._done = 0

    def _on_run_event(self, name: str, p: dict) -> None:
        item: NodeItem | None = self.scene.nodes.get(p.get("node", ""))
        if name == "run_started":
            plan = p["plan"]
            self._to_run = len(plan.get("run", []))
            self.run_panel.total.setRange(0, max(1, self._to_run))
            runs, cached = set(plan.get("run", [])), set(plan.get("cached", []))
            for nid, it in self.scene.nodes.items():
                # a node this run does not need was computed before and is unchanged
                done_before = it.state in ("computed", "cached") and nid not in runs
                it.state = "cached" if nid in cached or done_before else ""
                it.progress, it.message = 0.0, ""
                it.tooltip_text()
                it.update()
        elif item is None:
            return
        elif name == "node_started":
            item.state, item.progress = "running", 0.0
            item.update()
            self.run_panel.node.setValue(0)
        elif name == "progress":
            total = max(1, p["total"])
            item.progress = p["step"] / total
            item.update()
            self.run_panel.node.setValue(int(100 * p["step"] / total))
            if p.get("preview") is not None:
                item.set_thumbnail(QPixmap.fromImage(p["preview"]))
                self.viewer.set_preview(p["preview"])
        elif name == "node_finished":
            item.state = "cached" if p["cached"] else "computed"
            item.stale = False
            if not p["cached"]:
                self._done += 1
                self.run_panel.total.setValue(self._done)
            images = p.get("images") or []
            files = p.get("files") or []
            if not images and p.get("thumbnail"):
                item.set_thumbnail(QPixmap.fromImage(p["thumbnail"][0]))
            if images:
                item.set_thumbnail(QPixmap.fromImage(images[0]))
                if not p["cached"]:
                    for i, img in enumerate(images):
                        path = files[i] if i < len(files) else None
                        self.gallery.add(img, path, self.doc.title_of(item.node_id))
            item.update()
        elif name == "node_failed":
            item.state, item.message = "failed", p.get("message", "")
            item.tooltip_text()
            item.update()
            self.problems.addItem(f"⛔ {self.doc.title_of(item.node_id)}: {item.message}")
            last = self.problems.item(self.problems.count() - 1)
            last.setData(Qt.ItemDataRole.UserRole, item.node_id)
            self.docks["problems"].raise_()

    def _on_run_finished(self, job_id: int, status: str, seconds: float, problems) -> None:
        self.stop_action.setEnabled(self.runner.busy)
        self.run_panel.finished(status, seconds)
        for item in self.scene.nodes.values():
            if item.state == "running":
                item.state = ""
                item.update()
        if status == "invalid" and problems:
            self.show_problems(problems)
        elif status == "failed" and problems:
            self.problems.addItem(f"⛔ {problems[0]}")
        self.statusBar().showMessage(f"Run {status} in {seconds:.2f} s", 6000)
        self.refresh_markers()

    def show_problems(self, problems) -> None:
        rows = []
        for pr in problems:
            title = self.doc.title_of(pr.node) if pr.node and pr.node in self.doc.graph else ""
            where = f"{title}" + (f" · {pr.input}" if pr.input else "")
            msg = pr.message
            if pr.expected:
                msg += f" (expected {pr.expected}" + (f", got {pr.got}" if pr.got else "") + ")"
            rows.append((pr.node, pr.severity, f"{where}: {msg}" if where else msg))
        report = self.import_report
        if report is not None:  # what the ComfyUI import could not carry, until a new file
            for node, inp, msg in report.problems():
                if node in self.doc.graph and "placeholder" in msg:
                    continue  # validation already lists each placeholder
                title = self.doc.title_of(node) if node in self.doc.graph else node
                rows.append((node if node in self.doc.graph else None, "warning",
                             f"ComfyUI import · {title}" + (f" · {inp}" if inp else "")
                             + f": {msg}"))
        self.problems.show_problems(rows)

    def refresh_problems(self) -> None:
        from engine import validate

        self.show_problems(validate(self.doc.graph))

    # ---- markers: which nodes the next run will compute ------------------------------------
    def _schedule_plan(self) -> None:
        self._plan_timer.start()

    def refresh_markers(self) -> None:
        if self.runner.busy or self._executor is None:
            return  # nothing is cached before the first run; never plan during a run
        try:
            plan = self._executor.plan(self.doc.graph)
        except Exception:
            return
        will_run = set(plan.run)
        for nid, item in self.scene.nodes.items():
            stale = nid in will_run
            if stale != item.stale:
                item.stale = stale
                item.update()

    # ---- drag and drop ---------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        pos = self.view.mapToScene(self.view.mapFrom(self, event.position().toPoint()))
        self.drop_files([Path(u) for u in urls], pos)
        event.acceptProposedAction()

    def drop_files(self, paths: list[Path], scene_pos: QPointF) -> None:
        """A workflow (.json, or a PNG holding one) opens; other images become Load Image
        nodes where they were dropped."""
        for i, path in enumerate(paths):
            suffix = path.suffix.lower()
            if suffix == ".json":
                self.open_path(path)
                return
            if suffix in IMAGE_SUFFIXES:
                chunks = self._png_text(path) if suffix == ".png" else {}
                if "loom.workflow" in chunks or "workflow" in chunks or "prompt" in chunks:
                    self.open_path(path)  # Loom's own, or ComfyUI's converted
                    return
                self.add_node("load_image", scene_pos + QPointF(30 * i, 30 * i),
                              path=os.fspath(path))

    @staticmethod
    def _png_text(path: Path) -> dict[str, str]:
        from engine.pngmeta import read_text

        try:
            return read_text(path)
        except Exception:
            return {}
