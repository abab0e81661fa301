"""The editor, driven like a user drives it: the real window, mouse events on the canvas's
viewport, keys in the search box; assertions on the graph model behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, QRectF, QSettings, Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from engine import workflow as wf

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "resources" / "workflows" / "example.json"


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOM_DATA_DIR", str(tmp_path / "data"))
    # a modal question would block a test: answer "discard" unless a test says otherwise
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Discard)
    from app.editor.window import MainWindow
    from engine import default_registry

    made = []

    def make(make_executor=None):
        settings = QSettings(str(tmp_path / f"settings{len(made)}.ini"),
                             QSettings.Format.IniFormat)
        win = MainWindow(default_registry(), settings=settings, make_executor=make_executor,
                         output_dir=tmp_path / "out")
        qtbot.addWidget(win)
        win.resize(1300, 850)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.doc.undo.setClean()
        win.runner.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()


def vp(win, scene_pos: QPointF) -> QPoint:
    return win.view.mapFromScene(scene_pos)


def port_point(win, node_id: str, name: str, output: bool) -> QPoint:
    return vp(win, win.scene.nodes[node_id].port_scene_pos(name, output))


def drag(qtbot, win, a: QPoint, b: QPoint, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    viewport = win.view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, modifier, a)
    for i in range(1, 6):
        qtbot.mouseMove(viewport, a + (b - a) * (i / 5))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, modifier, b)


def add_by_search(qtbot, win, text: str, at: QPointF) -> str:
    before = set(win.doc.graph.nodes)
    win.open_search(at)
    assert win.search.isVisible()
    qtbot.keyClicks(win.search.edit, text)
    qtbot.keyClick(win.search.edit, Qt.Key.Key_Return)
    (new,) = set(win.doc.graph.nodes) - before
    return new


def snapshot(win) -> dict:
    return json.loads(wf.dumps(win.doc.graph))


def test_build_connect_refuse_cut_undo_redo(qtbot, window):
    win = window
    states = [snapshot(win)]
    load = add_by_search(qtbot, win, "load image", QPointF(0, 0))
    assert win.doc.graph.node(load).type == "load_image"
    states.append(snapshot(win))
    resize = add_by_search(qtbot, win, "resize", QPointF(400, 0))
    blur = add_by_search(qtbot, win, "blur mask", QPointF(400, 300))
    states.append(snapshot(win))
    win.view.resetTransform()
    win.view.centerOn(QPointF(300, 120))
    qtbot.wait(10)

    # connect image -> image by dragging from the output port to the input port
    drag(qtbot, win, port_point(win, load, "image", True), port_point(win, resize, "image", False))
    link = win.doc.graph.links[(resize, "image")]
    assert (link.src, link.src_output) == (load, "image")
    states.append(snapshot(win))

    # an IMAGE output onto a MASK input is refused, and says why
    drag(qtbot, win, port_point(win, resize, "image", True), port_point(win, blur, "mask", False))
    assert (blur, "mask") not in win.doc.graph.links
    assert "IMAGE" in win.statusBar().currentMessage()

    # a connection that would make a cycle is refused with a message
    resize2 = add_by_search(qtbot, win, "resize image", QPointF(800, 0))
    drag(qtbot, win, port_point(win, resize, "image", True),
         port_point(win, resize2, "image", False))
    states.append(snapshot(win))
    drag(qtbot, win, port_point(win, resize2, "image", True),
         port_point(win, resize, "image", False))
    assert win.doc.graph.links[(resize, "image")].src == load
    assert "cycle" in win.statusBar().currentMessage()

    # cut the first wire by alt-dragging across it
    a = win.scene.nodes[load].port_scene_pos("image", True)
    b = win.scene.nodes[resize].port_scene_pos("image", False)
    mid = (a + b) / 2
    drag(qtbot, win, vp(win, mid + QPointF(0, -40)), vp(win, mid + QPointF(0, 40)),
         Qt.KeyboardModifier.AltModifier)
    assert (resize, "image") not in win.doc.graph.links
    assert (resize2, "image") in win.doc.graph.links
    states.append(snapshot(win))

    # undo every step back to the empty graph, checking each state on the way; then redo
    undo = win.doc.undo
    seen = [snapshot(win)]
    while undo.canUndo():
        undo.undo()
        seen.append(snapshot(win))
    assert seen[-1] == states[0]
    for s in states:
        assert s in seen
    while undo.canRedo():
        undo.redo()
    assert snapshot(win) == states[-1]
    # the canvas mirrors the model after all that
    assert set(win.scene.nodes) == set(win.doc.graph.nodes)
    assert set(win.scene.wires) == set(win.doc.graph.links)


def test_dropping_a_wire_on_empty_canvas_offers_compatible_nodes(qtbot, window):
    win = window
    load = add_by_search(qtbot, win, "load image", QPointF(0, 0))
    win.view.resetTransform()
    win.view.centerOn(QPointF(200, 50))
    start = port_point(win, load, "mask", True)
    drag(qtbot, win, start, start + QPoint(250, 120))
    assert win.search.isVisible()
    types = {cls.type for cls in win.search.candidates("")}
    assert "grow_mask" in types and "blur_mask" in types
    assert "load_checkpoint" not in types and "resize_image" not in types
    qtbot.keyClicks(win.search.edit, "grow")
    qtbot.keyClick(win.search.edit, Qt.Key.Key_Return)
    (grow,) = [n.id for n in win.doc.graph if n.type == "grow_mask"]
    assert win.doc.graph.links[(grow, "mask")].src == load
    win.doc.undo.undo()  # adding and wiring it is one step
    assert grow not in win.doc.graph and not win.doc.graph.links


def test_copy_paste_duplicate_and_frames(qtbot, window):
    win = window
    win.open_path(EXAMPLE, ask=False)
    before = len(win.doc.graph)
    for nid in ("load", "upscale"):
        win.scene.nodes[nid].setSelected(True)
    win.copy()
    new = win.paste(at=QPointF(0, 600))
    assert len(new) == 2 and len(win.doc.graph) == before + 2
    (link,) = [l for l in win.doc.graph.links.values() if l.dst in new]
    assert link.src in new  # the link between the pair came along, renamed
    assert win.doc.graph.node(new[0]).params == win.doc.graph.node("load").params
    win.scene.clearSelection()
    win.scene.nodes["frame"].setSelected(True)
    win.duplicate()
    assert len(win.doc.graph) == before + 3
    win.group_selected("Copies")
    assert win.doc.graph.groups[-1].title == "Copies"
    win.doc.undo.undo()
    win.doc.undo.undo()
    win.doc.undo.undo()
    assert len(win.doc.graph) == before


def test_set_value_bypass_move_are_undoable(qtbot, window):
    win = window
    win.open_path(EXAMPLE, ask=False)
    original = snapshot(win)
    win.select_node("upscale")
    field = win.inspector.fields["width"]
    field.setValue(640)
    assert win.doc.graph.node("upscale").params["width"] == 640
    assert win.isWindowModified()
    win.toggle_mode("bypassed")
    assert win.doc.graph.node("upscale").mode == "bypassed"
    item = win.scene.nodes["upscale"]
    win.view.resetTransform()
    win.view.centerOn(item)
    qtbot.wait(10)
    title = vp(win, item.mapToScene(QPointF(60, 10)))
    drag(qtbot, win, title, title + QPoint(100, 50))
    assert win.doc.graph.node("upscale").pos != tuple(original["nodes"][1]["pos"])
    for _ in range(3):
        win.doc.undo.undo()
    assert snapshot(win) == original
    assert not win.isWindowModified()


def test_save_reopen_and_unknown_nodes_survive(qtbot, make_window, tmp_path):
    doc = json.loads(EXAMPLE.read_text())
    alien = {"id": "alien", "type": "acme_glitter", "version": 3, "title": "Glitter",
             "params": {"sparkle": 0.7, "palette": ["#fff", "#f0f"]}, "pos": [600, 500],
             "acme_private": {"keep": True}}
    doc["nodes"].append(alien)
    doc["links"].append({"from": ["alien", "sparkles"], "to": ["frame", "image"],
                         "acme_wire": 1})
    doc["links"] = [l for l in doc["links"] if l["to"] != ["frame", "image"]] + [doc["links"][-1]]
    src = tmp_path / "alien.json"
    src.write_text(json.dumps(doc))
    win = make_window()
    assert win.open_path(src, ask=False)
    item = win.scene.nodes["alien"]
    assert item.placeholder and "acme_glitter" in item.toolTip()
    assert [p.name for p in item.outputs] == ["sparkles"]
    # edit something else, save, and compare the preserved parts byte for byte
    win.select_node("frame")
    win.inspector.fields["left"].setValue(20)
    out = tmp_path / "saved.json"
    assert win._write(out)
    saved = json.loads(out.read_text())
    (node,) = [n for n in saved["nodes"] if n["id"] == "alien"]
    assert json.dumps(node, sort_keys=True) == json.dumps(alien, sort_keys=True)
    (wire,) = [l for l in saved["links"] if l["from"][0] == "alien"]
    assert wire["acme_wire"] == 1
    win2 = make_window()
    assert win2.open_path(out, ask=False)
    assert snapshot(win2) == snapshot(win)
    assert win2.windowTitle().startswith("saved.json")


def test_run_updates_nodes_gallery_markers_and_keeps_the_ui_responsive(qtbot, window):
    import torch  # noqa: F401  the editor imports it at start-up (warm_up); its C init holds the GIL

    win = window
    win.open_path(EXAMPLE, ask=False)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    with qtbot.waitSignal(win.runner.finished, timeout=120_000) as blocker:
        win.run()
    timer.stop()
    assert blocker.args[1] == "ok"
    states = {nid: item.state for nid, item in win.scene.nodes.items()}
    assert set(states.values()) == {"computed"}
    assert win.scene.nodes["save"].thumbnail is not None
    assert win.gallery.count() >= 1
    assert win.run_panel.total.value() == len(win.doc.graph)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert gaps and max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f} s"
    # nothing will re-run now; changing one value marks that node and what follows it
    win.refresh_markers()
    assert not any(i.stale for i in win.scene.nodes.values())
    win.select_node("soften")
    win.inspector.fields["radius"].setValue(3.0)
    win.refresh_markers()
    stale = {nid for nid, i in win.scene.nodes.items() if i.stale}
    assert stale == {"soften", "sky_only", "frame", "save"}
    with qtbot.waitSignal(win.runner.finished, timeout=120_000):
        win.run()
    states = {nid: item.state for nid, item in win.scene.nodes.items()}
    assert states["soften"] == "computed" and states["load"] == "cached"


def test_stop_cancels_a_sampling_run_within_a_step(qtbot, make_window, tiny_models):
    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    def make():
        return Executor(models=ModelManager(paths=ModelFolders([tiny_models], use_env=False,
                                                               use_config=False)))

    win = make_window(make)
    from test_diffusion import txt2img

    g = txt2img(steps=400)
    win.doc.replace(g, None)
    steps = []
    from engine.events import Progress

    win.runner.event.connect(lambda rev: steps.append(rev.event.step)
                             if isinstance(rev.event, Progress) else None)
    win.run()
    qtbot.waitUntil(lambda: len(steps) > 2, timeout=60_000)
    # live previews from the sampler land on its node while it runs
    qtbot.waitUntil(lambda: win.scene.nodes["s"].thumbnail is not None, timeout=10_000)
    assert win.scene.nodes["s"].state == "running"
    with qtbot.waitSignal(win.runner.finished, timeout=30_000) as blocker:
        t = time.perf_counter()
        win.stop()
    assert blocker.args[1] == "cancelled"
    assert time.perf_counter() - t < 5
    assert max(steps) < 400
    assert win.scene.nodes["s"].state != "computed"


def test_failed_node_turns_red_and_is_listed(qtbot, window, tmp_path):
    win = window
    from engine import Graph

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    g = Graph(win.registry)
    load = g.add("load_image", "load", path=str(broken))
    g.add("preview_image", "show", images=load["image"])
    win.doc.replace(g, None)
    with qtbot.waitSignal(win.runner.finished, timeout=60_000) as blocker:
        win.run()
    assert blocker.args[1] == "failed"
    assert win.scene.nodes["load"].state == "failed"
    assert "broken.png" in win.scene.nodes["load"].toolTip()
    texts = [win.problems.item(i).text() for i in range(win.problems.count())]
    assert any("broken.png" in t for t in texts)
    # clicking the problem selects the node; the graph is still editable
    win.problems.node_clicked.emit("load")
    assert win.selected() == ["load"]
    win.delete_selected()
    assert "load" not in win.doc.graph


def test_drop_workflow_png_and_images(qtbot, window, tmp_path):
    from PIL import Image

    win = window
    plain = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(plain)
    win.drop_files([plain], QPointF(10, 20))
    (node,) = list(win.doc.graph)
    assert node.type == "load_image" and node.params["path"] == str(plain)
    from engine.pngmeta import png_info

    text = EXAMPLE.read_text()
    embedded = tmp_path / "made.png"
    Image.new("RGB", (8, 8), "red").save(embedded, pnginfo=png_info({"loom.workflow": text}))
    win.doc.undo.setClean()
    win.drop_files([embedded], QPointF(0, 0))
    assert "sky_only" in win.doc.graph


def test_autosave_and_recovery(qtbot, make_window, monkeypatch):
    win = make_window()
    win.open_path(EXAMPLE, ask=False)
    win.select_node("frame")
    win.inspector.fields["left"].setValue(33)
    win.autosave()
    assert win.recovery_file().is_file()
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    win2 = make_window()
    assert win2.offer_recovery()
    assert win2.doc.graph.node("frame").params["left"] == 33
    assert win2.isWindowModified()


def test_closing_with_unsaved_changes_asks(qtbot, window, monkeypatch):
    win = window
    win.open_path(EXAMPLE, ask=False)
    win.select_node("frame")
    win.inspector.fields["left"].setValue(21)
    asked = []

    def cancel(*a, **k):
        asked.append(a)
        return QMessageBox.StandardButton.Cancel

    monkeypatch.setattr(QMessageBox, "question", cancel)
    assert not win.close()
    assert asked and win.isVisible()


def test_screenshots(qtbot, window, tmp_path):
    """PNGs of the main window to look at (also written to $LOOM_SCREENSHOTS if set)."""
    import os

    win = window
    win.open_path(EXAMPLE, ask=False)
    with qtbot.waitSignal(win.runner.finished, timeout=120_000):
        win.run()
    win.select_node("dusk", center=False)
    win.fit_all()
    qtbot.wait(50)
    folder = Path(os.environ.get("LOOM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = win.grab()
    assert shot.save(str(folder / "editor-example.png"))
    win.view.resetTransform()
    win.view.centerOn(win.scene.nodes["dusk"])
    qtbot.wait(50)
    assert win.grab().save(str(folder / "editor-zoomed.png"))
    img = shot.toImage()
    assert img.width() >= 1000
    # not a blank window: the canvas shows many colours
    colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
    assert len(colours) > 50


def test_window_opens_before_torch_is_imported(tmp_path):
    env = {"LOOM_EDITOR_PROBE": "1", "QT_QPA_PLATFORM": "offscreen",
           "LOOM_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "app.cli", "edit", str(EXAMPLE)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["painted"] and probe["torch_at_paint"] is False
    assert probe["nodes"] == len(json.loads(EXAMPLE.read_text())["nodes"])


def test_qt_bindings_do_not_leak_references_to_none(qapp):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every processEvents()
    call and crashes a long session ('deallocating None'); pyproject excludes it."""
    from PySide6.QtCore import QCoreApplication

    before = sys.getrefcount(None)
    for _ in range(2000):
        QCoreApplication.processEvents()
    assert sys.getrefcount(None) >= before - 50


