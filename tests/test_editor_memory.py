"""The editor shows each node's memory estimate for the next run beside its "will compute"
ring (a small label, and the tooltip)."""

import pytest
from test_editor import make_window  # noqa: F401  the window fixture

pytestmark = pytest.mark.slow


def test_memory_estimates_show_beside_the_will_compute_ring(qtbot, make_window,  # noqa: F811
                                                            tiny_models, tmp_path):
    from test_diffusion import txt2img

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    def make():
        return Executor(models=ModelManager(paths=ModelFolders([tiny_models], use_env=False,
                                                               use_config=False)))

    win = make_window(make)
    from engine.events import RunStarted

    g = txt2img(steps=2, size=512)
    for nid, pos in {"ck": (0, 0), "pos": (260, -120), "neg": (260, 60), "lat": (260, 240),
                     "s": (520, 0), "d": (780, 0), "out": (1040, 0)}.items():
        g.move(nid, pos)
    win.doc.replace(g, None)
    seen = []
    win.runner.event.connect(lambda rev: seen.append(dict(win.run_state.state("s").memory))
                             if isinstance(rev.event, RunStarted) else None)
    with qtbot.waitSignal(win.runner.finished, timeout=120_000) as blocker:
        win.run()
    assert blocker.args[1] == "ok"
    # the run's own estimates arrived with run_started
    assert seen and seen[0]["activations"] > 0
    win.select_node("s")
    win.inspector.fields["seed"].setValue(7)
    win.refresh_markers()
    items = win.scene.nodes
    stale = {nid for nid, i in items.items() if i.stale}
    assert stale == {"s", "d", "out"}
    s, d = items["s"], items["d"]
    assert s.memory["peak"] == s.memory["weights"] + s.memory["activations"] > 0
    assert s.memory_label().endswith("M") and d.memory_label()
    assert "next run: about" in s.toolTip() and "working" in s.toolTip()
    assert items["ck"].memory_label() == "" or not items["ck"].stale  # cached: no label shown
    import os
    from pathlib import Path

    folder = Path(os.environ.get("LOOM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    win.resize(1400, 800)
    win.fit_all()
    qtbot.wait(50)
    assert win.grab().save(str(folder / "editor-memory.png"))
