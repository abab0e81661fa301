"""Text encoders from their own files (CLIP-L, CLIP-G, T5; fp16, fp8, ComfyUI's scaled fp8)
and the Flux / SD3.5 encodings, against transformers' models and diffusers' pipelines."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine import Executor, Graph, validate
from engine.comfyui import convert
from engine.graph import OutRef
from engine.modelpaths import ModelFolders
from engine.runtime.models import ModelManager

pytestmark = pytest.mark.slow

PROMPT = "a photo of a (red:1.3) cat on a mat"
FILES = {"clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5xxl"}
VARIANTS = ("", "_fp8_e4m3fn", "_fp8_e4m3fn_scaled")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from testing.text_encoders import write_text_encoders

    root = tmp_path_factory.mktemp("tenc")
    return root, write_text_encoders(root)


@pytest.fixture
def executor(encoders):
    manager = ModelManager(paths=ModelFolders([encoders[0]], use_env=False, use_config=False))
    return Executor(models=manager)


def ctx_of(executor):
    return SimpleNamespace(models=executor.models, log=logging.getLogger("test"),
                           check_cancelled=lambda: None)


def run(executor, graph, node):
    r = executor.run(graph, targets=[node])
    assert r.ok, r.failures
    return r[node]


def loaded(executor, *files, clip_type="sd3"):
    """The encoders behind a loader node, read through the node path."""
    from nodes.diffusion.text_encoders import components

    g = Graph()
    if len(files) == 1:
        g.add("load_text_encoder", "te", clip_name=files[0], clip_type=clip_type)
    else:
        g.add("load_dual_text_encoders", "te", clip_name1=files[0], clip_name2=files[1],
              clip_type=clip_type)
    ref = run(executor, g, "te")["clip"]
    return ref, components(ctx_of(executor), ref)


def _state(model):
    """A module's weights by their file names, fp8 ones widened (and scaled)."""
    out = {}
    for name, mod in model.named_modules():
        if "parametrizations" in name:
            continue
        for pname, p in mod.named_parameters(recurse=False):
            out[f"{name}.{pname}".lstrip(".")] = p
        if hasattr(mod, "parametrizations"):
            out[f"{name}.weight"] = mod.weight
    return out


def test_inferred_configs_equal_the_built_ones(encoders):
    from nodes.diffusion.text_encoders import clip_config, t5_config
    from nodes.diffusion.weights import open_weights
    from testing.text_encoders import tiny_configs

    root = encoders[0] / "text_encoders"
    built = tiny_configs()
    fields = {"clip": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "max_position_embeddings", "hidden_act",
                       "projection_dim"),
              "t5": ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "feed_forward_proj", "is_gated_act",
                     "dense_act_fn")}
    for role, stem in FILES.items():
        for variant in VARIANTS:
            w = open_weights(root / f"{stem}{variant}.safetensors")
            shapes = {k: w.shape(k) for k in w}
            got = t5_config(shapes) if role == "t5" else clip_config(shapes, role)
            for f in fields["t5" if role == "t5" else "clip"]:
                assert getattr(got, f) == getattr(built[role], f), (role, variant, f)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("role", sorted(FILES))
