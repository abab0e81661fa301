import subprocess
import sys
from importlib import metadata

import pytest

from engine.registry import Registry, default_registry
from engine.spec import Int, Node, Output
from engine.types import T


def test_builtins_arrive_through_the_entry_point_group():
    eps = metadata.entry_points(group="loom.nodes")
    assert "builtin" in {e.name for e in eps}
    reg = default_registry()
    assert "load_image" in reg and reg.plugin_errors == {}


def test_third_party_packages_register_and_broken_ones_are_reported(monkeypatch):
    good = metadata.EntryPoint("good", "testnodes:registry", "loom.nodes")
    mod = metadata.EntryPoint("mod", "plugin_sample", "loom.nodes")
    broken = metadata.EntryPoint("broken", "no_such_module_xyz:register", "loom.nodes")
    real = metadata.entry_points

    def fake(**kw):
        if kw.get("group") == "loom.nodes":
            return [*real(group="loom.nodes"), good, mod, broken]
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", fake)
    # testnodes.registry is a function taking no registry: reported, not fatal
    reg = default_registry()
    assert "load_image" in reg
    assert "plugin.double" in reg  # a module with a NODES list
    assert set(reg.plugin_errors) == {"good", "broken"}
    assert "ModuleNotFoundError" in reg.plugin_errors["broken"]


def test_ids_and_aliases_are_unique():
    class A(Node):
        type = "a"
        aliases = ("old_a",)
        outputs = (Output("v", T.int),)

    class B(Node):
        type = "old_a"

    reg = Registry()
    reg.register(A)
    assert reg.get("old_a") is A and reg.canonical("old_a") == "a"
    with pytest.raises(ValueError, match="already taken"):
        reg.register(B)


def test_spec_errors_are_caught_at_class_creation():
    with pytest.raises(TypeError, match="duplicate input names"):
        class Dup(Node):
            type = "dup"
            inputs = (Int("x"), Int("x"))
    with pytest.raises(TypeError, match="default of x"):
        class BadDefault(Node):
            type = "bad_default"
            inputs = (Int("x", 5, min=10),)


def test_engine_and_node_specs_import_without_torch_or_qt():
    code = ("import sys, engine, engine.runtime; from engine import default_registry; "
            "reg = default_registry(); assert len(reg) > 10; "
            "bad = [m for m in ('torch', 'PySide6', 'numpy', 'PIL', 'app') if m in sys.modules]; "
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_engine_never_imports_app_or_nodes():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "engine"
    for f in root.rglob("*.py"):
        text = f.read_text()
        for bad in ("import app", "from app", "import nodes", "from nodes", "PySide6", "PyQt"):
            assert bad not in text, f"{f} mentions {bad!r}"


def test_every_link_type_and_model_kind_a_builtin_node_uses_is_registered():
    reg = default_registry()
    for cls in reg:
        for port in (*cls.inputs, *cls.outputs):
            assert reg.link_type(port.type) is port.type, (cls.type, port.name, port.type)
        for i in cls.inputs:
            if i.file and i.file != "image":
                assert reg.model_kinds[i.file] is i.file, (cls.type, i.name, i.file)


def test_a_type_or_kind_registered_twice_with_other_rules_is_refused():
    from engine.modelpaths import ModelKind
    from engine.types import LinkType

    reg = Registry()
    first = reg.add_link_type(LinkType("WIDGET_X", colour="#112233"))
    assert reg.add_link_type(LinkType("WIDGET_X", colour="#112233")) is not None
    with pytest.raises(ValueError, match="WIDGET_X is already"):
        reg.add_link_type(LinkType("WIDGET_X", colour="#445566"))
    assert reg.link_type("WIDGET_X") is first
    with pytest.raises(ValueError, match="already defined"):
        Registry().add_link_type(LinkType("WIDGET_X", feeds=("INT",)))
    kind = reg.add_model_kind(ModelKind("widgets"))
    with pytest.raises(ValueError, match="model kind widgets is already registered"):
        reg.add_model_kind(ModelKind("widgets"))
    assert reg.model_kinds == {"widgets": kind}
    with pytest.raises(ValueError, match="upper-case"):
        LinkType("lower")
