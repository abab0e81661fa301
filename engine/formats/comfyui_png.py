"""PNGs that ComfyUI saved: the UI-format `workflow` chunk, else the API-format `prompt`."""

from __future__ import annotations

from typing import Any

from ..comfyui.convert import convert
from ..comfyui.reading import is_comfyui
from ..comfyui.report import Report
from ..errors import WorkflowError
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from .source import Format, Reader, Source

KEYS = ("workflow", "prompt")  # in order of preference: the UI format keeps more


def claims(source: Source) -> bool:
    return source.chunks is not None and any(k in source.chunks for k in KEYS)


def document(source: Source) -> Any:
    """The parsed ComfyUI document the PNG carries."""
    from ..workflow import parse_json

    chunks = source.chunks or {}
    for key in KEYS:
        if key in chunks:
            doc = parse_json(chunks[key], f"{source.file} ({key} chunk)")
            if is_comfyui(doc):
                return doc
    raise WorkflowError(source.file, "", "this PNG carries no ComfyUI workflow (no "
                        "'workflow' or 'prompt' text chunk)")


def read(source: Source, registry: Registry | None, models: ModelPaths | None
         ) -> tuple[Graph, Report | None]:
    return convert(document(source), registry=registry, models=models, file=source.file)


READER = Reader(Format.COMFYUI_PNG, "a ComfyUI workflow", claims, read)
