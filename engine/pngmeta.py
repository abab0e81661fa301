"""Read and write PNG text chunks without any imaging library: workflow files travel
inside output PNGs, and reading them must stay cheap and safe."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORKFLOW_KEY = "loom.workflow"


class NotPNG(ValueError):
    pass


def read_text(path: str | Path, limit: int = 64 << 20) -> dict[str, str]:
    """All tEXt, zTXt and iTXt chunks of a PNG file as {keyword: text}."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise NotPNG(f"{path} is not a PNG file")
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + length]
        pos += 12 + length
        if ctype == b"IEND":
            break
        try:
            if ctype == b"tEXt":
                key, _, text = body.partition(b"\0")
                out[key.decode("latin-1")] = text.decode("latin-1")
            elif ctype == b"zTXt":
                key, _, rest = body.partition(b"\0")
                out[key.decode("latin-1")] = _inflate(rest[1:], limit).decode("latin-1")
            elif ctype == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, _method = rest[0], rest[1]
                _lang, _, rest = rest[2:].partition(b"\0")
                _tkey, _, text = rest.partition(b"\0")
                raw = _inflate(text, limit) if compressed else text
                out[key.decode("latin-1")] = raw.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue  # a damaged chunk is skipped, the rest still read
    return out


def _inflate(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, limit)
    if d.unconsumed_tail:
        raise zlib.error("text chunk too large")
    return out


def itxt_chunk(key: str, text: str) -> bytes:
    """A compressed iTXt chunk (UTF-8 safe)."""
    # keyword, NUL, compressed flag 1, method 0, empty language tag and translated keyword
    body = key.encode("latin-1") + b"\0\1\0\0\0" + zlib.compress(text.encode("utf-8"), 9)
    crc = zlib.crc32(b"iTXt" + body)
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", crc)
