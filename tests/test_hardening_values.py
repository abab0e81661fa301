"""Hostile input values: prompt weights, LoRA tensors, lone surrogates, terminal escapes and
sizes that fit every widget's bounds but not the machine."""

import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Graph
from nodes.diffusion.prompt import WEIGHT_LIMIT, apply_weights, parse_weights, weigh

ROOT = Path(__file__).resolve().parent.parent
LOOM = [sys.executable, "-m", "app.cli"]


def loom(*args, **kw):
    return subprocess.run([*LOOM, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, **kw)


# ---- 11. prompt weights ----------------------------------------------------------------------

def test_deeply_nested_prompt_parses_in_linear_time_with_clamped_weights():
    n = 8000  # the quadratic parser took minutes on this
    text = "(a " * n + ")" * n
    start = time.perf_counter()
    pieces, clamped = weigh(text)
    assert time.perf_counter() - start < 2
    assert "".join(p for p, _ in pieces) == "a " * n
    assert all(math.isfinite(w) and abs(w) <= WEIGHT_LIMIT for _, w in pieces)
    assert pieces[0][1] == pytest.approx(1.1) and pieces[-1][1] == WEIGHT_LIMIT and clamped


@pytest.mark.parametrize("depth", [800, 20000])
def test_nesting_beyond_float_range_clamps_and_a_zero_weight_stays_zero(depth):
    assert parse_weights("(" * depth + "x" + ")" * depth) == [("x", WEIGHT_LIMIT)]
    assert parse_weights("[" * depth + "x" + "]" * depth) == [("x", pytest.approx(1.1 ** -depth))]
    # 1.1 ** 20000 is inf as a float; inf * 0 would be NaN
    assert parse_weights("(" + "(" * depth + "x" + ")" * depth + ":0)") == [("x", 0.0)]


@pytest.mark.parametrize("text, expected", [
    ("(red:1.2.3)", [("red:1.2.3", 1.1)]),
    ("a (red:.) b", [("a ", 1.0), ("red:.", 1.1), (" b", 1.0)]),
    ("(red:" + "9" * 400 + ")", [("red:" + "9" * 400, 1.1)]),  # float() says inf
    ("(red:-50)", [("red", -WEIGHT_LIMIT)]),
])
def test_a_weight_that_is_not_a_finite_number_is_text(text, expected):
    assert parse_weights(text) == expected


def test_normal_prompts_keep_their_weights():
    assert parse_weights("a (red:1.3) [cat]") == [("a ", 1.0), ("red", 1.3), (" ", 1.0),
                                                  ("cat", 1 / 1.1)]
    assert parse_weights("((a)) (b") == [("a", pytest.approx(1.21)), (" ", 1.0), ("b", 1.1)]
    assert parse_weights(r"\(x\) (a [b) c]") == [("(x) ", 1.0), ("a ", 1.1), ("b", 1.0),
                                                 (" c", 1 / 1.1)]


_word = st.text(alphabet="abc ,", max_size=6)


def _group(inner):
    number = st.floats(0, 3).map(lambda x: f"{x:.2f}")
    return st.one_of(
        inner.map(lambda t: ("(" + t[0] + ")", [(c, w * 1.1) for c, w in t[1]])),
        inner.map(lambda t: ("[" + t[0] + "]", [(c, w / 1.1) for c, w in t[1]])),
        st.tuples(inner, number).map(lambda t: (
            "(" + t[0][0] + ":" + t[1] + ")", [(c, w * float(t[1])) for c, w in t[0][1]])),
    )


_prompt = st.recursive(_word.map(lambda s: (s, [(c, 1.0) for c in s])), _group, max_leaves=12)
_prompts = st.lists(_prompt, max_size=5).map(
    lambda parts: ("".join(p for p, _ in parts), [cw for _, cws in parts for cw in cws]))


@settings(max_examples=300, deadline=None)
@given(_prompts)
def test_well_formed_prompts_keep_their_text_and_weights(case):
    text, expected = case
    got = [(c, w) for piece, w in parse_weights(text) for c in piece]
    assert "".join(c for c, _ in got) == "".join(c for c, _ in expected)
    for (_, w), (_, want) in zip(got, expected):
        assert w == pytest.approx(max(-WEIGHT_LIMIT, min(WEIGHT_LIMIT, want)), rel=1e-9, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="()[]:\\ab .1-+e9", max_size=3000))
def test_any_prompt_parses_fast_to_finite_clamped_weights(text):
    start = time.perf_counter()
    pieces = parse_weights(text)
    assert time.perf_counter() - start < 1
    assert all(math.isfinite(w) and abs(w) <= WEIGHT_LIMIT for _, w in pieces)


def test_weight_normalisation_survives_a_zero_mean():
    z = torch.tensor([[[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]]])  # mean exactly 0
    out = apply_weights(z, [1.0, 1.5, 1.0])
    assert torch.isfinite(out).all()
    assert torch.equal(out, z * torch.tensor([1.0, 1.5, 1.0]).view(1, -1, 1))
    ordinary = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out = apply_weights(ordinary, [1.0, 2.0])
    assert out.mean().item() == pytest.approx(ordinary.mean().item())


def test_text_encode_warns_on_a_clamped_weight_and_stays_finite(model_executor, caplog):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
    text = "a " + "(" * 900 + "red" + ")" * 900 + " (circle:1.2.3)"
    g.add("text_encode", "t", clip=ck["clip"], text=text)
    with caplog.at_level(logging.WARNING, logger="loom.node"):
        r = model_executor.run(g, ["t"])
    assert r.ok, r.failures
    assert torch.isfinite(r["t"]["conditioning"].embeds).all()
    assert any("clamped" in rec.getMessage() for rec in caplog.records)


# ---- 12. LoRA tensors ------------------------------------------------------------------------

KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


@pytest.mark.parametrize("name, edit, why", [
    ("nan", lambda sd: sd[KEY + ".lora_down.weight"].__setitem__((0, 0), math.nan), "NaN"),
    ("inf-alpha", lambda sd: sd.__setitem__(KEY + ".alpha", torch.tensor(math.inf)),
     "alpha should be one finite number"),
    ("flat", lambda sd: sd.__setitem__(KEY + ".lora_up.weight", torch.ones(8)), "2-D or 4-D"),
    ("rank", lambda sd: sd.__setitem__(KEY + ".lora_up.weight",
                                      sd[KEY + ".lora_up.weight"][:, :2].contiguous()),
     "does not match"),
])
def test_a_malformed_lora_is_refused_at_load_naming_file_and_layer(tiny_models, tmp_path,
                                                                   name, edit, why):
    from safetensors.torch import load_file, save_file

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    sd = load_file(tiny_models / "loras" / "tiny-lora.safetensors")
    edit(sd)
    (tmp_path / "loras").mkdir()
    save_file(sd, tmp_path / "loras" / f"{name}.safetensors")
    folders = ModelFolders([tiny_models, tmp_path], use_env=False, use_config=False)
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
    g.add("load_lora", "lo", model=ck["model"], clip=ck["clip"],
          lora_name=f"{name}.safetensors", strength_model=1.0, strength_clip=1.0)
    r = Executor(models=ModelManager(paths=folders)).run(g, ["lo"])
    f = r.failures["lo"]
    assert f.input == "lora_name" and f"{name}.safetensors" in f.message
    assert KEY in f.message and why in f.message