def test_every_file_loads_each_weight_and_no_other(encoders, executor, role, variant):
    """fp16: the weights exactly. fp8: within e4m3's rounding (3 mantissa bits: half a step
    is 1/16 of the value; below the smallest normal, half the subnormal step 2^-10),
    times the file's scale."""
    from safetensors.torch import load_file

    root, models = encoders
    name = f"{FILES[role]}{variant}.safetensors"
    # a CLIP this narrow is taken for CLIP-L unless a narrower one comes with it
    _, enc = loaded(executor, *(["clip_l.safetensors"] if role == "clip_g" else []), name)
    model = enc.parts[role]
    want = {k: v for k, v in models[role].state_dict().items()
            if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"}
    got = _state(model)
    assert set(got) == set(want)
    file = load_file(str(root / "text_encoders" / name))
    for k, ref in want.items():
        g = got[k].float()
        if file[k].dtype == torch.float16:  # the reference models hold fp16 values
            assert torch.equal(g, ref), k
            continue
        scale = file.get(k[:-len("weight")] + "scale_weight", torch.tensor(1.0)).float()
        bound = torch.maximum(ref.abs() / 16, scale * 2.0 ** -10) + 1e-7
        assert ((g - ref).abs() <= bound).all(), k
    stored = {p.dtype for n, p in model.named_parameters() if n.endswith(".original")}
    assert stored == (set() if variant == "" else {torch.float8_e4m3fn})  # kept fp8


def test_open_clip_layout_loads_as_the_same_encoder(encoders, executor):
    from safetensors.torch import save_file

    from testing.text_encoders import state_dicts, to_open_clip

    root, models = encoders
    save_file(to_open_clip(state_dicts(models["clip_g"])["fp16"]),
              str(root / "text_encoders" / "open_clip_g.safetensors"))
    _, enc = loaded(executor, "clip_l.safetensors", "open_clip_g.safetensors")
    want = {k: v for k, v in models["clip_g"].state_dict().items() if "position_ids" not in k}
    got = {k: v for k, v in enc.parts["clip_g"].state_dict().items() if "position_ids" not in k}
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)


def test_a_file_with_a_stray_or_missing_tensor_is_refused(encoders, executor, tmp_path):
    from safetensors.torch import load_file, save_file

    root = encoders[0] / "text_encoders"
    sd = load_file(str(root / "t5xxl.safetensors"))
    save_file({**sd, "encoder.block.0.extra.weight": torch.zeros(2)},
              str(root / "t5_stray.safetensors"))
    sd.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight")
    save_file(sd, str(root / "t5_short.safetensors"))
    for name, says in (("t5_stray", "encoder.block.0.extra.weight"),
                       ("t5_short", "1 weights missing")):
        g = Graph()
        g.add("load_text_encoder", "te", clip_name=f"{name}.safetensors", clip_type="sd3")
        r = executor.run(g, targets=["te"])
        msg = str(r.failures["te"].message)
        assert not r.ok and "clip_name" in msg and name in msg and says in msg, msg


def test_t5_in_fp16_keeps_its_output_projection_in_fp32(encoders):
    """As transformers does (T5's feed-forward output overflows fp16); fp8 ones too."""
    from nodes.diffusion.text_encoders import load_encoder

    root = encoders[0] / "text_encoders"
    for name in ("t5xxl.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors"):
        model = load_encoder(root / name, "t5", torch.float16, "clip_name")
        ff = model.encoder.block[0].layer[1].DenseReluDense
        assert ff.wo.weight.dtype == torch.float32 and ff.wi_0.weight.dtype == torch.float16
        out = model(input_ids=torch.tensor([[3, 9, 1712, 1]])).last_hidden_state
        assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_a1111_weighting_is_refused_for_the_flow_families(executor):
    g = _flux_graph(style="comfyui")
    g.add("text_encode", "plain", clip=OutRef("te", "clip"), text=PROMPT, weighting="a1111")
    r = executor.run(g, targets=["plain"])
    assert not r.ok and "comfyui for flux" in r.failures["plain"].message


def test_loom_models_tells_each_text_encoder_file(encoders):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, LOOM_MODELS="")
    r = subprocess.run([sys.executable, "-m", "app.cli", "models", "--models",
                        str(encoders[0]), "--json"], capture_output=True, text=True,
                       env=env, timeout=120, cwd=Path(__file__).resolve().parents[1])
    got = {x["name"]: x["family"] for x in json.loads(r.stdout)
           if x["kind"] == "text_encoders"}
    assert got["clip_l.safetensors"] == "clip_l 32 float16"
    assert got["t5xxl_fp8_e4m3fn_scaled.safetensors"] == "t5 128 float8_e4m3fn scaled"


def test_an_sd_clip_in_a_flux_encoder_is_refused_by_name(executor):
    g = Graph()
    te = g.add("load_text_encoder", "te", clip_name="clip_l.safetensors",
               clip_type="stable_diffusion")
    g.add("text_encode_flux", "pos", clip=te["clip"], clip_l="a", t5xxl="a")
    msg = executor.run(g, targets=["pos"]).failures["pos"].message
    assert "input 'clip'" in msg and "flux" in msg and "sd15" in msg, msg


