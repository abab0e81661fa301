"""Loom's own workflow files (engine.workflow)."""

from __future__ import annotations

from .. import workflow as wf
from ..comfyui.report import Report
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from .source import Format, Reader, Source


def claims(source: Source) -> bool:
    return isinstance(source.doc, dict) and source.doc.get("format") == wf.FORMAT


def read(source: Source, registry: Registry | None, models: ModelPaths | None
         ) -> tuple[Graph, Report | None]:
    # also the reader of last resort for JSON: its errors say what a Loom file would hold
    return wf.from_dict(source.doc, file=source.file, registry=registry), None


READER = Reader(Format.LOOM_JSON, "a Loom workflow", claims, read)
