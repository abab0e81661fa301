"""The node packages import one way: no module of nodes/ reaches itself through imports,
whether they sit at module level or inside functions (both run, sooner or later)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str] = frozenset()) -> set[str]:
    """Every module the file imports anywhere in its body, relative imports made absolute
    (`from pkg import name` counts as pkg.name where that is one of `modules`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # `from pkg import submodule` imports the submodule
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return found - {name}


def import_graph(top: str = "nodes") -> dict[str, set[str]]:
    files = sorted((ROOT / top).rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) & modules for f in files}


def test_the_import_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "nodes.diffusion.models" in graph["nodes.diffusion.lora"]  # inside a function
    assert "nodes.diffusion.sampling" in graph["nodes.diffusion"]  # from . import sampling
    assert "nodes._tensors" in graph["nodes.image"]  # from ._tensors import ...


def test_nodes_have_no_import_cycles():
    try:
        tuple(TopologicalSorter(import_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle in nodes/: {' -> '.join(exc.args[1])}") from None


def test_nothing_at_run_time_imports_the_test_builders():
    bad = [f"{f.relative_to(ROOT)} imports {m}"
           for top in ("nodes", "engine", "app") for f in sorted((ROOT / top).rglob("*.py"))
           for m in imports_of(f) if m == "testing" or m.startswith("testing.")]
    assert not bad, bad
    assert "testing.diffusion" in imports_of(ROOT / "tests" / "conftest.py")  # it sees them