def test_loader_types_name_what_they_need(executor):
    g = Graph()
    g.add("load_dual_text_encoders", "te", clip_name1="clip_l.safetensors",
          clip_name2="clip_g.safetensors", clip_type="flux")
    r = executor.run(g, targets=["te"])
    msg = r.failures["te"].message
    assert "CLIP-L + T5 files for type flux" in msg and "clip_g.safetensors: CLIP-G" in msg


def _flux_pipe(models):
    from diffusers import FluxPipeline
    from transformers import CLIPTextModel

    from nodes.diffusion.text_encoders import tokenizer

    clip = CLIPTextModel(models["clip_l"].config).eval()
    clip.load_state_dict(models["clip_l"].text_model.state_dict())
    return FluxPipeline(scheduler=None, vae=None, text_encoder=clip,
                        tokenizer=tokenizer("clip_l"), text_encoder_2=models["t5"],
                        tokenizer_2=tokenizer("t5"), transformer=None)


def _flux_graph(t5_text=PROMPT, style="diffusers", files=("clip_l.safetensors",
                                                           "t5xxl.safetensors")):
    g = Graph()
    te = g.add("load_dual_text_encoders", "te", clip_name1=files[1], clip_name2=files[0],
               clip_type="flux")
    g.add("text_encode_flux", "pos", clip=te["clip"], clip_l=PROMPT, t5xxl=t5_text,
          guidance=2.5, style=style)
    return g


def test_flux_encoding_matches_diffusers(encoders, executor):
    _, models = encoders
    with torch.no_grad():
        embeds, pooled, _ = _flux_pipe(models).encode_prompt(PROMPT, None, device="cpu",
                                                             max_sequence_length=512)
    cond = run(executor, _flux_graph(), "pos")["conditioning"]
    assert cond.embeds.shape == (1, 512, 128) and cond.pooled.shape == (1, 32)
    assert (cond.embeds - embeds).abs().max() < 1e-5
    assert (cond.pooled - pooled).abs().max() < 1e-5
    assert cond.extra == {"guidance": 2.5}


def test_flux_comfyui_style_pads_t5_to_256_and_weighs_like_comfyui(encoders, executor):
    from nodes.diffusion.text_encoders import tokenizer

    _, models = encoders
    t5, tok = models["t5"], tokenizer("t5")
    plain = "a photo of a cat"
    cond = run(executor, _flux_graph(plain, "comfyui"), "pos")["conditioning"]
    ids = tok(plain).input_ids
    with torch.no_grad():
        want = t5(input_ids=torch.tensor([ids + [0] * (256 - len(ids))])).last_hidden_state
        # weights do not reach the vector: it is the unweighted words'
        _, pooled, _ = _flux_pipe(models).encode_prompt("a photo of a red cat on a mat",
                                                        None, device="cpu")
    assert cond.embeds.shape == (1, 256, 128)
    assert (cond.embeds - want).abs().max() < 1e-5
    assert (cond.pooled - pooled).abs().max() < 1e-5
    weighted = run(executor, _flux_graph("a photo of a (cat:1.5)", "comfyui"),
                   "pos")["conditioning"]
    ids = tok("a photo of a cat").input_ids
    n = len(ids)
    with torch.no_grad():
        z = t5(input_ids=torch.tensor([ids + [0] * (256 - n)])).last_hidden_state
        empty = t5(input_ids=torch.tensor([[1] + [0] * 255])).last_hidden_state
    cat = [i for i, t in enumerate(ids) if t == 1712]
    z[0, cat] = (z[0, cat] - empty[0, cat]) * 1.5 + empty[0, cat]
    assert (weighted.embeds - z).abs().max() < 1e-5


def _sd3_pipe(models):
    from diffusers import StableDiffusion3Pipeline

    from nodes.diffusion.text_encoders import tokenizer

    return StableDiffusion3Pipeline(
        transformer=None, scheduler=None, vae=None, text_encoder=models["clip_l"],
        tokenizer=tokenizer("clip_l"), text_encoder_2=models["clip_g"],
        tokenizer_2=tokenizer("clip_g"), text_encoder_3=models["t5"],
        tokenizer_3=tokenizer("t5"))


