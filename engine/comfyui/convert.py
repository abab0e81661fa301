"""ComfyUI workflow files (API format, UI format, PNGs carrying either) -> Loom graphs.

One way through four stages, each a module taking the previous one's output: reading
(`reading`: the document -> raw nodes), flattening subgraphs and group nodes (`flatten`, UI
format only), folding Reroute and PrimitiveNode nodes (`fold`), and building the Loom graph
(`build`), all filling one `Report`. Nothing here runs code from the file, and nothing
raises on bad content: what cannot be carried is listed in the report. Only a file that is
not a ComfyUI workflow at all raises `WorkflowError`. Opening files of any format, ComfyUI's
among them, is `engine.formats.open_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from ..text import SURROGATE_MESSAGE, lone_surrogate
from ..workflow import _kind
from .build import build
from .flatten import flatten
from .fold import fold
from .nodes import PLACEHOLDER_PREFIX
from .reading import is_comfyui, is_ui, read_api, read_ui
from .report import Report


def convert(doc: Any, *, registry: Registry | None = None, models: ModelPaths | None = None,
            file: str = "<comfyui>") -> tuple[Graph, Report]:
    """A ComfyUI document (parsed JSON) -> a Loom graph and the report of what was carried.
    `models` (engine.modelpaths.ModelFolders) is where model names are looked up."""
    if not isinstance(doc, dict):
        raise WorkflowError(file, "top level", f"expected a ComfyUI workflow (an object), got "
                            f"{_kind(doc)}")
    if not is_comfyui(doc):
        raise WorkflowError(file, "top level", "not a ComfyUI workflow: expected an API-format "
                            "object of nodes with 'class_type', or a UI-format object with "
                            "'nodes' and 'links'")
    where = lone_surrogate(doc)
    if where is not None:
        raise WorkflowError(file, where or "top level", SURROGATE_MESSAGE)
    report = Report(file=file, format="ui" if is_ui(doc) else "api")
    groups: list[dict[str, Any]] = []
    if report.format == "ui":
        ui = read_ui(doc, report)
        cnodes, groups = flatten(ui, report), ui.groups
    else:
        cnodes = read_api(doc, report)
    graph = build(fold(cnodes, report), groups, report, registry, models,
                  layout=report.format == "api")
    graph.meta["comfyui"] = {"format": report.format, "file": Path(file).name}
    graph.revision = 0
    return graph, report


def read(path: str | Path) -> Any:
    """The ComfyUI document in a .json file or a PNG's text chunks (workflow, else prompt)."""
    from ..formats import comfyui_png
    from ..formats.source import read_source

    source = read_source(path)
    return comfyui_png.document(source) if source.chunks is not None else source.doc


def load(path: str | Path, registry: Registry | None = None, models: ModelPaths | None = None
         ) -> tuple[Graph, Report]:
    path = Path(path)
    graph, report = convert(read(path), registry=registry, models=models, file=str(path))
    graph.base_dir = path.resolve().parent
    return graph, report


def open_workflow(path: str | Path, registry: Registry | None = None,
                  models: ModelPaths | None = None) -> tuple[Graph, Report | None]:
    """`engine.formats.open_file` as a (graph, report) pair, as older callers take it."""
    from ..formats import open_file

    opened = open_file(path, registry=registry, models=models)
    return opened.graph, opened.report


def runnable_targets(graph: Graph) -> tuple[list[str], dict[str, str]]:
    """The output nodes that do not depend on placeholders, and why each other one is left
    out: the part of an imported workflow that can run."""
    placeholders = {n.id for n in graph.nodes.values() if graph.registry.get(n.type) is None}
    ok, skipped = [], {}
    for nid in graph.output_nodes():
        up = graph.upstream(nid)
        bad = sorted(up & placeholders)
        if bad:
            types = ", ".join(graph.nodes[b].type.removeprefix(PLACEHOLDER_PREFIX) for b in bad)
            skipped[nid] = f"depends on placeholder node(s) {', '.join(bad)} ({types})"
        else:
            ok.append(nid)
    return ok, skipped
