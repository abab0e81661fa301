"""Hostile input values: prompt weights, LoRA tensors, lone surrogates, terminal escapes and
sizes that fit every widget's bounds but not the machine."""

import json
import logging
import math
import os
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


# ---- 13. lone surrogates, 14. terminal escapes ------------------------------------------------

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # would set the clipboard
CLEAR = "\x1b[2J\x9b2J\u202e"  # CSI clear screen, its C1 form, a right-to-left override


def _workflow(tmp_path, nodes, links=(), text=None):
    doc = {"format": "loom.workflow", "version": 1, "nodes": nodes, "links": list(links)}
    path = tmp_path / "w.json"
    path.write_text(text if text is not None else json.dumps(doc), encoding="utf-8")
    return path


def _no_controls(*texts):
    for t in texts:
        assert "\x1b" not in t and "\x9b" not in t and "\u202e" not in t and "\x07" not in t


def test_validate_and_run_escape_control_characters_from_the_file(tmp_path):
    nid = "n" + OSC52
    path = _workflow(tmp_path, [
        {"id": nid, "type": "load_image", "title": "Photo" + CLEAR,
         "params": {"path": "missing" + CLEAR + ".png"}},
        {"id": "save", "type": "save_image", "params": {}}],
        [{"from": [nid, "image"], "to": ["save", "images"]}])
    v = loom("validate", path)
    _no_controls(v.stdout, v.stderr)
    assert v.returncode == 0 and "\\x1b]52" not in v.stdout  # nothing wrong to report yet
    r = loom("run", path, "--out", tmp_path / "out", "--no-disk-cache")
    _no_controls(r.stdout, r.stderr)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "n\\x1b]52;c;cm0gLXJmIH4=\\x07" in r.stderr and "Photo\\x1b[2J\\x9b2J\\u202e" in r.stderr
    assert "missing\\x1b[2J" in r.stderr
    bad = _workflow(tmp_path, [{"id": nid, "type": "save_image", "params": {}}])
    v = loom("validate", bad)
    _no_controls(v.stdout, v.stderr)
    assert v.returncode == 2 and f"error: {nid.encode('unicode_escape').decode()}" in v.stdout
    j = loom("validate", bad, "--json")
    _no_controls(j.stdout)
    assert json.loads(j.stdout)[0]["node"] == nid


def test_extract_and_export_keep_json_valid_but_escape_controls(tmp_path):
    from engine.text import json_printable

    text = json.dumps({"t": "a\x7f\x9b\u202eb"}, ensure_ascii=False)
    escaped = json_printable(text)
    _no_controls(escaped)
    assert "\x7f" not in escaped and json.loads(escaped) == json.loads(text)


def test_a_lone_surrogate_is_refused_at_load_naming_node_and_field(tmp_path):
    text = ('{"format": "loom.workflow", "version": 1, "nodes": [{"id": "n", "type": '
            '"string", "title": "t\\ud800", "params": {"value": "x"}}], "links": []}')
    path = _workflow(tmp_path, [], text=text)
    for cmd in (["validate", path], ["export", path], ["run", path, "--no-disk-cache"]):
        r = loom(*cmd)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "nodes[0] (id 'n').title" in r.stderr and "lone surrogate" in r.stderr
    comfy = tmp_path / "c.json"
    comfy.write_text('{"3": {"class_type": "KSampler", "inputs": {"seed": "\\udc80"}}}')
    r = loom("import", comfy, "-o", tmp_path / "out.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "3.inputs.seed" in r.stderr
    assert not (tmp_path / "out.json").exists()
    # a pair that makes one character is fine
    ok = _workflow(tmp_path, [], text=text.replace("\\ud800", "\\ud83d\\ude00"))
    r = loom("validate", ok)
    assert "lone surrogate" not in r.stderr and "no output node" in r.stdout


def test_set_refuses_bytes_that_are_not_utf8(tmp_path):
    path = _workflow(tmp_path, [{"id": "n", "type": "string", "params": {"value": "x"}},
                                {"id": "i", "type": "int", "params": {"value": 1}},
                                {"id": "save", "type": "preview_image", "params": {}}])
    for value in (b"n.value=caf\xe9", b'i.value="\\ud800"'):
        r = subprocess.run([sys.executable.encode(), b"-m", b"app.cli", b"run", bytes(path),
                            b"--no-disk-cache", b"--set", value], capture_output=True,
                           cwd=ROOT, timeout=120)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 2 and "Traceback" not in err, err
        assert "--set" in err and ("UTF-8" in err or "surrogate" in err)


# ---- 15. a total-pixel limit in validation ----------------------------------------------------

def test_sizes_over_the_pixel_limit_are_validation_errors(builtin_registry, monkeypatch):
    from engine import validate

    g = Graph(builtin_registry)
    g.add("empty_latent", "big", width=16384, height=16384, batch_size=2)
    g.add("empty_image", "fine", width=4096, height=4096, batch_size=16)
    w = g.add("int", "w", value=16384)
    g.add("solid_mask", "wired", width=w["value"], height=16384)
    g.add("preview_image", "p")
    found = {p.node: p for p in validate(g) if p.code == "check"}
    assert set(found) == {"big"}
    p = found["big"]
    assert p.input == "width" and p.severity == "error"
    assert p.message.startswith("batch_size x width x height: 2 x 16384 x 16384 = ")
    assert "LOOM_MAX_PIXELS" in p.message
    monkeypatch.setenv("LOOM_MAX_PIXELS", str(16384 * 100))
    found = {p.node for p in validate(g) if p.code == "check"}
    assert found == {"big", "fine", "wired"}  # the wired width comes from an Int primitive


def test_run_refuses_an_image_over_the_limit_before_any_work(tmp_path):
    path = _workflow(tmp_path, [
        {"id": "img", "type": "empty_image", "params": {"width": 2048, "height": 2048}},
        {"id": "save", "type": "save_image", "params": {}}],
        [{"from": ["img", "image"], "to": ["save", "images"]}])
    env = {**os.environ, "LOOM_MAX_PIXELS": "1000000"}
    r = loom("run", path, "--out", tmp_path / "out", "--no-disk-cache", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "img.width: batch_size x width x height: 1 x 2048 x 2048 = 4,194,304" in r.stderr
    assert "LOOM_MAX_PIXELS" in r.stderr and not (tmp_path / "out").exists()
    assert loom("run", path, "--out", tmp_path / "out", "--no-disk-cache").returncode == 0
