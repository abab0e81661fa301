"""What every reader starts from: a file read once and told apart by its content. A PNG
(by its signature, whatever its name) gives its text chunks; anything else is UTF-8 JSON."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..comfyui.report import Report
from ..errors import WorkflowError
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry


class Format(StrEnum):
    LOOM_JSON = "loom-json"
    LOOM_PNG = "loom-png"
    COMFYUI_API = "comfyui-api"
    COMFYUI_UI = "comfyui-ui"
    COMFYUI_PNG = "comfyui-png"
    A1111_PNG = "a1111-png"


@dataclass(frozen=True)
class Source:
    path: Path
    chunks: dict[str, str] | None = None  # a PNG's text chunks (engine.pngmeta.TEXT_KEYS)
    doc: Any = None  # any other file: its parsed JSON

    @property
    def file(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Reader:
    """One format: whether a source is in it (from its content), and how it becomes a graph
    (with the report of what was carried, or None for Loom's own files)."""

    format: Format
    what: str  # for messages: "this PNG holds <what>"
    claims: Callable[[Source], bool]
    read: Callable[[Source, Registry | None, ModelPaths | None], tuple[Graph, Report | None]]


def read_source(path: str | os.PathLike[str], png_only: bool = False) -> Source:
    from ..fsutil import WORKFLOW_LIMIT, open_user_file, read_user_file
    from ..pngmeta import NotPNG, read_text
    from ..workflow import parse_json

    path = Path(path)
    try:
        with open_user_file(path, "workflow file") as f:
            head = f.read(8)
        png = head.startswith(b"\x89PNG")
        if not png and (png_only or path.suffix.lower() == ".png"
                        and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"["))):
            raise WorkflowError(str(path), "", f"cannot read a PNG: {path} is not a PNG file")
        data = b"" if png else read_user_file(path, "workflow file", WORKFLOW_LIMIT)
    except OSError as exc:
        raise WorkflowError(str(path), "", f"cannot read the file ({exc.strerror or exc})") \
            from None
    if png:
        try:
            return Source(path, chunks=read_text(path))
        except (OSError, NotPNG) as exc:
            raise WorkflowError(str(path), "", f"cannot read a PNG: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkflowError(str(path), f"byte {exc.start}", "not UTF-8 text") from None
    return Source(path, doc=parse_json(text, str(path)))