def test_reroute_dots_add_move_remove_and_save(qtbot, window, tmp_path):
    win = window
    win.open_path(EXAMPLE, ask=False)
    win.view.resetTransform()
    wire = win.scene.wires[("fit", "image")]  # Dusk gradient -> Fit gradient
    mid = wire.path().pointAtPercent(0.5)
    win.view.centerOn(mid)
    qtbot.wait(10)
    qtbot.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, pos=vp(win, mid))
    (pt,) = win.doc.graph.links[("fit", "image")].extra["reroutes"]
    assert abs(pt[0] - mid.x()) < 2 and abs(pt[1] - mid.y()) < 2
    (dot,) = win.scene.dots[("fit", "image")]
    # drag the dot down: the wire follows and the link records the new place
    drag(qtbot, win, vp(win, dot.pos()), vp(win, dot.pos() + QPointF(0, 80)))
    (moved,) = win.doc.graph.links[("fit", "image")].extra["reroutes"]
    assert moved[1] > pt[1] + 60
    assert win.scene.wires[("fit", "image")].path().intersects(
        QRectF(moved[0] - 2, moved[1] - 2, 4, 4))
    out = tmp_path / "rerouted.json"
    assert win._write(out)
    saved = json.loads(out.read_text())
    (link,) = [l for l in saved["links"] if l["to"] == ["fit", "image"]]
    assert link["reroutes"] == [moved]
    (dot,) = win.scene.dots[("fit", "image")]
    qtbot.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, pos=vp(win, dot.pos()))
    assert "reroutes" not in win.doc.graph.links[("fit", "image")].extra
    win.doc.undo.undo()
    assert win.doc.graph.links[("fit", "image")].extra["reroutes"] == [moved]


