"""PNGs that Loom saved: the workflow in their `loom.workflow` text chunk."""

from __future__ import annotations

from .. import workflow as wf
from ..comfyui.report import Report
from ..graph import Graph
from ..pngmeta import WORKFLOW_KEY
from ..protocols import ModelPaths
from ..registry import Registry
from .source import Format, Reader, Source


def claims(source: Source) -> bool:
    return source.chunks is not None and WORKFLOW_KEY in source.chunks


def text(source: Source) -> str:
    assert source.chunks is not None
    return source.chunks[WORKFLOW_KEY]


def read(source: Source, registry: Registry | None, models: ModelPaths | None
         ) -> tuple[Graph, Report | None]:
    return wf.loads(text(source), file=source.file, registry=registry), None


READER = Reader(Format.LOOM_PNG, "a Loom workflow", claims, read)
