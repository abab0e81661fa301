"""One door for workflow files: any supported file -> a Loom graph, the report of what was
carried over (None for Loom's own files), and the format it was read as.

    opened = formats.open_file("image.png", models=folders)
    opened.graph, opened.report, opened.format

The format is told from the content, not the name: a PNG by its signature and then by its
text chunks (Loom's workflow, ComfyUI's workflow or prompt, A1111's parameters, in that
order), anything else as JSON (Loom's format, ComfyUI's API or UI format). One reader
module per format; each claims a source and reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..comfyui.report import Report
from ..errors import WorkflowError
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from . import a1111_png, comfyui_json, comfyui_png, loom_json, loom_png
from .source import Format, Reader, Source, read_source

PNG_READERS = (loom_png.READER, comfyui_png.READER, a1111_png.READER)
JSON_READERS = (loom_json.READER, comfyui_json.API, comfyui_json.UI)


@dataclass(frozen=True)
class Opened:
    graph: Graph
    report: Report | None  # what a conversion carried; None for Loom's own files
    format: Format


def reader_for(source: Source) -> Reader | None:
    readers = PNG_READERS if source.chunks is not None else JSON_READERS
    return next((r for r in readers if r.claims(source)), None)


def open_file(path: str | os.PathLike[str], registry: Registry | None = None,
              models: ModelPaths | None = None) -> Opened:
    """Raises WorkflowError, naming the file, for anything that is not a supported format."""
    source = read_source(path)
    reader = reader_for(source)
    if reader is None and source.chunks is None:
        reader = loom_json.READER  # its errors say what a workflow file should hold
    if reader is None:
        raise WorkflowError(source.file, "", "this PNG holds no workflow (neither Loom's nor "
                            "ComfyUI's, nor A1111 generation parameters)")
    graph, report = reader.read(source, registry, models)
    graph.base_dir = source.path.resolve().parent
    return Opened(graph, report, reader.format)


def detect(path: str | os.PathLike[str]) -> Format | None:
    """The format a file would open as, or None for a file that is none of them."""
    try:
        reader = reader_for(read_source(path))
    except WorkflowError:
        return None
    return reader.format if reader is not None else None


def embedded_workflow(path: str | os.PathLike[str]) -> str:
    """The Loom workflow text a PNG carries, as it was written."""
    source = read_source(path, png_only=True)
    reader = reader_for(source)
    if reader is loom_png.READER:
        return loom_png.text(source)
    if reader is None:
        raise WorkflowError(source.file, "", "this PNG holds no workflow")
    raise WorkflowError(source.file, "", f"this PNG holds {reader.what}, not a Loom one")


__all__ = ["Format", "Opened", "detect", "embedded_workflow", "open_file", "reader_for"]