def _sd3_graph(style="diffusers", l=PROMPT, g_text="a blue dog", t5=PROMPT,
               empty_padding="empty_prompt"):
    g = Graph()
    te = g.add("load_triple_text_encoders", "te", clip_name1="t5xxl.safetensors",
               clip_name2="clip_g.safetensors", clip_name3="clip_l.safetensors")
    g.add("text_encode_sd3", "pos", clip=te["clip"], clip_l=l, clip_g=g_text, t5xxl=t5,
          empty_padding=empty_padding, style=style)
    return g


def test_sd3_encoding_matches_diffusers(encoders, executor):
    _, models = encoders
    with torch.no_grad():
        embeds, _, pooled, _ = _sd3_pipe(models).encode_prompt(
            PROMPT, "a blue dog", PROMPT, device="cpu", do_classifier_free_guidance=False,
            max_sequence_length=256)
    cond = run(executor, _sd3_graph(), "pos")["conditioning"]
    assert cond.embeds.shape == (1, 77 + 256, 128) and cond.pooled.shape == (1, 32 + 64)
    assert (cond.embeds - embeds).abs().max() < 1e-5
    assert (cond.pooled - pooled).abs().max() < 1e-5


def test_sd3_comfyui_style(encoders, executor):
    """77 CLIP tokens, then T5's own tokens padded to 77; CLIP-L's vector unprojected;
    empty_padding none with empty CLIP prompts: T5 alone and a zero vector."""
    _, models = encoders
    plain = "a photo of a cat"
    cond = run(executor, _sd3_graph("comfyui", plain, plain, plain), "pos")["conditioning"]
    with torch.no_grad():
        embeds, _, pooled, _ = _sd3_pipe(models).encode_prompt(
            plain, plain, plain, device="cpu", do_classifier_free_guidance=False,
            max_sequence_length=77)
        l_pooled = models["clip_l"].text_model(
            _sd3_pipe(models).tokenizer(plain, padding="max_length", max_length=77,
                                        return_tensors="pt").input_ids).pooler_output
    assert cond.embeds.shape == (1, 154, 128)
    assert (cond.embeds - embeds).abs().max() < 1e-5
    assert (cond.pooled[:, :32] - l_pooled).abs().max() < 1e-5
    assert (cond.pooled[:, 32:] - pooled[:, 32:]).abs().max() < 1e-5
    t5_only = run(executor, _sd3_graph("comfyui", "", "", plain, "none"), "pos")["conditioning"]
    assert t5_only.embeds.shape == (1, 77, 128) and not t5_only.pooled.any()
    assert (t5_only.embeds - embeds[:, 77:]).abs().max() < 1e-5


def test_text_encode_and_zero_out_take_the_flow_encoders(encoders, executor):
    g = _flux_graph(style="comfyui")
    g.add("text_encode", "plain", clip=OutRef("te", "clip"), text=PROMPT)
    g.add("conditioning_zero_out", "zero", conditioning=OutRef("plain", "conditioning"))
    r = executor.run(g, targets=["pos", "plain", "zero"])
    assert r.ok, r.failures
    same = r["pos"]["conditioning"]
    plain, zero = r["plain"]["conditioning"], r["zero"]["conditioning"]
    t5_same = run(executor, _flux_graph(PROMPT, "comfyui"), "pos")["conditioning"]
    assert torch.equal(plain.embeds, t5_same.embeds) and torch.equal(plain.pooled, same.pooled)
    assert not zero.embeds.any() and not zero.pooled.any() and zero.pooled.shape == (1, 32)


def test_dual_loader_reads_sdxl_encoders_into_the_sd_path(encoders, executor):
    from transformers import CLIPTextModel

    _, models = encoders
    g = Graph()
    te = g.add("load_dual_text_encoders", "te", clip_name1="clip_g.safetensors",
               clip_name2="clip_l.safetensors", clip_type="sdxl")
    g.add("text_encode", "pos", clip=te["clip"], text="a cat")
    cond = run(executor, g, "pos")["conditioning"]
    assert cond.embeds.shape == (1, 77, 32 + 64) and cond.pooled.shape == (1, 64)
    _, enc = loaded(executor, "clip_l.safetensors", "clip_g.safetensors", clip_type="sdxl")
    assert type(enc.text_encoder) is CLIPTextModel


