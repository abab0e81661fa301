"""The main window's files: title, recent files, open (Loom or ComfyUI), save, autosave
and recovery, dropped files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.paths import data_dir
from engine import Graph, WorkflowError
from engine import workflow as wf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class FileActions:
    # ---- title, recent files ---------------------------------------------------------------
    def update_title(self) -> None:
        name = self.doc.path.name if self.doc.path else "Untitled"
        if self.doc.path is None and self.import_report is not None:
            name = f"{Path(self.import_report.file).name} (from {self.import_report.source})"
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
            self.run_state.clear()
            self.update_title()

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open workflow", "",
                                              "Workflows (*.json *.png);;All files (*)")
        if path:
            self.open_path(Path(path), ask=False)

    def open_path(self, path: Path, ask: bool = True) -> bool:
        """Open a Loom workflow (.json, or a PNG holding one) or a ComfyUI or A1111 one, converted:
        its report joins the problems panel, and Save asks for a new file name so the
        imported file is never overwritten."""
        if ask and not self.confirm_discard():
            return False
        from engine.formats import Format, open_file

        try:
            opened = open_file(path, registry=self.registry, models=self.model_folders())
        except (WorkflowError, OSError, ValueError) as exc:
            QMessageBox.warning(self, "Cannot open", f"{path.name}: {exc}")
            return False
        graph, report = opened.graph, opened.report
        self.import_report = report
        own = opened.format == Format.LOOM_JSON
        self.doc.replace(graph, path if own else None)
        self.run_state.clear()
        if own:
            self._remember(path)
        self.update_title()
        self.fit_all()
        self.refresh_problems()
        if report is not None:
            self.statusBar().showMessage(
                f"Converted from {report.source}: {report.mapped_count} node(s) mapped, "
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
        """A workflow (.json, or a PNG holding one: Loom's, ComfyUI's or A1111's) opens;
        other images become Load Image nodes where they were dropped."""
        from engine.formats import detect

        for i, path in enumerate(paths):
            suffix = path.suffix.lower()
            if suffix == ".json":
                self.open_path(path)
                return
            if suffix in IMAGE_SUFFIXES:
                if suffix == ".png" and detect(path) is not None:
                    self.open_path(path)
                    return
                self.add_node("load_image", scene_pos + QPointF(30 * i, 30 * i),
                              path=os.fspath(path))
