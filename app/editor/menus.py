"""The main window's menu bar: every action, its shortcut, and `actions_by_name` (which
tests and scripts trigger by name)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence


class MenuActions:
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