def test_a_prompt_change_reruns_only_its_encoder_and_loads_nothing(encoders, executor,
                                                                     events):
    events.attach(executor)
    g = _flux_graph(style="comfyui")
    g.add("text_encode", "neg", clip=OutRef("te", "clip"), text="blurry")
    assert executor.run(g, targets=["pos", "neg"]).ok
    assert executor.models.loads == 2  # CLIP-L and T5, once for both encoders
    events.clear()
    g.set_param("neg", "text", "grainy")
    assert executor.run(g, targets=["pos", "neg"]).ok
    assert events.computed() == {"neg"} and executor.models.loads == 2


def test_fp8_copies_encode_close_to_fp16(encoders, executor):
    """Measured on these random tiny encoders: the largest difference is 0.054 to 0.063 of
    the fp16 embedding's largest value (fp8 e4m3 keeps 3 mantissa bits), for plain and
    scaled fp8 alike; the bound is 0.12."""
    ref = run(executor, _flux_graph(style="comfyui"), "pos")["conditioning"]
    for variant in VARIANTS[1:]:
        files = (f"clip_l{variant}.safetensors", f"t5xxl{variant}.safetensors")
        cond = run(executor, _flux_graph(style="comfyui", files=files), "pos")["conditioning"]
        for a, b in ((cond.embeds, ref.embeds), (cond.pooled, ref.pooled)):
            rel = ((a - b).abs().max() / b.abs().max()).item()
            assert 0 < rel < 0.12, (variant, rel)
    sizes = {k.split(":")[2].rsplit("/", 1)[1]: v["bytes"]
             for k, v in executor.models.summary()["loaded"].items()}
    # the manager counts the fp8 bytes held (norms and biases stay in the compute dtype)
    assert sizes["t5xxl_fp8_e4m3fn.safetensors"] < 0.3 * sizes["t5xxl.safetensors"]


COMFY_FLUX = {
    "1": {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "t5xxl_fp8_e4m3fn_scaled.safetensors", "clip_name2": "clip_l.safetensors",
        "type": "flux", "device": "default"}},
    "2": {"class_type": "CLIPTextEncodeFlux", "inputs": {
        "clip": ["1", 0], "clip_l": "a cat", "t5xxl": "a cat on a mat", "guidance": 3.5}},
    "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "a dog"}},
}
COMFY_SD3 = {
    "1": {"class_type": "TripleCLIPLoader", "inputs": {
        "clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors",
        "clip_name3": "t5xxl_fp8_e4m3fn.safetensors"}},
    "2": {"class_type": "CLIPTextEncodeSD3", "inputs": {
        "clip": ["1", 0], "clip_l": "a cat", "clip_g": "a cat", "t5xxl": "a cat",
        "empty_padding": "none"}},
    "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl.safetensors",
                                                 "type": "sd3"}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a cat"}},
}


@pytest.mark.parametrize("doc", [COMFY_FLUX, COMFY_SD3], ids=["flux", "sd3"])
def test_comfyui_text_encoding_subgraphs_convert_validate_and_run(doc, executor,
                                                                  builtin_registry):
    graph, report = convert(doc, registry=builtin_registry)
    assert not report.placeholders and not report.values, report
    from engine.comfyui.export import to_api

    back = to_api(graph)  # and `loom export` writes the same ComfyUI nodes back
    assert {k: (v["class_type"], v["inputs"]) for k, v in back.items()} == {
        k: (v["class_type"], {**v["inputs"], **({"device": "default"} if "Loader" in
                                                  v["class_type"] and "type" in v["inputs"]
                                                  else {})})
        for k, v in doc.items()}
    targets = ["2", "3", "4"] if doc is COMFY_FLUX else ["2", "4"]
    assert not [p for p in validate(graph, targets) if p.severity == "error"]
    r = executor.run(graph, targets=targets)
    assert r.ok, r.failures
    if doc is COMFY_FLUX:
        assert r["2"]["conditioning"].extra == {"guidance": 3.5}
        assert graph.nodes["1"].params["clip_type"] == "flux"
