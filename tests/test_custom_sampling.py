"""The nodes ComfyUI workflows need beyond the Sampler: sampling over explicit sigmas,
partial schedules, combined and area conditionings, CLIP skip, SDXL encoders, inpaint
conditioning, ControlNet on both sides; each checked against an equivalent Loom path."""

from __future__ import annotations

import pytest
import torch

from engine import Graph

pytestmark = pytest.mark.slow

PROMPT = "a red circle on the left, grey background"


def base(g: Graph, ckpt="tiny-sd15.safetensors", size=64):
    ck = g.add("load_checkpoint", "ck", ckpt_name=ckpt)
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="blurry")
    lat = g.add("empty_latent", "lat", width=size, height=size)
    return ck, pos, neg, lat


def latent_of(executor, g: Graph, node: str, output: str = "latent"):
    r = executor.run(g, [node])
    assert r.ok, r.failures
    return r[node][output].samples


def close(a, b, tol=1e-4):
    return (a - b).abs().max().item() < tol


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "uni_pc"])
def test_advanced_sampler_over_the_whole_schedule_equals_the_sampler(model_executor, sampler):
    g = Graph()
    ck, pos, neg, lat = base(g)
    common = dict(model=ck["model"], positive=pos["conditioning"], negative=neg["conditioning"],
                  latent=lat["latent"], seed=5, steps=8, cfg=6.0, sampler=sampler)
    g.add("sampler", "plain", **common)
    g.add("sampler_advanced", "adv", **common)
    assert close(latent_of(model_executor, g, "plain"), latent_of(model_executor, g, "adv"))


def test_a_schedule_split_in_two_equals_one_run(model_executor):
    """Base + refiner style: stop at step 5 with the noise left in, go on without adding
    noise; the same as one run (euler is deterministic)."""
    g = Graph()
    ck, pos, neg, lat = base(g)
    common = dict(model=ck["model"], positive=pos["conditioning"], negative=neg["conditioning"],
                  seed=9, steps=10, cfg=5.0, sampler="euler", scheduler="karras")
    g.add("sampler_advanced", "whole", latent=lat["latent"], **common)
    first = g.add("sampler_advanced", "first", latent=lat["latent"], end_at_step=5,
                  return_with_leftover_noise=True, **common)
    g.add("sampler_advanced", "second", latent=first["latent"], add_noise=False,
          start_at_step=5, **common)
    g.add("sampler_advanced", "stopped", latent=lat["latent"], end_at_step=5, **common)
    whole = latent_of(model_executor, g, "whole")  # the Sampler runs a whole schedule
    assert close(latent_of(model_executor, g, "second"), whole)  # explicit sigmas agree
    noisy = latent_of(model_executor, g, "first")
    stopped = latent_of(model_executor, g, "stopped")
    assert not close(noisy, whole, 1e-2)
    # without leftover noise the last step goes all the way down, elsewhere than `first`
    assert not close(stopped, noisy, 1e-2)



@pytest.fixture(scope="module")
def shapes_executor():
    from pathlib import Path

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    bundled = Path(__file__).resolve().parents[1] / "resources" / "models"
    return Executor(models=ModelManager(paths=ModelFolders(
        [], bundled=bundled, use_env=False, use_config=False)))


