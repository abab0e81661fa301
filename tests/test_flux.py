"""Flux through the user's nodes: a tiny random transformer and VAE saved in every layout
load with no missing or unexpected weights; sampling matches diffusers' FluxPipeline; the
ComfyUI schedules match ComfyUI's own numbers; Model Sampling nodes, Flux Guidance and the
16-channel latent; caching; ComfyUI's Flux templates convert, validate and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyref import needs_reference, schedules  # ComfyUI 0.33's own numbers
from PIL import Image

from engine import Executor, Graph
from engine.errors import InputError
from engine.spec import Int, Node, Output
from engine.types import T
from engine.values import Conditioning

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TOKENS, WIDTH, POOLED = 12, 32, 16  # the tiny transformer's T5 and CLIP widths


def flux_conditioning(seed: int) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, TOKENS, WIDTH, generator=g),
                        pooled=torch.randn(1, POOLED, generator=g))


class TinyFluxPrompt(Node):
    """Stands in for Flux's text encoders (another helper's part): a seeded conditioning."""

    type = "tiny_flux_prompt"
    category = "test"
    inputs = (Int("seed", 0),)
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, seed=0):
        return {"conditioning": flux_conditioning(seed)}


class TinyLatent(Node):
    """A seeded 16-channel latent (a reference image's, for Kontext)."""

    type = "tiny_latent"
    category = "test"
    inputs = (Int("seed", 0), Int("size", 64))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, seed=0, size=64):
        from engine.values import Latent

        g = torch.Generator().manual_seed(seed)
        return {"latent": Latent(torch.randn(1, 16, size // 8, size // 8, generator=g))}


@pytest.fixture(scope="module")
def flux_models(tmp_path_factory):
    from testing.flux import build_flux

    root = tmp_path_factory.mktemp("flux")
    return root, build_flux(root)


@pytest.fixture(scope="module")
def registry():
    from engine import default_registry

    reg = default_registry()
    reg.register(TinyFluxPrompt)
    reg.register(TinyLatent)
    return reg


@pytest.fixture
def executor(flux_models):
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    root, _ = flux_models
    return Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                           use_config=False)))


