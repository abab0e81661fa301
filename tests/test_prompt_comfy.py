"""Prompt weights as ComfyUI computes them: its parser (written out below from ComfyUI's
sd1_clip.py, recursive) and ours (one pass) agree on any prompt; weights never turn into
inf or NaN; long prompts chunk by words."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.diffusion.prompt import WEIGHT_LIMIT
from nodes.diffusion.prompt_comfy import apply_weights_comfy, chunks_comfy, weigh_comfy


def comfy_parse_parentheses(string):
    result, current, nesting = [], "", 0
    for char in string:
        if char == "(":
            if nesting == 0:
                if current:
                    result.append(current)
                current = "("
            else:
                current += char
            nesting += 1
        elif char == ")":
            nesting -= 1
            if nesting == 0:
                result.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        result.append(current)
    return result


def comfy_token_weights(string, weight):
    out = []
    for x in comfy_parse_parentheses(string):
        w = weight
        if len(x) >= 2 and x[-1] == ")" and x[0] == "(":
            x = x[1:-1]
            xx = x.rfind(":")
            w *= 1.1
            if xx > 0:
                try:
                    w = float(x[xx + 1:])
                    x = x[:xx]
                except ValueError:
                    pass
            out += comfy_token_weights(x, w)
        else:
            out += [(x, weight)]
    return out


def comfy(text):
    text = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    return [(p.replace("\0\1", ")").replace("\0\2", "("), w)
            for p, w in comfy_token_weights(text, 1.0) if p]


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="()[]:ab .1\\", max_size=40))
def test_same_segments_and_weights_as_comfyui_s_parser(text):
    want = [(p, max(-WEIGHT_LIMIT, min(WEIGHT_LIMIT, w))) for p, w in comfy(text)]
    got, _ = weigh_comfy(text)
    assert [p for p, _ in got] == [p for p, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want], rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("a (red:1.3) [cat]", [("a ", 1.0), ("red", 1.3), (" [cat]", 1.0)]),
    ("((a:1.2)) ((b))", [("a", 1.2), (" ", 1.0), ("b", pytest.approx(1.21))]),
    (r"\(x\) (y)", [("(x) ", 1.0), ("y", 1.1)]),
])
def test_comfyui_weights(text, expected):
    assert weigh_comfy(text)[0] == expected


def test_non_finite_weights_are_text_and_deep_nesting_is_linear():
    assert weigh_comfy("(a:nan) (b:inf)")[0] == [("a:nan", 1.1), (" ", 1.0), ("b:inf", 1.1)]
    n = 20000
    start = time.perf_counter()
    pieces, clamped = weigh_comfy("(" * n + "x" + ")" * n)
    assert time.perf_counter() - start < 2
    assert pieces == [("x", WEIGHT_LIMIT)] and clamped == 1
    assert weigh_comfy("(" + "(" * n + "x" + ")" * n + ":0)")[0] == [("x", 0.0)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="()[]:\\ab .1-+e9", max_size=3000))
def test_any_prompt_parses_fast_to_finite_clamped_weights(text):
    start = time.perf_counter()
    pieces, _ = weigh_comfy(text)
    assert time.perf_counter() - start < 1
    assert all(math.isfinite(w) and abs(w) <= WEIGHT_LIMIT for _, w in pieces)


def test_weighting_moves_away_from_the_empty_prompt_and_stays_finite():
    z = torch.zeros(1, 3, 2)  # embeddings of mean 0: A1111's normalisation divides by it
    z[0, 1] = torch.tensor([1.0, -1.0])
    empty = torch.full((1, 3, 2), 0.5)
    out = apply_weights_comfy(z, [1.0, 2.0, 1.0], empty)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 0], z[0, 0]) and torch.equal(out[0, 2], z[0, 2])
    assert torch.allclose(out[0, 1], (z[0, 1] - 0.5) * 2 + 0.5)


class Tok:
    model_max_length, bos_token_id, eos_token_id, pad_token_id = 77, 1, 2, 2


def test_a_word_is_not_split_across_chunks_unless_long():
    groups = [[(10, 1.0)] * 5] * 15  # 75 tokens of 5-token words: exactly one chunk
    assert len(chunks_comfy(Tok, groups)) == 1
    groups = [[(10, 1.0)] * 4] + [[(11, 1.0)] * 5] * 15  # 79: the 16th word moves on
    first, second = chunks_comfy(Tok, groups)
    assert len(first[0]) == len(second[0]) == 77
    assert first[0][:2] == [1, 10] and first[0][1 + 4 + 70] == 2  # end after 14 words
    assert second[0][1:6] == [11] * 5
    long = [[(12, 1.0)] * 80]  # a word of 80 tokens is split
    a, b = chunks_comfy(Tok, long)
    assert a[0][1:76] == [12] * 75 and b[0][1:6] == [12] * 5
