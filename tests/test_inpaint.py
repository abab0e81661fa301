"""Inpainting and outpainting: both kinds of models, parity with diffusers' inpainting
pipeline, unmasked pixels untouched, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Graph, OutRef
from engine.runtime import generator_for

pytestmark = pytest.mark.slow
PROMPT = "a blue square"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inpaint")
    rng = np.random.default_rng(0)
    photo = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(folder / "photo.png")
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[16:40, 24:48] = 255  # aligned to the 8-pixel latent grid
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "nomask.png")
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(folder / "small.png")
    return folder


def graph(pictures, ckpt, kind, mask="mask.png", seed=9):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name=ckpt)
    img = g.add("load_image", "img", path=str(pictures / "photo.png"))
    m = g.add("load_image_mask", "m", path=str(pictures / mask), channel="red")
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
    if kind == "inpaint-model":
        lat = g.add("vae_encode_inpaint", "enc", vae=ck["vae"], image=img["image"],
                    mask=m["mask"], grow_mask_by=0)
    else:
        enc = g.add("vae_encode", "enc", vae=ck["vae"], image=img["image"])
        lat = g.add("set_latent_noise_mask", "nm", latent=enc["latent"], mask=m["mask"])
    s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
              negative=neg["conditioning"], latent=lat["latent"], seed=seed, steps=6, cfg=6.0,
              scheduler="diffusers")
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
    c = g.add("composite_images", "c", destination=img["image"], source=d["image"],
              mask=m["mask"])
    g.add("preview_image", "raw", images=d["image"])
    g.add("preview_image", "out", images=c["image"])
    return g


def pipe_for(tiny_models, name):
    from diffusers import StableDiffusionInpaintPipeline

    from nodes.diffusion.loading import quiet
    from nodes.diffusion.sampling import make_scheduler

    quiet()
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        tiny_models / "diffusers" / name, safety_checker=None, requires_safety_checker=False,
        local_files_only=True)
    pipe.scheduler = make_scheduler(dict(pipe.scheduler.config), "euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tensors(pictures):
    photo = torch.from_numpy(np.asarray(Image.open(pictures / "photo.png"), np.float32) / 255)
    mask = torch.from_numpy(np.asarray(Image.open(pictures / "mask.png"), np.float32)[..., 0]
                            / 255)
    return photo.permute(2, 0, 1)[None], mask[None, None]


@pytest.mark.parametrize("kind,ckpt", [("inpaint-model", "tiny-sd15-inpaint"),
                                       ("noise-mask", "tiny-sd15")])
def test_matches_diffusers_inpaint_pipeline(tiny_models, model_executor, pictures, kind, ckpt):
    r = model_executor.run(graph(pictures, ckpt, kind), ["raw", "enc"])
    assert r.ok, r.failures
    latents = r["enc"]["latent"].samples
    photo, mask = tensors(pictures)
    pipe = pipe_for(tiny_models, ckpt)
    image = photo if kind == "inpaint-model" else latents
    ref = pipe(PROMPT, image=image, mask_image=mask, masked_image_latents=latents,
               negative_prompt="", height=64, width=64, strength=1.0, num_inference_steps=6,
               guidance_scale=6.0, output_type="pt", generator=[generator_for(9, 0)]).images
    assert (r["raw"]["ui"]["images"] - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("kind,ckpt", [("inpaint-model", "tiny-sd15-inpaint"),
                                       ("noise-mask", "tiny-sd15")])
def test_composite_keeps_unmasked_pixels_bit_for_bit(model_executor, pictures, kind, ckpt):
    r = model_executor.run(graph(pictures, ckpt, kind))
    out, raw = r["out"]["ui"]["images"], r["raw"]["ui"]["images"]
    photo, mask = tensors(pictures)
    keep = mask[0, 0] == 0
    assert torch.equal(out[..., keep], photo[..., keep])
    assert torch.equal(out[..., ~keep], raw[..., ~keep])


def test_zero_mask_returns_the_source(model_executor, pictures):
    r = model_executor.run(graph(pictures, "tiny-sd15", "noise-mask", mask="nomask.png"),
                           ["out", "s", "enc"])
    assert torch.equal(r["s"]["latent"].samples, r["enc"]["latent"].samples)
    photo, _ = tensors(pictures)
    assert torch.equal(r["out"]["ui"]["images"], photo)


def test_mask_size_mismatch_names_both_sizes(model_executor, pictures):
    for kind, node in (("noise-mask", "nm"), ("inpaint-model", "enc")):
        r = model_executor.run(graph(pictures, "tiny-sd15", kind, mask="small.png"))
        f = r.failures[node]
        assert f.input == "mask" and "64x64" in f.expected and f.got == "'64x32'"


def test_inpainting_model_without_a_mask_is_refused(model_executor, pictures):
    g = graph(pictures, "tiny-sd15-inpaint", "noise-mask")
    g.connect(("enc", "latent"), ("s", "latent"))  # skip the noise mask
    f = model_executor.run(g).failures["s"]
    assert f.input == "latent" and "with a mask" in f.expected


def test_pad_for_outpaint(builtin_registry, pictures):
    from engine import Executor

    g = Graph(builtin_registry)
    img = g.add("load_image", "img", path=str(pictures / "photo.png"))
    g.add("pad_for_outpaint", "p", image=img["image"], left=16, right=8, top=0, bottom=24,
          feathering=8)
    r = Executor().run(g, ["p", "img"])
    out, mask = r["p"]["image"], r["p"]["mask"]
    assert out.shape == (1, 3, 88, 88) and mask.shape == (1, 1, 88, 88)
    assert torch.equal(out[..., 0:64, 16:80], r["img"]["image"])
    assert (out[..., 64:, :] == 0.5).all() and (mask[..., 64:, :] == 1).all()
    assert mask[0, 0, 30, 40] == 0  # deep inside the original
    assert 0 < mask[0, 0, 30, 17] < 1  # feathered near the left edge


def test_inpaint_controlnet_with_an_ordinary_checkpoint(model_executor, pictures):
    g = graph(pictures, "tiny-sd15", "noise-mask")
    plain = model_executor.run(g, ["raw"])["raw"]["ui"]["images"]
    cn = g.add("load_controlnet", "cn", control_net_name="tiny-controlnet")
    hint = g.add("controlnet_inpaint_image", "hint", image=OutRef("img", "image"),
                 mask=OutRef("m", "mask"))
    ap = g.add("apply_controlnet", "ap", conditioning=OutRef("pos", "conditioning"),
               control_net=cn["control_net"], image=hint["image"])
    g.connect(ap["conditioning"], ("s", "positive"))
    r = model_executor.run(g, ["raw", "hint"])
    assert r.ok, r.failures
    h = r["hint"]["image"]
    photo, mask = tensors(pictures)
    assert (h[..., mask[0, 0] > 0.5] == -1).all()
    assert (r["raw"]["ui"]["images"] - plain).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["telea", "navier-stokes", "neutral"])
def test_fill_masked_area_paints_over_the_old_content(builtin_registry, tmp_path, mode):
    from engine import Executor

    scene = np.zeros((64, 64, 3), np.uint8)
    scene[:] = (40, 90, 200)  # a blue background ...
    scene[20:36, 24:40] = (230, 30, 30)  # ... with a red square on it
    Image.fromarray(scene).save(tmp_path / "scene.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:44] = 255  # the square and 4 px around it
    mask[16:40, 44] = 128  # a soft edge blends
    Image.fromarray(mask).save(tmp_path / "mask.png")
    g = Graph(builtin_registry)
    img = g.add("load_image", "img", path=str(tmp_path / "scene.png"))
    m = g.add("load_image_mask", "m", path=str(tmp_path / "mask.png"), channel="luminance")
    g.add("fill_masked_area", "f", image=img["image"], mask=m["mask"], mode=mode)
    r = Executor().run(g, ["f", "img"])
    out, src = r["f"]["image"], r["img"]["image"]
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[16:40, 20:45] = False
    assert torch.equal(out[..., outside], src[..., outside])
    inside = out[0, :, 20:36, 24:40].reshape(3, -1)
    if mode == "neutral":
        assert torch.allclose(inside, torch.full_like(inside, 0.5))
        # the soft edge (mask 128/255) is half fill, half source
        w = 128 / 255
        want = src[0, :, 16:40, 44] * (1 - w) + 0.5 * w
        assert torch.allclose(out[0, :, 16:40, 44], want, atol=1e-6)
    else:  # the surroundings carried inward: blue, no red left
        blue = torch.tensor([40, 90, 200]).float().div(255)[:, None]
        assert (inside - blue).abs().max() < 0.05


def test_fill_masked_area_refuses_a_mask_of_another_size(builtin_registry, pictures):
    from engine import Executor

    g = Graph(builtin_registry)
    img = g.add("load_image", "img", path=str(pictures / "photo.png"))
    m = g.add("load_image_mask", "m", path=str(pictures / "small.png"), channel="red")
    g.add("fill_masked_area", "f", image=img["image"], mask=m["mask"])
    f = Executor().run(g, ["f"]).failures["f"]
    assert f.input == "mask" and "64x64" in f.expected
