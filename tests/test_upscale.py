"""Model upscaling in tiles, plain image / latent upscaling."""

import pytest
import torch

from engine import Graph, OutRef

pytestmark = pytest.mark.slow


def upscale(ex, model, image, **params):
    """Upscale `image` (a tensor) with the model file, through the real nodes."""
    from engine.registry import Registry
    from engine.spec import Node, Output
    from engine.types import T

    class Given(Node):
        type = "_given"
        cacheable = False
        outputs = (Output("image", T.image),)

        def run(self, ctx):
            return {"image": image}

    reg = Registry()
    reg.load_entry_points()
    reg.register(Given)
    g = Graph(reg)
    g.add("_given", "img")
    m = g.add("load_upscale_model", "m", upscale_model_name=model)
    g.add("upscale_with_model", "up", upscale_model=m["upscale_model"],
          image=OutRef("img", "image"), **params)
    r = ex.run(g, ["up", "m"])
    return r


@pytest.mark.parametrize("model,scale", [("tiny-esrgan-x2.safetensors", 2),
                                         ("tiny-esrgan-x4.pth", 4),
                                         ("tiny-swinir-x2.safetensors", 2)])
def test_tiled_equals_untiled_for_every_architecture(model_executor, model, scale):
    image = torch.rand(1, 3, 40, 56)
    whole = upscale(model_executor, model, image, tile_size=512, overlap=0)
    assert whole.ok, whole.failures
    assert whole["m"]["upscale_model"].get("scale") == scale
    tiled = upscale(model_executor, model, image, tile_size=24, overlap=12)
    a, b = whole["up"]["image"], tiled["up"]["image"]
    assert a.shape == b.shape == (1, 3, 40 * scale, 56 * scale)
    assert (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.1


@pytest.mark.parametrize("shape", [(1, 3, 13, 9), (1, 3, 1, 20), (1, 3, 20, 1), (2, 3, 16, 24)])
def test_odd_sizes_thin_images_and_batches(model_executor, shape):
    image = torch.rand(*shape)
    for model in ("tiny-esrgan-x2.safetensors", "tiny-swinir-x2.safetensors"):
        r = upscale(model_executor, model, image, tile_size=64, overlap=8)
        assert r.ok, r.failures
        assert r["up"]["image"].shape == (shape[0], 3, shape[2] * 2, shape[3] * 2)


def test_progress_per_tile_and_cancellation(model_executor, events, monkeypatch):
    events.attach(model_executor)
    r = upscale(model_executor, "tiny-esrgan-x2.safetensors", torch.rand(1, 3, 64, 64),
                tile_size=32, overlap=8)
    steps = [e for e in events.named("progress") if e.node == "up"]
    assert r.ok and steps[-1].step == steps[-1].total == 9  # 3 x 3 tiles

    from engine import CancelToken
    from nodes import upscale as up

    token, tiles = CancelToken(), []
    real = up.run_model

    def counting(desc, x):
        tiles.append(1)
        if len(tiles) == 2:
            token.cancel()  # Stop pressed while the second tile runs
        return real(desc, x)

    monkeypatch.setattr(up, "run_model", counting)
    original = model_executor.run

    def run_with_token(g, targets=None, **kw):
        return original(g, targets, cancel=token, **kw)

    monkeypatch.setattr(model_executor, "run", run_with_token)
    r = upscale(model_executor, "tiny-esrgan-x2.safetensors", torch.rand(1, 3, 64, 64),
                tile_size=32, overlap=8)
    assert r.status == "cancelled" and len(tiles) == 2


def test_alpha_channel_is_kept(model_executor):
    rgba = torch.rand(1, 4, 12, 10)
    r = upscale(model_executor, "tiny-esrgan-x2.safetensors", rgba)
    out = r["up"]["image"]
    assert out.shape == (1, 4, 24, 20)
    nearest = rgba[:, 3].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert (out[:, 3] - nearest).abs().mean() < 0.1


def test_unsupported_and_non_upscaler_files_fail_clearly(tiny_models, model_executor):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tiny_models / "upscale_models" / "junk.safetensors")
    r = upscale(model_executor, "junk.safetensors", torch.rand(1, 3, 8, 8))
    f = r.failures["m"]
    assert f.input == "upscale_model_name" and "spandrel" in f.expected
    r = upscale(model_executor, str(tiny_models / "loras" / "tiny-lora.safetensors"),
                torch.rand(1, 3, 8, 8))
    assert r.failures["m"].input == "upscale_model_name"


def test_upscale_nodes_sizes(model_executor):
    from engine.values import Latent

    image = torch.rand(1, 3, 20, 30)
    r = upscale(model_executor, "tiny-esrgan-x4.pth", image)
    assert r["up"]["image"].shape == (1, 3, 80, 120)
    from nodes.upscale import UpscaleImageBy, UpscaleLatent, UpscaleLatentBy

    class Ctx:
        models = model_executor.models

    out = UpscaleImageBy().run(Ctx(), image, "bicubic", 1.5)["image"]
    assert out.shape == (1, 3, 30, 45)
    lat = Latent(torch.rand(1, 4, 8, 12), noise_mask=torch.ones(1, 1, 64, 96))
    up = UpscaleLatent().run(Ctx(), lat, "bilinear", 192, 0)["latent"]
    assert up.samples.shape == (1, 4, 16, 24) and up.noise_mask.shape == (1, 1, 128, 192)
    assert UpscaleLatentBy().run(Ctx(), lat, "nearest", 1.5)["latent"].samples.shape == \
        (1, 4, 12, 18)