def test_settings_and_layout_are_remembered(qtbot, make_window, tmp_path, monkeypatch):
    from app.editor.settings import SettingsDialog

    win = make_window()
    dlg = SettingsDialog(win.settings, win)
    dlg.folders.addItem(str(tmp_path / "models"))
    dlg.device.setCurrentText("cpu")
    dlg.cache.setValue(2.5)
    dlg.accept()
    assert win.settings.value("device") == "cpu"
    assert any(str(r) == str(tmp_path / "models") for r in win.model_folders().roots)
    win.docks["library"].hide()
    win.close()
    again = type(win)(win.registry, settings=win.settings, output_dir=tmp_path / "o")
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    assert not again.docks["library"].isVisible()
    assert again.docks["inspector"].isVisible()
    again.runner.shutdown()


def test_seed_control_after_each_run(qtbot, window):
    from test_diffusion import txt2img

    win = window
    win.doc.replace(txt2img(seed=41), None)
    win.select_node("s")
    assert isinstance(win.inspector.fields["control_after_run"].currentText(), str)
    win.inspector.fields["control_after_run"].setCurrentText("increment")
    win.apply_seed_control()
    assert win.doc.graph.node("s").params["seed"] == 42
    win.inspector.fields["control_after_run"].setCurrentText("randomize")
    seeds = set()
    for _ in range(3):
        win.apply_seed_control()
        seeds.add(win.doc.graph.node("s").params["seed"])
    assert len(seeds) == 3
    win.inspector.fields["control_after_run"].setCurrentText("fixed")
    before = win.doc.graph.node("s").params["seed"]
    win.apply_seed_control()
    assert win.doc.graph.node("s").params["seed"] == before


