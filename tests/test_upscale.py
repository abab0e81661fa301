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


def test_progress_per_tile_and_cancellation(model_executor, events):
    events.attach(model_executor)
    r = upscale(model_executor, "tiny-esrgan-x2.safetensors", torch.rand(1, 3, 64, 64),
                tile_size=32, overlap=8)
    steps = [e for e in events.named("progress") if e.node == "up"]
    assert r.ok and steps[-1].step == steps[-1].total == 9  # 3 x 3 tiles


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