def test_upscale_by_model_to_an_exact_factor(model_executor):
    from engine.registry import Registry

    reg = Registry()
    reg.load_entry_points()
    g = Graph(reg)
    img = g.add("solid_mask", "s", value=0.3, width=21, height=13)
    im = g.add("mask_to_image", "i", mask=img["mask"])
    m = g.add("load_upscale_model", "m", upscale_model_name="tiny-esrgan-x4.pth")
    g.add("upscale_with_model_by", "up", upscale_model=m["upscale_model"], image=im["image"],
          factor=2.0, method="area")
    r = model_executor.run(g, ["up"])
    assert r.ok, r.failures
    assert r["up"]["image"].shape == (1, 3, 26, 42)


def tiled_graph(ckpt="tiny-sd15", size=64, tile=None, seed=4):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name=ckpt)
    pos = g.add("text_encode", "pos", clip=ck["clip"], text="a red circle")
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
    lat = g.add("empty_latent", "lat", width=size, height=size)
    params = dict(model=ck["model"], positive=pos["conditioning"], negative=neg["conditioning"],
                  latent=lat["latent"], seed=seed, steps=4, cfg=6.0, sampler="euler")
    if tile is None:
        g.add("sampler", "s", **params)
    else:
        g.add("tiled_sampler", "s", tile_width=tile[0], tile_height=tile[0],
              tile_overlap=tile[1], **params)
    return g


def test_tiled_sampler_with_one_tile_equals_the_sampler(model_executor):
    plain = model_executor.run(tiled_graph(), ["s"])["s"]["latent"].samples
    tiled = model_executor.run(tiled_graph(tile=(64, 16)), ["s"])["s"]["latent"].samples
    assert torch.equal(plain, tiled)


def border_ratio(latents, borders):
    cols = (latents[..., 1:] - latents[..., :-1]).abs().mean(dim=(0, 1, 2))
    return (cols[borders].max() / cols.median()).item()


def test_tiled_sampler_makes_any_size_without_seams(model_executor):
    # The same noise goes into every run, so tiled minus untiled isolates what tiling does;
    # a seam is a jump in that difference at a tile border. 256 px = 32 latent columns.
    whole = model_executor.run(tiled_graph(size=256), ["s"])["s"]["latent"].samples
    soft = model_executor.run(tiled_graph(size=256, tile=(128, 64)), ["s"])["s"]["latent"]
    hard = model_executor.run(tiled_graph(size=256, tile=(128, 0)), ["s"])["s"]["latent"]
    assert soft.samples.shape == (1, 4, 32, 32)
    hard_seam = border_ratio(hard.samples - whole, [15])  # tiles at 0 and 16
    soft_seam = border_ratio(soft.samples - whole, [7, 15, 23])  # tiles at 0, 8, 16
    assert hard_seam > 1.8  # the measure sees a seam where there is one (about 2.1 here)
    assert soft_seam < 1.5  # blended tiles step across their borders like anywhere else


def test_tiled_sampler_crops_control_images_to_tiles(model_executor, tmp_path):
    import numpy as np
    from PIL import Image

    png = tmp_path / "c.png"
    noise = np.random.default_rng(1).random((128, 128, 3))
    Image.fromarray((noise * 255).astype(np.uint8)).save(png)
    g = tiled_graph(size=128, tile=(64, 32))
    img = g.add("load_image", "img", path=str(png))
    cn = g.add("load_controlnet", "cn", control_net_name="tiny-controlnet")
    ap = g.add("apply_controlnet", "ap", conditioning=OutRef("pos", "conditioning"),
               control_net=cn["control_net"], image=img["image"])
    plain = model_executor.run(g, ["s"])["s"]["latent"].samples
    g.connect(ap["conditioning"], ("s", "positive"))
    r = model_executor.run(g, ["s"])
    assert r.ok, r.failures
    assert (r["s"]["latent"].samples - plain).abs().max() > 1e-4


@pytest.mark.parametrize("name,size", [("upscale_model", (1024, 640)), ("hires_fix", (96, 96)),
                                       ("tiled_refine_4x", (512, 320))])
def test_upscale_example_workflows_run_with_tiny_models(model_executor, tmp_path, name, size):
    from pathlib import Path

    from PIL import Image

    from engine import load

    g = load(Path(__file__).resolve().parent.parent / "resources" / "workflows" / f"{name}.json")
    if "model" in g.nodes:
        g.set_param("model", "upscale_model_name", "tiny-esrgan-x4.pth")
    if "ckpt" in g.nodes:
        g.set_param("ckpt", "ckpt_name", "tiny-sd15.safetensors")
        for sampler in ("sampler", "refine"):
            if sampler in g.nodes:
                g.set_param(sampler, "steps", 2)
    if name == "hires_fix":
        g.set_param("latent", "width", 64)
        g.set_param("latent", "height", 64)
    if name == "tiled_refine_4x":  # smaller for CI: 2x, refined in 256 px tiles
        g.set_param("up", "factor", 2.0)
        g.set_param("refine", "tile_width", 256)
        g.set_param("refine", "tile_height", 256)
        g.set_param("refine", "tile_overlap", 64)
    r = model_executor.run(g, output_dir=tmp_path)
    assert r.ok, r.failures
    [png] = r.files
    assert Image.open(png).size == size
