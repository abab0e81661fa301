"""Prompt weighting and long prompts, the way A1111 and ComfyUI users write them.

`(word)` weighs 1.1, `((word))` 1.21, `[word]` 1/1.1, `(word:1.3)` 1.3; `\\(` is a
literal bracket. Long prompts are cut into 75-token chunks, each encoded on its own
with start and end tokens, and the chunks' embeddings are concatenated.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]"
                    r"|[^\\()\[\]:]+|:")


def parse_weights(text: str) -> list[tuple[str, float]]:
    """'a (red:1.3) [cat]' -> [('a ', 1.0), ('red', 1.3), (' ', 1.0), ('cat', 0.909..)]."""
    res: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, m: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in _TOKEN.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[-1:], 1.0])
        elif tok == "(":
            round_open.append(len(res))
        elif tok == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif tok == ")" and round_open:
            multiply(round_open.pop(), 1.1)
        elif tok == "]" and square_open:
            multiply(square_open.pop(), 1 / 1.1)
        else:
            res.append([tok, 1.0])
    for start in round_open:
        multiply(start, 1.1)
    for start in square_open:
        multiply(start, 1 / 1.1)
    merged: list[list[Any]] = []
    for piece, w in res:
        if merged and merged[-1][1] == w:
            merged[-1][0] += piece
        else:
            merged.append([piece, w])
    return [(p, w) for p, w in merged if p] or [("", 1.0)]


def tokenize_weighted(tokenizer: Any, text: str) -> tuple[list[int], list[float]]:
    ids: list[int] = []
    weights: list[float] = []
    for piece, w in parse_weights(text):
        toks = tokenizer(piece, add_special_tokens=False, truncation=False).input_ids
        ids += toks
        weights += [w] * len(toks)
    return ids, weights


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
    before = z.mean()
    z = z * w
    return z * (before / z.mean())
