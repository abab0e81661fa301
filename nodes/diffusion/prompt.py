"""Prompt weighting and long prompts, the way A1111 and ComfyUI users write them.

`(word)` weighs 1.1, `((word))` 1.21, `[word]` 1/1.1, `(word:1.3)` 1.3; `\\(` is a
literal bracket. A weight that is not a number (`(red:1.2.3)`) stays text, and the product
of a word's weights is clamped to [-WEIGHT_LIMIT, WEIGHT_LIMIT]. Long prompts are cut into
75-token chunks, each encoded on its own with start and end tokens, and the chunks'
embeddings are concatenated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

WEIGHT_LIMIT = 10.0  # about 24 nested brackets; beyond it a word only drowns the rest
_MEAN_EPS = 1e-3  # below this fraction of the mean |value|, the mean is taken as 0
_BIG = 1e300  # running products stay finite, so a later weight of 0 gives 0, not NaN

_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]"
                    r"|[^\\()\[\]:]+|:")


class _Brackets:
    """One kind of bracket. Its ranges nest (a stack), so they form a tree: a piece's
    weight is the product along its innermost bracket's path, found in one pass."""

    def __init__(self, unclosed: float):
        self.unclosed = unclosed
        self.parent: list[int] = []
        self.factor: list[float] = []
        self.open: list[int] = []

    def current(self) -> int:
        return self.open[-1] if self.open else -1

    def push(self) -> None:
        self.parent.append(self.current())
        self.factor.append(self.unclosed)
        self.open.append(len(self.factor) - 1)

    def close(self, factor: float) -> None:
        self.factor[self.open.pop()] = factor

    def products(self) -> list[float]:
        cum: list[float] = []
        for parent, f in zip(self.parent, self.factor):
            cum.append(max(-_BIG, min(_BIG, (cum[parent] if parent >= 0 else 1.0) * f)))
        return cum


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def weigh(text: str) -> tuple[list[tuple[str, float]], int]:
    """The weighted pieces of a prompt, and how many weights were clamped."""
    pieces: list[tuple[str, int, int]] = []  # text, innermost round, innermost square
    round_, square = _Brackets(1.1), _Brackets(1 / 1.1)

    def add(piece: str) -> None:
        pieces.append((piece, round_.current(), square.current()))

    for m in _TOKEN.finditer(text):
        tok, raw = m.group(0), m.group(1)
        weight = _number(raw) if raw is not None else None
        if tok.startswith("\\"):
            add(tok[-1:])
        elif tok == "(":
            round_.push()
        elif tok == "[":
            square.push()
        elif weight is not None and round_.open:
            round_.close(weight)
        elif raw is not None and round_.open:  # not a number: text, then a plain ")"
            add(tok[:-1])
            round_.close(1.1)
        elif tok == ")" and round_.open:
            round_.close(1.1)
        elif tok == "]" and square.open:
            square.close(1 / 1.1)
        else:
            add(tok)
    rounds, squares = round_.products(), square.products()
    merged: list[list[Any]] = []
    clamped = 0
    for piece, r, s in pieces:
        w = (rounds[r] if r >= 0 else 1.0) * (squares[s] if s >= 0 else 1.0)
        if not -WEIGHT_LIMIT <= w <= WEIGHT_LIMIT:
            w = math.copysign(WEIGHT_LIMIT, w)
            clamped += 1
        if merged and merged[-1][1] == w:
            merged[-1][0] += piece
        else:
            merged.append([piece, w])
    return [(p, w) for p, w in merged if p] or [("", 1.0)], clamped


def parse_weights(text: str) -> list[tuple[str, float]]:
    """'a (red:1.3) [cat]' -> [('a ', 1.0), ('red', 1.3), (' ', 1.0), ('cat', 0.909..)]."""
    return weigh(text)[0]


def tokenize_weighted(tokenizer: Any, text: str, warn: Callable[[str], Any] | None = None
                      ) -> tuple[list[int], list[float]]:
    ids: list[int] = []
    weights: list[float] = []
    pieces, clamped = weigh(text)
    warn_clamped(clamped, warn)
    for piece, w in pieces:
        toks = tokenizer(piece, add_special_tokens=False, truncation=False).input_ids
        ids += toks
        weights += [w] * len(toks)
    return ids, weights


def warn_clamped(clamped: int, warn: Callable[[str], Any] | None) -> None:
    if clamped and warn is not None:
        warn(f"{clamped} part(s) of the prompt weigh more than {WEIGHT_LIMIT:g} (or less than "
             f"-{WEIGHT_LIMIT:g}); clamped to that")


def chunks(tokenizer: Any, ids: list[int], weights: list[float]
           ) -> list[tuple[list[int], list[float]]]:
    """75-token windows, each wrapped in start/end tokens and padded to 77."""
    size = tokenizer.model_max_length - 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = []
    for start in range(0, max(len(ids), 1), size):
        part, w = ids[start: start + size], weights[start: start + size]
        fill = size - len(part)
        out.append(([bos] + part + [eos] + [pad] * fill, [1.0] + w + [1.0] + [1.0] * fill))
    return out


def apply_weights(z: Any, weights: list[float]) -> Any:
    """Scale token embeddings by their weights, then restore the chunk's mean (A1111)."""
    import torch

    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=z.dtype, device=z.device).view(1, -1, 1)
    before = z.float().mean()
    z = z * w
    after = z.float().mean()
    # A mean near 0 (relative to the values) would make the ratio huge, inf or NaN.
    if not abs(after) > _MEAN_EPS * z.float().abs().mean():
        return z
    return z * (before / after).to(z.dtype)