def txt2img(registry, unet="tiny-flux.safetensors", *, seed=42, steps=4, cfg=1.0,
            sampler="euler", scheduler="diffusers", size=64, guidance=3.5, weight_dtype=None,
            shift_node=None, tile=None, reference=None):
    g = Graph(registry)
    m = g.add("load_diffusion_model", "m", unet_name=unet,
              **({"weight_dtype": weight_dtype} if weight_dtype else {}))
    model = m["model"]
    if shift_node:
        ms = g.add(shift_node[0], "ms", model=model, **shift_node[1])
        model = ms["model"]
    pos = g.add("tiny_flux_prompt", "pos", seed=1)["conditioning"]
    if reference:
        ref = g.add("tiny_latent", "refl", seed=5, size=reference)
        pos = g.add("reference_latent", "ref", conditioning=pos,
                    latent=ref["latent"])["conditioning"]
    fg = g.add("flux_guidance", "fg", conditioning=pos, guidance=guidance)
    neg = g.add("tiny_flux_prompt", "neg", seed=2)
    lat = g.add("empty_latent_16", "lat", width=size, height=size)
    tiles = {} if tile is None else dict(zip(("tile_width", "tile_height", "tile_overlap"),
                                             tile))
    s = g.add("tiled_sampler" if tile else "sampler", "s", model=model,
              positive=fg["conditioning"], negative=neg["conditioning"], latent=lat["latent"],
              seed=seed, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler, **tiles)
    v = g.add("load_vae", "v", vae_name="ae.safetensors", family="flux")
    d = g.add("vae_decode", "d", vae=v["vae"], latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    return g


def run_ok(executor, g):
    r = executor.run(g)
    assert r.ok, r.failures
    return r


# ---- loading ------------------------------------------------------------------------------


def node_load(executor, registry, path, weight_dtype="default"):
    """The Load Diffusion Model node's MODEL and the modules behind it."""
    from types import SimpleNamespace

    from nodes.diffusion.models import components

    g = Graph(registry)
    g.add("load_diffusion_model", "m", unet_name=path.name, weight_dtype=weight_dtype)
    r = executor.run(g, ["m"])
    assert r.ok, r.failures
    ref = r["m"]["model"]
    return ref, components(SimpleNamespace(models=executor.models), ref)


@pytest.mark.parametrize("layout", ["bfl", "comfy", "diffusers_file", "folder"])
def test_every_layout_loads_the_same_weights_without_missing_or_unexpected(
        flux_models, executor, registry, layout):
    from diffusers import FluxTransformer2DModel

    from nodes.diffusion.flux import detect

    _, paths = flux_models
    ref = FluxTransformer2DModel.from_pretrained(paths["folder"] / "transformer").state_dict()
    model, comps = node_load(executor, registry, paths[layout])
    assert model.family == comps.family == "flux" and detect(paths[layout]) == "flux"
    ours = comps.unet.state_dict()
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert comps.unet.config.axes_dims_rope in ((4, 14, 14), [4, 14, 14])


def test_fp8_file_and_fp8_weight_dtype_keep_fp8_and_compute_in_float32(flux_models, executor,
                                                                       registry):
    from diffusers import FluxTransformer2DModel

    _, paths = flux_models
    ref = FluxTransformer2DModel.from_pretrained(paths["folder"] / "transformer").state_dict()
    for name in ("fp8", "bfl"):
        model, comps = node_load(executor, registry, paths[name], "fp8_e4m3fn")
        assert model.get("weight_dtype") == "fp8_e4m3fn"
        sd = comps.unet.state_dict()
        assert set(sd) == set(ref)
        fp8 = [k for k, v in sd.items() if v.dtype == torch.float8_e4m3fn]
        assert "transformer_blocks.0.attn.to_q.weight" in fp8 and "x_embedder.weight" in fp8
        for k in ref:  # e4m3 keeps 3 mantissa bits: within 1/16 relative, plus tiny values
            err = (sd[k].float() - ref[k]).abs()
            assert (err <= ref[k].abs() / 16 + 2e-3).all(), k
        assert comps.unet.dtype == torch.float32  # the compute dtype


def test_variants_come_from_shapes(tmp_path):
    from nodes.diffusion.arch import Arch
    from nodes.diffusion.flux import detect, rope_axes
    from testing.flux import build_flux

    assert rope_axes(128) == (16, 56, 56) and rope_axes(32) == (4, 14, 14)
    schnell = build_flux(tmp_path / "s", guidance_embeds=False)
    fill = build_flux(tmp_path / "f", in_channels=384, out_channels=64)
    assert detect(schnell["bfl"]) is Arch.flux_schnell
    assert detect(fill["bfl"]) is Arch.flux_fill and Arch.flux_fill.is_inpaint
    assert detect(fill["folder"]) is Arch.flux_fill


def test_a_broken_flux_file_fails_the_node_clearly(flux_models, executor, registry, tmp_path):
    from safetensors.torch import load_file, save_file

    root, paths = flux_models
    sd = load_file(str(paths["bfl"]))
    del sd["double_blocks.1.img_mlp.0.weight"]
    save_file(sd, str(root / "diffusion_models" / "broken-flux.safetensors"))
    r = executor.run(txt2img(registry, "broken-flux.safetensors"))
    assert not r.ok
    f = r.failures["m"]
    assert f.input == "unet_name" and "missing" in f.message + (f.hint or "")


# ---- sampling -----------------------------------------------------------------------------


def flux_pipeline(paths):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    from nodes.diffusion.flux import SCHEDULER
    from nodes.diffusion.loading import quiet

    quiet()
    transformer = __import__("diffusers").FluxTransformer2DModel.from_pretrained(
        paths["folder"] / "transformer")
    vae = AutoencoderKL.from_pretrained(paths["vae_folder"])
    sched = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER)
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("size", [64, 96])
def test_txt2img_matches_diffusers_flux_pipeline(flux_models, executor, registry, size):
    """Loom's `diffusers` scheduler on Flux: FluxPipeline's sigmas (the shift for the size)
    and noise, Euler steps, the VAE's shift and scale: the same image."""
    from engine.runtime import generator_for

    _, paths = flux_models
    r = run_ok(executor, txt2img(registry, size=size, steps=4))
    ours = r["out"]["ui"]["images"]
    pos = flux_conditioning(1)
    ref = flux_pipeline(paths)(prompt_embeds=pos.embeds, pooled_prompt_embeds=pos.pooled,
                               height=size, width=size, num_inference_steps=4,
                               guidance_scale=3.5, output_type="pt",
                               generator=generator_for(42, 0)).images
    assert ours.shape == ref.shape == (1, 3, size, size)
    assert (ours - ref).abs().max().item() < 1e-4


