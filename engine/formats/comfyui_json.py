"""ComfyUI's two JSON formats: the API format (an object of nodes with `class_type`) and
the UI format (`nodes` and `links`, as the editor saves)."""

from __future__ import annotations

from ..comfyui.convert import convert
from ..comfyui.reading import is_comfyui, is_ui
from ..comfyui.report import Report
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from .source import Format, Reader, Source


def read(source: Source, registry: Registry | None, models: ModelPaths | None
         ) -> tuple[Graph, Report | None]:
    return convert(source.doc, registry=registry, models=models, file=source.file)


def _api(source: Source) -> bool:
    return is_comfyui(source.doc) and not is_ui(source.doc)


def _ui(source: Source) -> bool:
    return is_comfyui(source.doc) and is_ui(source.doc)


API = Reader(Format.COMFYUI_API, "a ComfyUI workflow", _api, read)
UI = Reader(Format.COMFYUI_UI, "a ComfyUI workflow", _ui, read)