def test_custom_sampler_family_equals_the_sampler(shapes_executor):
    """With a schedule that starts at the model's top noise level (loom-shapes: trailing,
    zero terminal SNR), ComfyUI's noise scaling and the Sampler's agree."""
    g = Graph()
    ck, pos, neg, lat = base(g, "loom-shapes.safetensors")
    g.add("sampler", "plain", model=ck["model"], positive=pos["conditioning"],
          negative=neg["conditioning"], latent=lat["latent"], seed=3, steps=6, cfg=4.0,
          sampler="euler", scheduler="normal")
    noise = g.add("random_noise", "noise", seed=3)
    guider = g.add("cfg_guider", "guider", model=ck["model"], positive=pos["conditioning"],
                   negative=neg["conditioning"], cfg=4.0)
    method = g.add("sampler_select", "method", sampler="euler")
    sigmas = g.add("schedule_sigmas", "sigmas", model=ck["model"], steps=6)
    g.add("custom_sampler_advanced", "adv", noise=noise["noise"], guider=guider["guider"],
          sampler=method["sampler"], sigmas=sigmas["sigmas"], latent=lat["latent"])
    g.add("custom_sampler", "custom", model=ck["model"], positive=pos["conditioning"],
          negative=neg["conditioning"], sampler=method["sampler"], sigmas=sigmas["sigmas"],
          latent=lat["latent"], seed=3, cfg=4.0)
    plain = latent_of(shapes_executor, g, "plain")
    assert close(latent_of(shapes_executor, g, "adv", "output"), plain)
    assert close(latent_of(shapes_executor, g, "custom", "output"), plain)
    r = shapes_executor.run(g, ["custom"])
    den = r["custom"]["denoised_output"].samples
    assert den.shape == plain.shape and not torch.equal(den, plain)


def test_sigma_nodes(model_executor):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15.safetensors")
    g.add("karras_sigmas", "k", steps=5, sigma_max=10.0, sigma_min=0.1, rho=7.0)
    t = g.add("turbo_sigmas", "t", model=ck["model"], steps=1)
    g.add("set_first_sigma", "f", sigmas=t["sigmas"], sigma=50.0)
    g.add("schedule_sigmas", "half", model=ck["model"], steps=4, denoise=0.5)
    g.add("schedule_sigmas", "full", model=ck["model"], steps=8)
    r = model_executor.run(g, ["k", "t", "f", "half", "full"])
    assert r.ok, r.failures
    k = r["k"]["sigmas"]
    assert len(k) == 6 and k[0].item() == pytest.approx(10.0) and k[4].item() == \
        pytest.approx(0.1, rel=1e-4) and k[5] == 0 and bool((k[:-1] > k[1:]).all())
    t = r["t"]["sigmas"]
    assert len(t) == 2 and t[0] > 10 and t[1] == 0
    assert r["f"]["sigmas"][0].item() == 50.0 and r["f"]["sigmas"][1] == 0
    assert torch.allclose(r["half"]["sigmas"], r["full"]["sigmas"][-5:])


def test_combined_and_area_conditionings(model_executor):
    g = Graph()
    ck, pos, neg, lat = base(g)
    both = g.add("conditioning_combine", "both", conditioning_1=pos["conditioning"],
                 conditioning_2=pos["conditioning"])
    nboth = g.add("conditioning_combine", "nboth", conditioning_1=neg["conditioning"],
                  conditioning_2=neg["conditioning"])
    full = g.add("conditioning_set_area", "full", conditioning=pos["conditioning"],
                 width=64, height=64, x=0, y=0, strength=1.0)
    red = g.add("text_encode", "red", clip=ck["clip"], text="a blue square")
    corner = g.add("conditioning_set_area", "corner", conditioning=red["conditioning"],
                   width=32, height=32, x=32, y=0, strength=1.0)
    mixed = g.add("conditioning_combine", "mix", conditioning_1=pos["conditioning"],
                  conditioning_2=corner["conditioning"])
    common = dict(model=ck["model"], latent=lat["latent"], seed=1, steps=4, cfg=5.0)
    g.add("sampler", "plain", positive=pos["conditioning"], negative=neg["conditioning"],
          **common)
    g.add("sampler", "combined", positive=both["conditioning"],
          negative=nboth["conditioning"], **common)
    g.add("sampler", "area", positive=full["conditioning"], negative=neg["conditioning"],
          **common)
    g.add("sampler", "mixed", positive=mixed["conditioning"], negative=neg["conditioning"],
          **common)
    plain = latent_of(model_executor, g, "plain")
    assert close(latent_of(model_executor, g, "combined"), plain, 1e-3)
    assert close(latent_of(model_executor, g, "area"), plain, 1e-3)
    m = latent_of(model_executor, g, "mixed")
    # the area prompt changes its quarter (and, through later steps, a little around it)
    assert (m - plain)[..., :4, 4:].abs().mean() > (m - plain)[..., 4:, :4].abs().mean()