@needs_reference
def test_kontext_reference_latent_matches_diffusers_kontext_pipeline(flux_models, executor,
                                                                     registry):
    """ReferenceLatent appends the reference's tokens (ids numbered 1) to the image's, as
    FluxKontextPipeline does: the same image."""
    from diffusers import FluxKontextPipeline

    from engine.runtime import generator_for

    _, paths = flux_models
    r = run_ok(executor, txt2img(registry, size=64, reference=48))
    ours = r["out"]["ui"]["images"]
    base = flux_pipeline(paths)
    pipe = FluxKontextPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    pos = flux_conditioning(1)
    ref = TinyLatent().run(None, seed=5, size=48)["latent"].samples
    want = pipe(image=ref, prompt_embeds=pos.embeds, pooled_prompt_embeds=pos.pooled,
                height=64, width=64, max_area=64 * 64, _auto_resize=False,
                num_inference_steps=4, guidance_scale=3.5, output_type="pt",
                generator=generator_for(42, 0)).images
    plain = run_ok(executor, txt2img(registry, size=64))["out"]["ui"]["images"]
    assert (ours - want).abs().max().item() < 1e-4
    assert (ours - plain).abs().max().item() > 1e-3


def test_comfyui_schedules_equal_comfyuis_flux_1024_reference():

    from nodes.diffusion.flow import model_sampling
    from nodes.diffusion.flux import SCHEDULER
    from nodes.diffusion.ksampling.schedules import ksampler_sigmas
    from nodes.diffusion.loading import Components

    comps = Components("flux", None, None, None, None, dict(SCHEDULER))
    latent = type("L", (), {"samples": torch.zeros(1, 16, 128, 128)})()
    ms = model_sampling(comps, None, latent)
    checked = 0
    for key, sigmas in schedules().items():
        kind, sched, rule, steps, denoise = (key.split("/") + [None] * 5)[:5]
        if kind != "flux_1024" or sched.startswith("_"):
            continue
        ours = ksampler_sigmas(ms, sched, int(steps), float(denoise), rule == "discard")
        want = torch.tensor(sigmas, dtype=torch.float32)
        if want.isnan().any():  # kl_optimal at 1 step: ComfyUI's 0/0 (test_schedules.py)
            continue
        assert torch.allclose(ours, want, rtol=1e-6, atol=0), key
        checked += 1
    assert checked >= 9 * 5


