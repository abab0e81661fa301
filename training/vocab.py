"""The demo models' tokenizer: CLIP's byte-level BPE with merges that make each word of the
shapes world one token (any other text still tokenizes, byte by byte). Saved as the
ordinary vocab.json + merges.txt that CLIPTokenizer reads, so it loads like any SD model's."""

from __future__ import annotations

import json
from pathlib import Path

from testing.diffusion import bytes_to_unicode


def bpe(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's merge loop: repeatedly merge the adjacent pair of lowest rank."""
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, _ = min(pairs)
        if rank == 1 << 30:
            break
        a, b = next((parts[i], parts[i + 1]) for r, i in pairs if r == rank)
        out, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges under which every word of `words` becomes a single token: add the merge of
    the first two pieces a word still splits into, until none splits (a fixpoint, since a
    new merge can change how another word splits)."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(10000):
        changed = False
        for w in words:
            parts = bpe(list(w[:-1]) + [w[-1] + "</w>"], ranks)
            if len(parts) > 1:
                pair = (parts[0], parts[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
        if not changed:
            return merges
    raise RuntimeError("merges did not converge")


def write_tokenizer(folder: Path, words: list[str], max_length: int) -> int:
    """Write vocab.json, merges.txt and the tokenizer configs; returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    merges = word_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n"
                                                                  for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
        "do_lower_case": True, **special}, indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    return len(vocab)
