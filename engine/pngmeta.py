"""PNG text chunks: workflow files travel inside output PNGs. Reading needs no imaging
library and must stay cheap and safe; writing goes through Pillow's `PngInfo`.

Reading streams the file chunk by chunk (image data is skipped, never read), decodes only
the text chunks Loom uses, and inflates them through a bounded zlib stream with one budget
for the whole file, so a PNG of compressed text bombs costs at most `TEXT_LIMIT` bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .fsutil import IMAGE_LIMIT, open_user_file

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORKFLOW_KEY = "loom.workflow"
# Loom's own workflow, ComfyUI's prompt and workflow, A1111's generation parameters.
TEXT_KEYS = (WORKFLOW_KEY, "workflow", "prompt", "parameters")
TEXT_LIMIT = 64 << 20  # text read from one PNG, all chunks together, after inflating
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")
_KEYWORD_MAX = 80  # a keyword is 1-79 bytes and its NUL
_MAX_CHUNKS = 1 << 20  # far more than a 1 GiB PNG has; a file of empty chunks stops here


class NotPNG(ValueError):
    pass


def read_text(path: str | Path, keys: Iterable[str] = TEXT_KEYS,
              limit: int = TEXT_LIMIT) -> dict[str, str]:
    """The tEXt, zTXt and iTXt chunks named in `keys` of a PNG file, as {keyword: text}.
    Chunks that are damaged, or would take the text past `limit` bytes, are skipped."""
    wanted = {k.encode("latin-1") for k in keys}
    with open_user_file(path, "PNG file", IMAGE_LIMIT) as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise NotPNG(f"{path} is not a PNG file")
        return _Reader(f, wanted, limit).read()


class _Reader:
    def __init__(self, f: BinaryIO, wanted: set[bytes], limit: int):
        self.f, self.wanted, self.budget = f, wanted, limit

    def read(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for _ in range(_MAX_CHUNKS):
            head = self.f.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IEND":
                break
            end = self.f.tell() + length + 4  # the body, then its CRC
            if ctype in _TEXT_TYPES:
                item = self._chunk(ctype, length)
                if item is not None:
                    out[item[0]] = item[1]
            self.f.seek(end)
        return out

    def _chunk(self, ctype: bytes, length: int) -> tuple[str, str] | None:
        start = self.f.read(min(length, _KEYWORD_MAX))
        key, nul, _ = start.partition(b"\0")
        if not nul or key not in self.wanted or length > self.budget:
            return None
        body = start + self.f.read(length - len(start))
        self.budget -= len(body)
        rest = body[len(key) + 1:]
        try:
            if ctype == b"tEXt":
                return key.decode("latin-1"), rest.decode("latin-1")
            if ctype == b"zTXt":
                return key.decode("latin-1"), self._inflate(rest[1:]).decode("latin-1")
            compressed = rest[0]
            _lang, _, rest = rest[2:].partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            raw = self._inflate(text) if compressed else text
            return key.decode("latin-1"), raw.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            return None  # a damaged or oversized chunk is skipped, the rest still read

    def _inflate(self, data: bytes) -> bytes:
        d = zlib.decompressobj()
        out = d.decompress(data, max(self.budget, 1))
        self.budget -= len(out)  # what was inflated counts, even when the chunk is dropped
        if d.unconsumed_tail:
            raise zlib.error("text chunk too large")
        return out


def png_info(texts: dict[str, str]) -> PngInfo:
    """Pillow's `PngInfo` holding `texts` as compressed iTXt chunks (UTF-8 safe), for
    `Image.save(..., pnginfo=...)`."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in texts.items():
        info.add_itxt(key, text, zip=True)
    return info