def test_model_sampling_nodes_set_the_shift(flux_models, executor, registry):
    """ModelSamplingFlux at 1024x1024 is the model's own shift there; a smaller image gets
    a smaller one; SD3's / AuraFlow's shifts change the schedule; SD models refuse them."""
    from nodes.diffusion.flow import model_sampling
    from nodes.diffusion.models import components

    g = txt2img(registry, scheduler="simple", shift_node=(
        "model_sampling_flux", {"width": 1024, "height": 1024}))
    r = run_ok(executor, g)
    a = r["out"]["ui"]["images"]
    g.set_param("ms", "width", 256)
    b = run_ok(executor, g)["out"]["ui"]["images"]
    assert (a - b).abs().max() > 1e-4
    ctx = type("C", (), {"models": executor.models})()
    from engine.runtime.models import ModelRef

    key = [k for k in executor.models._loaded if k.startswith("unet:")][0]
    ref = ModelRef("MODEL", "flux", "x", key)
    comps = components(ctx, ref)
    assert model_sampling(comps, ref.with_patch(("model_sampling", "flux", 0.8, 1.0))
                          ).shift == 0.8
    sd3 = model_sampling(comps, ref.with_patch(("model_sampling", "discrete_flow", 3.0,
                                                1000.0)))
    assert not sd3.flux and sd3.multiplier == 1000.0
    from nodes.diffusion.flow_nodes import ModelSamplingSD3

    with pytest.raises(InputError, match="flow-matching"):
        ModelSamplingSD3().run(None, ModelRef("MODEL", "sd15", "x", "k"), 3.0)


@pytest.mark.parametrize("sampler,scheduler", [("euler", "simple"), ("dpmpp_2m", "beta"),
                                                ("euler_ancestral", "normal")])
def test_comfyui_samplers_run_with_cfg_and_a_negative(executor, registry, sampler, scheduler):
    r = run_ok(executor, txt2img(registry, sampler=sampler, scheduler=scheduler, cfg=2.5))
    img = r["out"]["ui"]["images"]
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()


def test_guidance_changes_the_image_and_a_seed_change_loads_no_model(executor, registry):
    g = txt2img(registry)
    a = run_ok(executor, g)["out"]["ui"]["images"]
    loads = executor.models.loads
    g.set_param("s", "seed", 7)
    r = run_ok(executor, g)
    assert set(r.computed) == {"s", "d", "out"} and executor.models.loads == loads
    g.set_param("fg", "guidance", 1.0)
    r = run_ok(executor, g)
    assert set(r.computed) == {"fg", "s", "d", "out"} and executor.models.loads == loads
    assert (r["out"]["ui"]["images"] - a).abs().max() > 1e-4


def test_tiled_sampler_runs_flux_and_one_tile_is_the_sampler(executor, registry):
    plain = run_ok(executor, txt2img(registry, scheduler="simple", size=128))
    plain = plain["out"]["ui"]["images"]
    for tile, same in (((128, 128, 0), True), ((72, 72, 16), False)):  # odd tiles: padded
        g = txt2img(registry, scheduler="simple", size=128, tile=tile)
        out = run_ok(executor, g)["out"]["ui"]["images"]
        assert torch.isfinite(out).all()
        assert torch.equal(out, plain) is same


def test_lora_on_flux_is_refused_with_a_message(executor, registry):
    g = txt2img(registry)
    g.add("load_lora", "l", lora_name="x.safetensors")
    g.connect(("m", "model"), ("l", "model"))
    g.connect(("l", "model"), ("s", "model"))
    r = executor.run(g)
    assert not r.ok and r.failures["l"].input == "model"
    assert "Flux" in (r.failures["l"].hint or "")


def test_empty_latent_16_needs_multiples_of_16(executor, registry):
    g = txt2img(registry, size=72)
    r = executor.run(g)
    assert not r.ok and r.failures["lat"].input == "width"


def test_flux_fill_reads_the_mask_and_masked_image(tmp_path):
    """A Fill model's extra input is the masked image's latent and the 8x8-folded mask, in
    FluxFillPipeline's packed order."""
    from nodes.diffusion.flow import fill_inputs, pack

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, :] = 1
    masked = torch.randn(1, 16, 4, 4)
    extra = fill_inputs((mask, masked), (1, 16, 4, 4), 1, "cpu", torch.float32)
    assert extra.shape == (1, 16 + 64, 4, 4)
    # diffusers: mask.view(B, h, 8, w, 8).permute(0, 2, 4, 1, 3).reshape(B, 64, h, w)
    ref = mask[:, 0].view(1, 4, 8, 4, 8).permute(0, 2, 4, 1, 3).reshape(1, 64, 4, 4)
    assert torch.equal(extra[:, 16:], ref)
    packed = pack(torch.cat([torch.randn(1, 16, 4, 4), extra], 1))
    assert packed.shape == (1, 4, 384)


