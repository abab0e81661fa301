"""Loom's desktop editor (PySide6). `main()` shows the window first and imports torch only
afterwards, on a background thread, so start-up is not held up by it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path


def default_workflow() -> Path:
    from app.paths import RESOURCES

    return RESOURCES / "workflows" / "shapes_txt2img.json"


def warm_up() -> None:
    """Import the heavy libraries while the user looks at the window."""

    def work() -> None:
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="loom-warm-up", daemon=True).start()


def startup(win, path: Path | None) -> None:
    """What the window shows first: the file asked for, recovered work, the last workflow,
    or the default text-to-image graph."""
    if path is not None:
        win.open_path(Path(path), ask=False)
        return
    if win.offer_recovery():
        return
    last = win.settings.value("last")
    if last and Path(last).is_file() and win.open_path(Path(last), ask=False):
        return
    if default_workflow().is_file():
        win.open_path(default_workflow(), ask=False)
        win.doc.path = None  # a template: Save asks where
        win.update_title()


def create_window(path: Path | None = None, settings=None):
    from PySide6.QtWidgets import QApplication

    from engine import default_registry

    from .window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Loom")
    app.setOrganizationName("Loom")
    win = MainWindow(default_registry(), settings=settings)
    app.aboutToQuit.connect(win.runner.shutdown)
    return app, win


def main(path: str | None = None) -> int:
    import os
    import time

    from PySide6.QtCore import QTimer

    t0 = time.perf_counter()
    app, win = create_window()
    win.show()
    QTimer.singleShot(0, lambda: startup(win, Path(path) if path else None))
    if os.environ.get("LOOM_EDITOR_PROBE"):  # benchmarks and tests: report the first paint
        def probe() -> None:
            import json

            app.processEvents()
            win.grab()
            print(json.dumps({"painted": win.isVisible(), "seconds": time.perf_counter() - t0,
                              "torch_at_paint": "torch" in sys.modules,
                              "nodes": len(win.doc.graph)}), flush=True)
            win.doc.undo.setClean()
            win.close()

        QTimer.singleShot(0, lambda: QTimer.singleShot(0, probe))
    else:
        QTimer.singleShot(50, warm_up)
    return app.exec()