def test_zero_out_clip_skip_and_controlnet_pair(model_executor):
    g = Graph()
    ck, pos, neg, lat = base(g)
    g.add("conditioning_zero_out", "z", conditioning=pos["conditioning"])
    last = g.add("clip_set_last_layer", "last", clip=ck["clip"], stop_at_clip_layer=-2)
    g.add("text_encode", "skipped", clip=last["clip"], text=PROMPT)
    g.add("text_encode", "skip1", clip=ck["clip"], text=PROMPT, clip_skip=1)
    r = model_executor.run(g, ["z", "skipped", "skip1", "pos"])
    assert r.ok, r.failures
    assert not r["z"]["conditioning"].embeds.any()
    a, b = r["skipped"]["conditioning"].embeds, r["skip1"]["conditioning"].embeds
    assert torch.equal(a, b) and not torch.equal(a, r["pos"]["conditioning"].embeds)

    cn = g.add("load_controlnet", "cn", control_net_name="tiny-controlnet.safetensors")
    hint = g.add("solid_mask", "hint", value=1.0, width=64, height=64)
    img = g.add("mask_to_image", "img", mask=hint["mask"])
    pair = g.add("apply_controlnet_pair", "pair", positive=pos["conditioning"],
                 negative=neg["conditioning"], control_net=cn["control_net"],
                 image=img["image"], strength=0.8, end_percent=0.9)
    p1 = g.add("apply_controlnet", "p1", conditioning=pos["conditioning"],
               control_net=cn["control_net"], image=img["image"], strength=0.8,
               end_percent=0.9)
    n1 = g.add("apply_controlnet", "n1", conditioning=neg["conditioning"],
               control_net=cn["control_net"], image=img["image"], strength=0.8,
               end_percent=0.9)
    common = dict(model=ck["model"], latent=lat["latent"], seed=1, steps=3, cfg=5.0)
    g.add("sampler", "a", positive=pair["positive"], negative=pair["negative"], **common)
    g.add("sampler", "b", positive=p1["conditioning"], negative=n1["conditioning"], **common)
    assert close(latent_of(model_executor, g, "a"), latent_of(model_executor, g, "b"))


def test_sdxl_text_encoders_and_refiner_conditioning(model_executor):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sdxl.safetensors")
    sd = g.add("text_encode_sdxl", "sd", clip=ck["clip"], text_g="a lighthouse at dusk",
               text_l="lighthouse", width=2048, height=2048, target_width=64,
               target_height=64)
    g.add("text_encode_sdxl", "same", clip=ck["clip"], text_g=PROMPT, text_l=PROMPT)
    g.add("text_encode", "plain", clip=ck["clip"], text=PROMPT)
    ref = g.add("text_encode_sdxl_refiner", "ref", clip=ck["clip"], ascore=6.0,
                text="lighthouse")
    lat = g.add("empty_latent", "lat", width=64, height=64)
    g.add("sampler", "s", model=ck["model"], positive=sd["conditioning"],
          negative=ref["conditioning"], latent=lat["latent"], seed=1, steps=2, cfg=5.0)
    r = model_executor.run(g, ["s", "sd", "same", "plain", "ref"])
    assert r.ok, r.failures
    c = r["sd"]["conditioning"]
    assert c.extra["width"] == 2048 and c.extra["target_height"] == 64
    assert torch.equal(r["same"]["conditioning"].embeds, r["plain"]["conditioning"].embeds)
    assert not torch.equal(c.embeds, r["plain"]["conditioning"].embeds)
    assert r["ref"]["conditioning"].extra["aesthetic_score"] == 6.0


