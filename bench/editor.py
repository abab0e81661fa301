#!/usr/bin/env python3
"""Editor benchmarks. Prints a table; not a test. Run: python3 tools/dev.py bench editor.py

1. open a 500-node workflow: read, build the canvas, first paint (target < 1 s)
2. frame time while panning and zooming over it, zoomed to fit and at 100 % (target
   median < 16 ms); each frame is a synchronous repaint of a 1400x860 window's canvas
3. cold start of `loom edit FILE` to a painted window, in a fresh process (target < 1.5 s),
   against a bare PySide6 window started the same way (the floor Qt itself sets)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def big_workflow(path: Path, n: int = 500) -> None:
    """Rows of image chains: Load Image -> Resize -> Blur-free ops -> Blend -> ... -> Save."""
    from engine import Graph, default_registry
    from engine import workflow as wf

    g = Graph(default_registry())
    kinds = ["resize_image", "crop_image", "pad_image", "blend_images", "resize_image"]
    per_row = 25
    prev = None
    for i in range(n):
        row, col = divmod(i, per_row)
        pos = (col * 280.0, row * 260.0)
        if col == 0:
            prev = g.add("load_image", f"n{i}", path="resources/images/lighthouse.png",
                         pos=pos)
            continue
        if col == per_row - 1:
            g.add("save_image", f"n{i}", images=prev["image"], pos=pos)
            continue
        kind = kinds[col % len(kinds)]
        if kind == "blend_images":
            prev = g.add(kind, f"n{i}", image_a=prev["image"], image_b=prev["image"], pos=pos)
        else:
            prev = g.add(kind, f"n{i}", image=prev["image"], pos=pos)
    wf.save(g, path)


def cold_start(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not line.startswith("{"):
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - t


BARE = """
import json, sys, time
from PySide6.QtWidgets import QApplication, QMainWindow
from PySide6.QtCore import QTimer
app = QApplication(sys.argv[:1]); w = QMainWindow(); w.resize(1400, 860); w.show()
def done():
    app.processEvents(); w.grab(); print(json.dumps({"painted": True})); app.quit()
QTimer.singleShot(0, done); app.exec()
"""


def main() -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        os.environ["LOOM_DATA_DIR"] = str(d)
        wf_path = d / "big.json"
        big_workflow(wf_path)
        app = QApplication.instance() or QApplication([])
        from app.editor.window import MainWindow
        from engine import default_registry

        win = MainWindow(default_registry(), QSettings(str(d / "s.ini"),
                                                       QSettings.Format.IniFormat))
        win.resize(1400, 860)
        win.show()
        app.processEvents()
        opens = []
        for _ in range(3):
            t = time.perf_counter()
            win.open_path(wf_path, ask=False)
            app.processEvents()
            win.view.viewport().repaint()
            opens.append(time.perf_counter() - t)
        rows.append(("open 500-node workflow, first paint", statistics.median(opens) * 1000,
                     "ms", "< 1000"))

        def frames(label: str, zoom_fit: bool) -> None:
            view = win.view
            if zoom_fit:
                win.fit_all()
            else:
                view.resetTransform()
                view.centerOn(win.scene.nodes["n260"])
            app.processEvents()
            times = []
            for i in range(60):
                t = time.perf_counter()
                if i % 2:
                    view.horizontalScrollBar().setValue(view.horizontalScrollBar().value()
                                                        + (25 if i % 4 == 1 else -25))
                else:
                    view.zoom_by(1.06 if i % 4 == 0 else 1 / 1.06)
                view.viewport().repaint()
                times.append(time.perf_counter() - t)
            times.sort()
            rows.append((f"pan/zoom frame, {label}", statistics.median(times) * 1000, "ms",
                         "< 16"))
            rows.append((f"pan/zoom frame, {label}, p95", times[int(len(times) * 0.95)] * 1000,
                         "ms", ""))

        frames("500 nodes zoomed to fit", True)
        frames("100 % zoom", False)
        win.doc.undo.setClean()
        win.runner.shutdown()
        win.close()

        env = {**os.environ, "LOOM_EDITOR_PROBE": "1", "LOOM_DATA_DIR": str(d / "cold"),
               "XDG_CONFIG_HOME": str(d / "cfg")}
        from engine.resources import RESOURCES

        example = str(RESOURCES / "workflows" / "example.json")
        loom = [cold_start([sys.executable, "-m", "app.cli", "edit", example], env)
                for _ in range(3)]
        bare = [cold_start([sys.executable, "-c", BARE], env) for _ in range(3)]
        rows.append(("cold start to painted window (loom edit)", statistics.median(loom) * 1000,
                     "ms", "< 1500"))
        rows.append(("cold start, bare PySide6 window (floor)", statistics.median(bare) * 1000,
                     "ms", ""))
        rows.append(("cold start ratio loom / bare window",
                     statistics.median(loom) / statistics.median(bare), "x", ""))
    print(f"{'measure':48} {'value':>10}  unit  target")
    for name, value, unit, target in rows:
        print(f"{name:48} {value:10.2f}  {unit:4}  {target}")
    print(json.dumps({r[0]: round(r[1], 3) for r in rows}))


if __name__ == "__main__":
    main()
