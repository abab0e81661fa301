"""Prompt weighting as ComfyUI reads it (its default): `(word)` weighs 1.1 times the
enclosing weight, `(word:1.3)` sets 1.3 whatever encloses it, `[word]` is literal text,
`\\(` and `\\)` are literal brackets. Words are tokenized one by one and a word shorter
than 8 tokens is never split across two 75-token chunks; a weighted token's embedding is
moved away from the empty prompt's: z' = (z - z_empty) * w + z_empty.

One linear pass over the text (ComfyUI's recursive parser takes quadratic time and fails on
deep nesting), with ComfyUI's results on every balanced prompt and on stray `)`. A weight
that is not a finite number stays text (ComfyUI would turn `(a:nan)` into NaN), and weights
are clamped to +-WEIGHT_LIMIT."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .prompt import _BIG, WEIGHT_LIMIT, _number, warn_clamped

_ESC_CLOSE, _ESC_OPEN = "\0\1", "\0\2"
MAX_WORD_TOKENS = 8  # ComfyUI's max_word_length: longer words may be split across chunks


def weigh_comfy(text: str, _depth: int = 0, _base: float = 1.0
                ) -> tuple[list[tuple[str, float]], int]:
    """ComfyUI's weighted segments of a prompt, and how many weights were clamped."""
    if _depth == 0:
        text = text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)
    pieces: list[list[Any]] = []  # [start, end, group]
    parent: list[int] = []
    explicit: list[float | None] = []
    stack: list[tuple[int, int]] = []  # (group, index of its "(")
    debt = 0  # stray ")" at the top: ComfyUI's nesting below 0
    last_colon = last_paren = -1
    start = 0

    def flush(end: int) -> None:
        if end > start:
            pieces.append([start, end, stack[-1][0] if stack else -1])

    for i, ch in enumerate(text):
        if ch == "(" and not debt:
            flush(i)
            parent.append(stack[-1][0] if stack else -1)
            explicit.append(None)
            stack.append((len(parent) - 1, i))
            start, last_paren = i + 1, i
        elif ch == "(":
            debt -= 1
        elif ch == ")" and stack:
            flush(i)
            group, opened = stack.pop()
            if last_colon > opened + 1 and last_paren < last_colon:
                weight = _number(text[last_colon + 1:i])
                if weight is not None:
                    explicit[group] = weight
                    if pieces and pieces[-1][2] == group and pieces[-1][1] == i:
                        pieces[-1][1] = last_colon
            start, last_paren = i + 1, i
        elif ch == ")":
            debt += 1
        elif ch == ":":
            last_colon = i
    if stack:  # unclosed: ComfyUI keeps the rest as text unless it ends with ")"
        opened = stack[0][1]
        pieces = [p for p in pieces if p[0] < opened]
        rest = text[opened:]
        tail: list[tuple[str, float]] = [(rest, _base)]
        clamped_tail = 0
        if len(rest) >= 2 and rest.endswith(")") and _depth < 32:
            inner = rest[1:-1]
            colon = inner.rfind(":")
            weight = _number(inner[colon + 1:]) if colon > 0 else None
            if weight is None:
                weight = _base * 1.1
            else:
                inner = inner[:colon]
            tail, clamped_tail = weigh_comfy(inner, _depth + 1, weight)
    else:
        flush(len(text))
        tail, clamped_tail = [], 0
    cum: list[float] = []
    for p, e in zip(parent, explicit, strict=True):
        w = e if e is not None else (cum[p] if p >= 0 else _base) * 1.1
        cum.append(max(-_BIG, min(_BIG, w)))
    out: list[tuple[str, float]] = []
    clamped = clamped_tail
    for s, e, g in pieces:
        w = cum[g] if g >= 0 else _base
        if not -WEIGHT_LIMIT <= w <= WEIGHT_LIMIT:
            w, clamped = math.copysign(WEIGHT_LIMIT, w), clamped + 1
        out.append((text[s:e], w))
    out += tail
    if _depth:
        return out, clamped
    # ComfyUI's segments, unmerged: each is split into words and tokenized on its own
    return [(p.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "("), w) for p, w in out if p], \
        clamped


def tokenize_comfy(tokenizer: Any, text: str, warn: Callable[[str], Any] | None = None
                   ) -> list[list[tuple[int, float]]]:
    """Token groups, one per word, each token with its weight."""
    pieces, clamped = weigh_comfy(text)
    warn_clamped(clamped, warn)
    groups = []
    for piece, w in pieces:
        for word in piece.replace("\n", " ").split(" "):
            if word:
                ids = tokenizer(word, add_special_tokens=False, truncation=False).input_ids
                groups.append([(t, w) for t in ids])
    return groups


def chunks_comfy(tokenizer: Any, groups: list[list[tuple[int, float]]]
                 ) -> list[tuple[list[int], list[float]]]:
    """77-token chunks as ComfyUI fills them: a word that does not fit starts the next chunk
    (the rest padded), unless it is 8 tokens or longer, which is split."""
    size = tokenizer.model_max_length
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    batches: list[list[tuple[int, float]]] = [[(bos, 1.0)]]
    for group in groups:
        large = len(group) >= MAX_WORD_TOKENS
        while group:
            batch = batches[-1]
            if len(group) + len(batch) > size - 1:
                room = size - len(batch) - 1
                if large:
                    batch.extend(group[:room])
                    group = group[room:]
                    batch.append((eos, 1.0))
                else:
                    batch.append((eos, 1.0))
                    batch.extend([(pad, 1.0)] * room)
                batches.append([(bos, 1.0)])
            else:
                batch.extend(group)
                group = []
    last = batches[-1]
    last.append((eos, 1.0))
    last.extend([(pad, 1.0)] * (size - len(last)))
    return [([t for t, _ in b], [w for _, w in b]) for b in batches]


def empty_chunk(tokenizer: Any) -> list[int]:
    return chunks_comfy(tokenizer, [])[0][0]


def apply_weights_comfy(z: Any, weights: list[float], z_empty: Any) -> Any:
    """Move each weighted token's embedding away from the empty prompt's by its weight."""
    import torch

    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=z.dtype, device=z.device).view(1, -1, 1)
    return torch.where(w == 1.0, z, (z - z_empty) * w + z_empty)


def encode_chunks(tokenizer: Any, prompt: str, hidden: Callable[[list[int]], tuple[Any, Any]],
                  weighting: str = "comfyui", warn: Callable[[str], Any] | None = None
                  ) -> tuple[Any, Any]:
    """A prompt through one CLIP in 77-token chunks, weighted ComfyUI's or A1111's way:
    the chunks' hidden states concatenated, and the first chunk's pooled output.
    `hidden(ids)` encodes one chunk: (hidden states, pooled)."""
    import torch

    from .prompt import apply_weights, chunks, tokenize_weighted

    z_empty = None
    if weighting == "comfyui":
        pieces = chunks_comfy(tokenizer, tokenize_comfy(tokenizer, prompt, warn=warn))
        if any(w != 1.0 for _, ws in pieces for w in ws):
            z_empty = hidden(empty_chunk(tokenizer))[0]
    else:
        ids, weights = tokenize_weighted(tokenizer, prompt, warn=warn)
        pieces = chunks(tokenizer, ids, weights)
    parts, first = [], None
    for n, (chunk_ids, chunk_w) in enumerate(pieces):
        z, pool = hidden(chunk_ids)
        if n == 0:
            first = pool
        parts.append(apply_weights_comfy(z, chunk_w, z_empty) if weighting == "comfyui"
                     else apply_weights(z, chunk_w))
    return torch.cat(parts, dim=1), first