def test_inpaint_model_conditioning(model_executor):
    """On an ordinary model it is VAE Encode + Set Latent Noise Mask; a 9-channel
    inpainting model reads the masked image from the conditioning."""
    g = Graph()
    ck, pos, neg, lat = base(g)
    m = g.add("solid_mask", "m", value=0.0, width=64, height=64)
    box = g.add("solid_mask", "box", value=1.0, width=24, height=24)
    mask = g.add("mask_composite", "mask", destination=m["mask"], source=box["mask"], x=16,
                 y=16, operation="add")
    img = g.add("empty_image", "img", width=64, height=64, color="#808040")
    imc = g.add("inpaint_model_conditioning", "imc", positive=pos["conditioning"],
                negative=neg["conditioning"], vae=ck["vae"], pixels=img["image"],
                mask=mask["mask"])
    enc = g.add("vae_encode", "enc", vae=ck["vae"], image=img["image"])
    nm = g.add("set_latent_noise_mask", "nm", latent=enc["latent"], mask=mask["mask"])
    common = dict(model=ck["model"], seed=2, steps=4, cfg=5.0)
    g.add("sampler", "a", positive=imc["positive"], negative=imc["negative"],
          latent=imc["latent"], **common)
    g.add("sampler", "b", positive=pos["conditioning"], negative=neg["conditioning"],
          latent=nm["latent"], **common)
    assert close(latent_of(model_executor, g, "a"), latent_of(model_executor, g, "b"))

    ck9 = g.add("load_checkpoint", "ck9", ckpt_name="tiny-sd15-inpaint.safetensors")
    p9 = g.add("text_encode", "p9", clip=ck9["clip"], text=PROMPT)
    n9 = g.add("text_encode", "n9", clip=ck9["clip"], text="")
    imc9 = g.add("inpaint_model_conditioning", "imc9", positive=p9["conditioning"],
                 negative=n9["conditioning"], vae=ck9["vae"], pixels=img["image"],
                 mask=mask["mask"], noise_mask=False)
    g.add("sampler", "c", model=ck9["model"], positive=imc9["positive"],
          negative=imc9["negative"], latent=imc9["latent"], seed=2, steps=3, cfg=5.0,
          denoise=0.7)
    out = latent_of(model_executor, g, "c")
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_a_unet_on_its_own_samples_like_the_checkpoint(tiny_models, tmp_path):
    """ComfyUI's UNETLoader: the tiny SD 1.5 UNet as an original-layout single file and as
    a diffusers folder in diffusion_models/, with the checkpoint's CLIP and VAE."""
    import shutil

    from safetensors.torch import load_file, save_file

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    full = load_file(tiny_models / "checkpoints" / "tiny-sd15.safetensors")
    save_file({k: v for k, v in full.items() if k.startswith("model.diffusion_model.")},
              folder / "tiny-unet.safetensors")
    shutil.copytree(tiny_models / "checkpoints" / "tiny-sd15.config",
                    folder / "tiny-unet.config")
    shutil.copytree(tiny_models / "diffusers" / "tiny-sd15" / "unet", folder / "tiny-unet-dir")
    executor = Executor(models=ModelManager(paths=ModelFolders(
        [tiny_models, tmp_path], use_env=False, use_config=False)))
    g = Graph()
    ck, pos, neg, lat = base(g)
    common = dict(positive=pos["conditioning"], negative=neg["conditioning"],
                  latent=lat["latent"], seed=4, steps=3, cfg=5.0)
    g.add("sampler", "ref", model=ck["model"], **common)
    for name in ("tiny-unet.safetensors", "tiny-unet-dir"):
        u = g.add("load_diffusion_model", unet_name=name)
        g.add("sampler", f"s-{name}", model=u["model"], **common)
    ref = latent_of(executor, g, "ref")
    assert close(latent_of(executor, g, "s-tiny-unet.safetensors"), ref)
    assert close(latent_of(executor, g, "s-tiny-unet-dir"), ref)
    bad = folder / "not-a-unet.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, bad)
    g.add("load_diffusion_model", "bad", unet_name="not-a-unet.safetensors")
    r = executor.run(g, ["bad"])
    assert not r.ok and "Flux" in (r.failures["bad"].hint or "")