def test_frames_move_their_nodes_and_occupied_inputs_get_replaced(qtbot, window):
    win = window
    win.open_path(EXAMPLE, ask=False)
    win.view.resetTransform()
    frame = win.scene.frames[0]
    members = win.scene.frame_members(frame)
    before = {n: win.doc.graph.node(n).pos for n in members}
    title = frame.title_rect().center()
    win.view.centerOn(title)
    qtbot.wait(10)
    drag(qtbot, win, vp(win, title), vp(win, title + QPointF(120, 60)))
    for n in members:
        x0, y0 = before[n]
        x1, y1 = win.doc.graph.node(n).pos
        assert abs(x1 - x0 - 120) < 2 and abs(y1 - y0 - 60) < 2
    win.doc.undo.undo()
    assert {n: win.doc.graph.node(n).pos for n in members} == before
    # a wire dropped on an input that already has one replaces it (one undo step)
    win.view.centerOn(win.scene.nodes["dusk"])
    qtbot.wait(10)
    assert win.doc.graph.links[("dusk", "image_b")].src == "fit"
    drag(qtbot, win, port_point(win, "upscale", "image", True),
         port_point(win, "dusk", "image_b", False))
    assert win.doc.graph.links[("dusk", "image_b")].src == "upscale"
    win.doc.undo.undo()
    assert win.doc.graph.links[("dusk", "image_b")].src == "fit"


