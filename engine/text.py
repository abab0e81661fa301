"""Text that came from a file, made safe to print and to write back.

A title may hold terminal control sequences (OSC 52 writes the clipboard, CSI clears the
screen) or a lone surrogate (valid in JSON's `\\ud800`, not in UTF-8, so every later write
of it fails). The first is escaped where Loom prints; the second is refused at load.
"""

from __future__ import annotations

import re
from typing import Any

# C0 but tab and newline, DEL, C1, the bidi embeddings / overrides / isolates, surrogates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_MESSAGE = ("text with a lone surrogate (such as \\ud800), which is not valid "
                     "Unicode, so it could not be saved or printed; remove it")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """`text` with every character that a terminal would act on written as an escape."""
    return _UNSAFE.sub(_escape, str(text))


def json_printable(text: str) -> str:
    """JSON text (as json.dumps writes it) with the same characters escaped as JSON `\\u`
    escapes, so it still parses to the same value. json.dumps escapes C0 itself."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def lone_surrogate(value: Any) -> str | None:
    """Where in a decoded JSON value a string holds a lone surrogate ('nodes[2].title'),
    '' for the value itself, or None when there is none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where
        elif isinstance(item, dict):
            label = where
            if isinstance(item.get("id"), str | int) and not isinstance(item.get("id"), bool):
                label = f"{where} (id {printable(repr(item['id']))})"
            for key, sub in item.items():
                place = f"{label}.{printable(key)}" if label else printable(key)
                if isinstance(key, str) and _SURROGATE.search(key):
                    return place
                stack.append((sub, place))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
    return None