# ---- ComfyUI templates and the command line -------------------------------------------------

COMFY = ROOT / "tests" / "data" / "comfyui"


@pytest.fixture(scope="module")
def flux_with_encoders(tmp_path_factory):
    """A tiny Flux whose text widths are the tiny T5's and CLIP-L's, beside those encoders'
    files (ComfyUI's names) and ae.safetensors: a template's every node runs."""
    from testing.flux import build_flux
    from testing.text_encoders import tiny_configs, write_text_encoders

    root = tmp_path_factory.mktemp("flux-te")
    configs = tiny_configs()
    build_flux(root, joint_attention_dim=configs["t5"].d_model,
               pooled_projection_dim=configs["clip_l"].hidden_size)
    write_text_encoders(root)
    return root


@pytest.mark.parametrize("name", ["flux_dev_api", "flux_schnell_api"])
def test_comfyui_flux_templates_convert_validate_and_run(name, flux_with_encoders, registry,
                                                         tmp_path):
    """The templates convert with no placeholder, keep UNETLoader's weight dtype, and (with
    the file names pointed at the tiny files) run as they are: DualCLIPLoader's T5 and
    CLIP-L, Flux's encoding, the sampler and the VAE, to one saved image."""
    from engine import validate
    from engine.comfyui import convert
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    doc = json.loads((COMFY / f"{name}.json").read_text())
    graph, report = convert(doc, registry=registry)
    assert not report.placeholders and not report.values, report
    assert graph.node("12").params.get("weight_dtype", "default") == \
        doc["12"]["inputs"]["weight_dtype"]
    doc["12"]["inputs"]["unet_name"] = "tiny-flux.safetensors"
    doc["11"]["inputs"].update(clip_name1="t5xxl.safetensors", clip_name2="clip_l.safetensors")
    doc["27"]["inputs"].update(width=64, height=64)
    for entry in doc.values():
        if "steps" in entry["inputs"]:
            entry["inputs"]["steps"] = 3
    graph, _ = convert(doc, registry=registry)
    executor = Executor(models=ModelManager(paths=ModelFolders([flux_with_encoders],
                                                               use_env=False,
                                                               use_config=False)))
    errors = [p for p in validate(graph) if p.severity == "error"]
    assert not errors, errors
    executor.output_dir = tmp_path
    r = executor.run(graph, ["9"])
    assert r.ok, r.failures
    assert len(r.files) == 1 and Path(r.files[0]).parent == tmp_path
    image = np.asarray(Image.open(r.files[0]))
    assert image.shape == (64, 64, 3) and image.std() > 1  # a picture, not a flat fill