def test_gallery_viewer_zooms_and_compares(qtbot, window):
    from PySide6.QtGui import QColor, QImage

    win = window
    a = QImage(64, 48, QImage.Format.Format_RGB888)
    a.fill(QColor("red"))
    b = QImage(64, 48, QImage.Format.Format_RGB888)
    b.fill(QColor("blue"))
    win.gallery.add(a, None, "first")
    win.gallery.add(b, "/tmp/x.png", "second")
    assert win.gallery.count() == 2
    win.gallery.item(0).setSelected(True)
    win.gallery.item(1).setSelected(True)
    win.gallery._open(win.gallery.item(0))
    viewer = win.viewer
    assert viewer.isVisible() and viewer.split.isVisible()
    shown = viewer.item.pixmap().toImage()
    assert shown.pixelColor(5, 5) == QColor("blue") and shown.pixelColor(60, 40) == QColor("red")
    viewer.split.setValue(1000)
    assert viewer.item.pixmap().toImage().pixelColor(60, 40) == QColor("blue")
    z = viewer.view.transform().m11()
    viewer.view.scale(2, 2)
    assert viewer.view.transform().m11() == pytest.approx(2 * z)
    viewer.close()


def test_runner_delivers_the_newest_progress_per_node_and_every_other_event(qtbot, window):
    runner = window.runner
    got = []
    from app.editor.runner import RunEvent
    from engine.events import NodeFinished, Progress

    runner.event.connect(lambda rev: got.append((rev.event.event, rev.node,
                                                 getattr(rev.event, "step", None))))
    runner.current = type("J", (), {"id": 7})()
    for step in range(1, 6):
        runner.outbox.put(("event", 7, RunEvent(Progress("r", "a", step, 5))))
        runner.outbox.put(("event", 7, RunEvent(Progress("r", "b", step, 5))))
    runner.outbox.put(("event", 7, RunEvent(NodeFinished("r", "a", cached=False))))
    runner.drain()
    runner.current = None
    assert got == [("progress", "a", 5), ("progress", "b", 5), ("node_finished", "a", None)]


