"""A third-party package (tests/plugin_styles.py) brings its own link type and model kind
through `register()`, with nothing in engine/ knowing of it: it registers, connects by its
own rule, its model folder is searched, and the editor shows it with its colour."""

from __future__ import annotations

import plugin_styles
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor

from engine import Executor, Graph, default_registry
from engine.errors import GraphError
from engine.modelpaths import ModelFolders
from engine.runtime.models import ModelManager
from engine.types import can_connect


@pytest.fixture
def registry():
    reg = default_registry()
    reg._register_object(plugin_styles)  # as an entry point naming the module would
    return reg


@pytest.fixture
def styles_root(tmp_path):
    root = tmp_path / "models"
    (root / "styles" / "sub").mkdir(parents=True)
    (root / "styles" / "warm.style").write_text("golden light\n")
    (root / "styles" / "sub" / "cold.style").write_text("blue hour\n")
    (root / "styles" / "notes.txt").write_text("not a style")
    return root


def test_its_type_and_kind_register(registry):
    assert registry.link_types["STYLE"] is plugin_styles.STYLE
    assert registry.model_kinds["styles"] is plugin_styles.STYLES
    assert "styles.load" in registry and registry.plugin_errors == {}
    assert "STYLE" not in default_registry().link_types  # only where it was registered


def test_it_connects_by_its_own_rule(registry):
    assert can_connect("STYLE", "STRING") and can_connect(plugin_styles.STYLE, "STRING")
    assert not can_connect("STRING", "STYLE") and not can_connect("STYLE", "INT")
    g = Graph(registry)
    style = g.add("styles.load", "s", style_name="warm.style")
    g.add("styles.apply", "t", style=style["style"])
    g.connect(("s", "style"), ("t", "text"))  # STYLE feeds a STRING input
    g.add("int", "n")
    with pytest.raises(GraphError, match="STYLE"):
        g.connect(("n", "value"), ("t", "style"))


def test_its_model_folder_is_searched(registry, styles_root):
    folders = ModelFolders([styles_root], use_env=False, use_config=False,
                           kinds=registry.model_kinds)
    assert [e.name for e in folders.list("styles")] == ["sub/cold.style", "warm.style"]
    g = Graph(registry)
    style = g.add("styles.load", "s", style_name="sub/cold.style")
    g.add("styles.apply", "t", style=style["style"], text="a lake")
    result = Executor(models=ModelManager(paths=folders)).run(g, ["t"])
    assert result.status == "ok", result.failures
    assert result.outputs["t"]["text"] == "a lake, blue hour"
    g.set_param("s", "style_name", "missing.style")
    failed = Executor(models=ModelManager(paths=folders)).run(g, ["t"])
    assert "no styles model named 'missing.style'" in str(failed.failures["s"])


def test_the_editor_shows_it_with_its_colour(qtbot, tmp_path, monkeypatch, registry,
                                             styles_root):
    monkeypatch.setenv("LOOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOM_MODELS", str(styles_root))
    from app.editor import theme
    from app.editor.window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(registry, settings=settings, output_dir=tmp_path / "out")
    qtbot.addWidget(win)
    win.resize(1300, 850)
    win.show()
    qtbot.waitExposed(win)
    try:
        tree = win.library.tree
        (cat,) = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())
                  if tree.topLevelItem(i).text(0) == "styles"]
        item = next(cat.child(i) for i in range(cat.childCount())
                    if cat.child(i).text(0) == "Load Style")
        assert item.data(0, Qt.ItemDataRole.DecorationRole) == QColor("#12ab34")
        win.docks["library"].show()
        cat.setExpanded(True)
        tree.scrollToItem(item)
        rect = tree.visualItemRect(item)
        # Qt's item views take a double click only after the press that selects
        qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        (node,) = [n.id for n in win.doc.graph if n.type == "styles.load"]
        port = win.scene.nodes[node].outputs[0]
        assert port.type == "STYLE"
        assert theme.type_colour(win.doc.registry, port.type) == QColor("#12ab34")
        win.inspector.show_node(node)
        combo = win.inspector.fields["style_name"]
        assert [combo.itemText(i) for i in range(combo.count())] == ["sub/cold.style",
                                                                      "warm.style"]
    finally:
        win.doc.undo.setClean()
        win.runner.shutdown()