def test_loom_models_names_the_flux_files(flux_models):
    root, _ = flux_models
    proc = subprocess.run([sys.executable, "-m", "app.cli", "models", "--models", str(root),
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r["family"] for r in json.loads(proc.stdout)}
    for name in ("tiny-flux.safetensors", "tiny-flux-comfy.safetensors",
                 "tiny-flux-diffusers.safetensors", "tiny-flux-fp8.safetensors"):
        assert rows[name] == "flux", rows


def test_flux_fill_inpaints_through_inpaint_model_conditioning(tmp_path, registry):
    """A Fill model (384 input channels) loads from its BFL file and samples with the mask
    and masked image Inpaint Model Conditioning gives it; without either it says so."""
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager
    from testing.flux import build_flux

    build_flux(tmp_path, in_channels=384, out_channels=64)
    executor = Executor(models=ModelManager(paths=ModelFolders([tmp_path], use_env=False,
                                                               use_config=False)))

    def graph(conditioned):
        g = Graph(registry)
        m = g.add("load_diffusion_model", "m", unet_name="tiny-flux.safetensors")
        v = g.add("load_vae", "v", vae_name="ae.safetensors")
        pos = g.add("tiny_flux_prompt", "pos", seed=1)
        neg = g.add("tiny_flux_prompt", "neg", seed=2)
        img = g.add("empty_image", "img", width=64, height=64, color="#3366cc")
        mask = g.add("solid_mask", "mask", value=1.0, width=64, height=64)
        if conditioned:
            ic = g.add("inpaint_model_conditioning", "ic", positive=pos["conditioning"],
                       negative=neg["conditioning"], vae=v["vae"], pixels=img["image"],
                       mask=mask["mask"])
            p, n, lat = ic["positive"], ic["negative"], ic["latent"]
        else:
            p, n = pos["conditioning"], neg["conditioning"]
            lat = g.add("empty_latent_16", "lat", width=64, height=64)["latent"]
        s = g.add("sampler", "s", model=m["model"], positive=p, negative=n, latent=lat,
                  steps=3, cfg=1.0, scheduler="simple")
        d = g.add("vae_decode", "d", vae=v["vae"], latent=s["latent"])
        g.add("preview_image", "out", images=d["image"])
        return g

    r = run_ok(executor, graph(True))
    assert torch.isfinite(r["out"]["ui"]["images"]).all()
    r = executor.run(graph(False))
    assert not r.ok and "Flux Fill" in r.failures["s"].message + (r.failures["s"].hint or "")


def test_flux_canny_depth_models_load_and_say_what_is_missing(tmp_path, registry):
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager
    from testing.flux import build_flux

    build_flux(tmp_path, in_channels=128, out_channels=64)
    executor = Executor(models=ModelManager(paths=ModelFolders([tmp_path], use_env=False,
                                                               use_config=False)))
    r = executor.run(txt2img(registry, scheduler="simple"))
    assert "m" not in r.failures and r.failures["s"].input == "model"
    assert "flux_control" in r.failures["s"].message


def test_advanced_sampler_split_in_two_equals_one_run_on_flux(executor, registry):
    """Leftover noise on a flow model: the first half returns the latent over (1 - sigma)
    as ComfyUI does; the second half, without new noise, continues to the whole run."""
    g = txt2img(registry, scheduler="simple")
    common = dict(seed=9, steps=6, cfg=1.0, sampler="euler", scheduler="simple")
    for nid, extra in (("whole", {}), ("first", dict(end_at_step=3,
                                                      return_with_leftover_noise=True))):
        g.add("sampler_advanced", nid, **common, **extra)
        for inp, src in (("model", "m"), ("positive", "fg"), ("negative", "neg"),
                         ("latent", "lat")):
            g.connect((src, {"m": "model", "lat": "latent"}.get(src, "conditioning")),
                      (nid, inp))
    g.add("sampler_advanced", "second", add_noise=False, start_at_step=3, **common)
    for inp, src, out in (("model", "m", "model"), ("positive", "fg", "conditioning"),
                          ("negative", "neg", "conditioning"), ("latent", "first", "latent")):
        g.connect((src, out), ("second", inp))
    r = executor.run(g, ["whole", "second"])
    assert r.ok, r.failures
    whole, second = r["whole"]["latent"].samples, r["second"]["latent"].samples
    assert (whole - second).abs().max().item() < 1e-4


def test_fp8_images_stay_close_to_the_full_precision_ones(executor, registry):
    """fp8_e4m3fn storage (3 mantissa bits) on the tiny random model, 4 steps at 64x64:
    measured max abs difference 0.0024 of the 0..1 range, mean 0.0006."""
    full = run_ok(executor, txt2img(registry))["out"]["ui"]["images"]
    fp8 = run_ok(executor, txt2img(registry, weight_dtype="fp8_e4m3fn"))["out"]["ui"]["images"]
    diff = (full - fp8).abs()
    assert 0 < diff.max().item() < 0.01 and diff.mean().item() < 0.002