def test_comfyui_files_open_converted_with_their_report(qtbot, window, tmp_path):
    """File → Open and drag-and-drop take ComfyUI JSON and PNGs; what did not carry is
    listed under Problems; Save asks for a new name instead of overwriting the ComfyUI
    file."""
    import os

    from PIL import Image, PngImagePlugin

    data = Path(__file__).parent / "data" / "comfyui"
    win = window
    assert win.open_path(data / "custom_nodes_ui.json", ask=False)
    assert win.doc.path is None and win.import_report is not None
    assert win.windowTitle().startswith("custom_nodes_ui.json (from ComfyUI)")
    assert win.doc.graph.nodes["10"].type == "comfyui:Seed (rgthree)"
    rows = [win.problems.item(i).text() for i in range(win.problems.count())]
    assert any("Seed (rgthree)" in r for r in rows)
    assert any("ComfyUI import" in r and "bislerp" in r for r in rows)
    assert "placeholders" in win.statusBar().currentMessage()
    assert not win.docks["problems"].visibleRegion().isEmpty()  # raised over Outputs
    win.scene.nodes["10"]  # the placeholder is drawn
    win.fit_all()
    qtbot.wait(50)
    folder = Path(os.environ.get("LOOM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    assert win.grab().save(str(folder / "editor-comfyui.png"))

    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", (data / "structural_ui.json").read_text())
    info.add_text("prompt", (data / "txt2img_api.json").read_text())
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    win.doc.undo.setClean()
    win.drop_files([png], QPointF(0, 0))
    assert win.doc.graph.nodes["14"].type == "note"  # the UI workflow, not the prompt
    assert win.doc.graph.nodes["12"].mode == "bypassed"
    assert not any(n.type == "load_image" for n in win.doc.graph)
    win.new_workflow()
    assert win.import_report is None and win.problems.count() <= 1


def test_an_a1111_png_dropped_opens_as_its_text_to_image_graph(qtbot, window, tmp_path):
    from PIL import Image

    from engine.pngmeta import png_info

    png = tmp_path / "00001-1234.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=png_info({"parameters": (
        "a red square\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, "
        "Model: loom-shapes, ENSD: 31337")}))
    win = window
    win.drop_files([png], QPointF(0, 0))
    assert win.doc.graph.nodes["sampler"].params["seed"] == 5
    assert not any(n.type == "load_image" for n in win.doc.graph)
    assert win.windowTitle().startswith("00001-1234.png (from A1111)")
    assert "Converted from A1111" in win.statusBar().currentMessage()
    rows = [win.problems.item(i).text() for i in range(win.problems.count())]
    assert any("A1111 import" in r and "ENSD" in r for r in rows)
