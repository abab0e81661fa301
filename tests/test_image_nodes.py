"""The image and mask nodes, run through the executor as a user's graph runs them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Executor, Graph
from engine.pngmeta import WORKFLOW_KEY, read_text


def run1(reg, type_, outputs=("image",), **values):
    """Run one node (with Tensor inputs fed through a helper graph) and return its outputs."""
    g = Graph(reg)
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    params = {k: v for k, v in values.items() if k not in tensors}
    node = g.add(type_, "x", **params)
    ex = Executor()
    spec = reg.get(type_)
    for name in tensors:
        g.add("_const_" + spec.input_map[name].type.value.lower(), f"c_{name}")
        g.nodes[f"c_{name}"].params["key"] = name
        g.connect((f"c_{name}", "value"), ("x", name))
    _CONST.update(tensors)
    r = ex.run(g, [node.id])
    if not r.ok:
        raise AssertionError(next(iter(r.failures.values())).message)
    return r[node.id]


_CONST = {}


@pytest.fixture
def reg(builtin_registry):
    from engine.registry import Registry
    from engine.spec import Node, Output, String
    from engine.types import T

    class Const(Node):  # hands a tensor from the test to the node under test
        type = "_const_image"
        cacheable = False
        inputs = (String("key", ""),)
        outputs = (Output("value", T.image),)

        def run(self, ctx, key):
            return {"value": _CONST[key]}

    class ConstMask(Const):
        type = "_const_mask"
        outputs = (Output("value", T.mask),)

    r = Registry()
    r.register_all(builtin_registry)
    r.register(Const)
    r.register(ConstMask)
    return r


def failure(reg, type_, **values):
    with pytest.raises(AssertionError) as info:
        run1(reg, type_, **values)
    return str(info.value)


def write_rgba(path, size=(6, 4)):
    arr = np.zeros((size[1], size[0], 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 255
    arr[0, 0, 3] = 0  # one transparent pixel
    Image.fromarray(arr, "RGBA").save(path)


def test_load_image_png_jpeg_webp_and_alpha_mask(tmp_path, reg):
    write_rgba(tmp_path / "a.png")
    out = run1(reg, "load_image", path=str(tmp_path / "a.png"))
    assert out["image"].shape == (1, 3, 4, 6) and out["image"][0, 0].min() == 1.0
    assert out["mask"].shape == (1, 1, 4, 6)
    assert out["mask"][0, 0, 0, 0] == 1.0 and out["mask"].sum() == 1.0
    rgb = Image.new("RGB", (5, 3), (0, 255, 0))
    for ext in ("jpg", "webp"):
        rgb.save(tmp_path / f"g.{ext}", quality=100)
        out = run1(reg, "load_image", path=str(tmp_path / f"g.{ext}"))
        assert out["image"].shape == (1, 3, 3, 5) and out["mask"].sum() == 0
        assert out["image"][0, 1].mean() > 0.95


def test_load_image_errors_name_the_input(tmp_path, reg):
    msg = failure(reg, "load_image", path=str(tmp_path / "missing.png"))
    assert "input 'path'" in msg and "existing image file" in msg
    (tmp_path / "fake.png").write_text("not an image")
    assert "could not be decoded" in failure(reg, "load_image", path=str(tmp_path / "fake.png"))


def test_save_image_numbers_files_never_overwrites_and_embeds_the_workflow(tmp_path, reg):
    g = Graph(reg)
    img = tmp_path / "in.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(img)
    load = g.add("load_image", "l", path=str(img))
    g.add("save_image", "s", images=load["image"], filename_prefix="shots/test")
    out = tmp_path / "out"
    (out / "shots").mkdir(parents=True)
    (out / "shots" / "test_00001.png").write_bytes(b"someone else's file")
    r = Executor(output_dir=out).run(g)
    [f] = r.files
    assert f.endswith("shots/test_00002.png")
    assert (out / "shots" / "test_00001.png").read_bytes() == b"someone else's file"
    embedded = json.loads(read_text(f)[WORKFLOW_KEY])
    assert embedded["nodes"][0]["params"]["path"] == str(img)
    assert np.asarray(Image.open(f))[0, 0].tolist() == [10, 20, 30]
    # cached while the file exists; deleting it makes Save Image run again
    ex = Executor(output_dir=out)
    ex.run(g)
    assert ex.run(g).computed == []
    for p in (out / "shots").glob("test_0000[2-9].png"):
        p.unlink()
    assert ex.run(g).computed == ["s"]


def test_save_image_refuses_prefixes_outside_the_output_folder(reg):
    img = torch.zeros(1, 3, 2, 2)
    for bad in ("../escape", "/abs/path"):
        assert "filename_prefix" in failure(reg, "save_image", images=img, filename_prefix=bad)


def test_resize_modes(reg):
    img = torch.rand(2, 3, 20, 40)
    assert run1(reg, "resize_image", image=img, width=20, height=0)["image"].shape == (2, 3, 10, 20)
    for method in ("nearest", "bilinear", "bicubic", "area", "lanczos"):
        out = run1(reg, "resize_image", image=img, width=13, height=7, method=method)["image"]
        assert out.shape == (2, 3, 7, 13) and 0 <= out.min() and out.max() <= 1
    fit = run1(reg, "resize_image", image=img, width=30, height=30, fit="fit")["image"]
    fill = run1(reg, "resize_image", image=img, width=30, height=30, fit="fill")["image"]
    assert fit.shape[-2:] == (15, 30) and fill.shape[-2:] == (30, 30)
    assert "a width or a height" in failure(reg, "resize_image", image=img, width=0, height=0)


def test_crop_and_pad(reg):
    img = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) / 120
    crop = run1(reg, "crop_image", image=img, x=1, y=2, width=10, height=10)["image"]
    assert torch.equal(crop, img[..., 2:, 1:])  # cut at the edge
    assert "corner inside the 5x4 image" in failure(reg, "crop_image", image=img, x=5, y=0)
    out = run1(reg, "pad_image", image=img, left=1, top=2, right=3, bottom=0, color="#ff0000")
    padded, mask = out["image"], out["mask"]
    assert padded.shape == (2, 3, 6, 9) and torch.equal(padded[..., 2:, 1:6], img)
    assert padded[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert mask.sum() == 2 * (6 * 9 - 4 * 5) and mask[0, 0, 2:, 1:6].sum() == 0
    edge = run1(reg, "pad_image", image=img, left=2, mode="edge")["image"]
    assert torch.equal(edge[..., 0], img[..., 0])
    assert "reflect" in failure(reg, "pad_image", image=img, left=9, mode="reflect")


def test_blend_modes_and_size_mismatch(reg):
    a, b = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.2)
    assert torch.allclose(run1(reg, "blend_images", image_a=a, image_b=b, factor=1.0,
                               mode="multiply")["image"], a * b)
    assert torch.allclose(run1(reg, "blend_images", image_a=a, image_b=b, factor=0.5)["image"],
                          (a + b) / 2)
    msg = failure(reg, "blend_images", image_a=a, image_b=torch.zeros(1, 3, 5, 4))
    assert "image_b" in msg and "4x4" in msg and "4x5" in msg


def test_composite_with_mask_keeps_unmasked_pixels_bit_for_bit(reg):
    dst = torch.rand(1, 3, 8, 8)
    src = torch.rand(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 0.5
    out = run1(reg, "composite_images", destination=dst, source=src, x=2, y=3, mask=mask)["image"]
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[4:6, 3:5] = False
    assert torch.equal(out[..., keep], dst[..., keep])
    assert torch.allclose(out[..., 4:6, 3:5], (dst[..., 4:6, 3:5] + src[..., 1:3, 1:3]) / 2)
    # a source hanging over the edge is clipped; no mask pastes it whole
    out = run1(reg, "composite_images", destination=dst, source=src, x=6, y=-2)["image"]
    assert torch.equal(out[..., 0:2, 6:8], src[..., 2:4, 0:2])


def test_mask_nodes(reg):
    img = torch.zeros(1, 3, 9, 9)
    img[:, 0, 4, 4] = 1.0  # one red pixel
    m = run1(reg, "mask_from_color", image=img, color="red")["mask"]
    assert m.sum() == 1 and m[0, 0, 4, 4] == 1
    grown = run1(reg, "grow_mask", mask=m, pixels=2)["mask"]
    assert grown[0, 0, 4, 2] == 1 and grown[0, 0, 4, 1] == 0 and 9 < grown.sum() < 25
    shrunk = run1(reg, "grow_mask", mask=grown, pixels=-2)["mask"]
    assert shrunk[0, 0, 4, 4] == 1 and shrunk.sum() < grown.sum()
    inv = run1(reg, "invert_mask", mask=m)["mask"]
    assert torch.equal(inv, 1 - m)
    blurred = run1(reg, "blur_mask", mask=m, radius=3.0)["mask"]
    assert abs(blurred.sum().item() - 1.0) < 1e-4 and blurred[0, 0, 4, 4] < 1
    lum = run1(reg, "image_to_mask", image=img, channel="red")["mask"]
    assert torch.equal(lum, m)
    assert run1(reg, "mask_to_image", mask=m)["image"].shape == (1, 3, 9, 9)
    th = run1(reg, "threshold_mask", mask=blurred, threshold=0.01)["mask"]
    assert set(th.unique().tolist()) == {0.0, 1.0}
    assert "colour such as" in failure(reg, "mask_from_color", image=img, color="not-a-colour")


def test_primitives_feed_widget_inputs(reg):
    g = Graph(reg)
    w = g.add("int", "w", value=6)
    g.add("solid_mask", "m", value=0.5, height=3)
    g.connect(w["value"], ("m", "width"))
    r = Executor().run(g, ["m"])
    assert r["m"]["mask"].shape == (1, 1, 3, 6)


def test_controlnet_preprocessors(reg):
    img = torch.zeros(1, 3, 32, 32)
    img[..., 8:24, 8:24] = 1.0  # a white square
    edges = run1(reg, "canny", image=img, low_threshold=50, high_threshold=150)["image"]
    assert edges.shape == (1, 3, 32, 32) and set(edges.unique().tolist()) <= {0.0, 1.0}
    assert edges[0, 0, 16, 16] == 0 and edges[0, 0, 2, 2] == 0
    assert edges[0, 0, 8:24, 7:9].sum() > 0  # on the square's left border
    assert "low_threshold" in failure(reg, "canny", image=img, low_threshold=200,
                                      high_threshold=100)
    soft = run1(reg, "soft_edges", image=img, blur=0.0)["image"]
    assert soft.max() == 1.0 and soft[0, 0, 16, 16] == 0 and soft[0, 0, 16, 8] > 0.5
    line = run1(reg, "lineart", image=img)["image"]
    assert set(line.unique().tolist()) == {0.0, 1.0} and line[0, 0, 16, 16] == 0
    scribble = run1(reg, "threshold_image", image=img, threshold=0.5, invert=True)["image"]
    assert scribble[0, 0, 16, 16] == 0 and scribble[0, 0, 0, 0] == 1
    depth = run1(reg, "greyscale_depth", image=torch.rand(1, 3, 8, 8))["image"]
    assert torch.equal(depth[:, 0], depth[:, 1]) and torch.equal(depth[:, 1], depth[:, 2])
    noise = torch.rand(1, 3, 32, 32)
    tiled = run1(reg, "tile_image", image=noise, downscale=4.0)["image"]
    assert tiled.shape == noise.shape
    assert (tiled[..., 1:] - tiled[..., :-1]).abs().mean() < 0.5 * \
        (noise[..., 1:] - noise[..., :-1]).abs().mean()


def test_composite_feather_stays_inside_the_mask(reg):
    dst = torch.rand(1, 3, 16, 16)
    src = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    out = run1(reg, "composite_images", destination=dst, source=src, mask=mask,
               feather=3)["image"]
    outside = mask[0, 0] == 0
    assert torch.equal(out[..., outside], dst[..., outside])
    assert torch.equal(out[..., 8, 8], src[..., 8, 8])  # the middle is all source
    edge = out[..., 4, 8]
    assert not torch.equal(edge, src[..., 4, 8]) and not torch.equal(edge, dst[..., 4, 8])


# ---- image and mask utilities added for ComfyUI workflows ----------------------------------

def run_one(type_id, **values):
    from engine import Executor, Graph

    g = Graph()
    wires = {k: v for k, v in values.items() if isinstance(v, tuple)}
    params = {k: v for k, v in values.items() if not isinstance(v, tuple)}
    ids = {}
    for name, (src_type, src_values) in wires.items():
        ids[name] = g.add(src_type, **src_values)
    node = g.add(type_id, "x", **params, **{k: ids[k][ids[k].outputs[0]] for k in wires})
    r = Executor().run(g, [node.id])
    assert r.ok, r.failures
    return r["x"]


def test_mask_composite_feather_empty_image_invert_and_megapixels():
    import torch

    dst = ("solid_mask", {"value": 0.0, "width": 8, "height": 8})
    src = ("solid_mask", {"value": 1.0, "width": 4, "height": 4})
    m = run_one("mask_composite", destination=dst, source=src, x=6, y=-2, operation="add")["mask"]
    assert m.sum().item() == 4 and m[0, 0, :2, 6:].eq(1).all()  # clipped at the edges
    half = ("solid_mask", {"value": 0.5, "width": 8, "height": 8})
    assert run_one("mask_composite", destination=half, source=src, operation="subtract")[
        "mask"][0, 0, 0, 0] == 0
    x = run_one("mask_composite", destination=half, source=src, operation="xor")["mask"]
    assert x[0, 0, 1, 1] == 1 and x[0, 0, 7, 7] == 0.5  # 0.5 is "off" for logic; outside kept
    f = run_one("feather_mask", mask=("solid_mask", {"value": 1.0, "width": 8, "height": 4}),
                left=4)["mask"]
    assert torch.allclose(f[0, 0, 0, :5], torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0]))
    img = run_one("empty_image", width=5, height=3, batch_size=2, color="#ff8000")["image"]
    assert img.shape == (2, 3, 3, 5)
    assert img[0, :, 0, 0].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    inv = run_one("invert_image", image=("empty_image", {"width": 2, "height": 2,
                                                         "color": "#ff8000"}))["image"]
    assert torch.allclose(inv[0, :, 0, 0], torch.tensor([0.0, 1 - 128 / 255, 1.0]))
    big = run_one("scale_to_megapixels", image=("empty_image", {"width": 200, "height": 100}),
                  megapixels=0.5)["image"]
    assert abs(big.shape[-1] * big.shape[-2] - 0.5 * 1024 * 1024) < 2000
    assert big.shape[-1] == 2 * big.shape[-2]
    shown = run_one("preview_mask", mask=half)
    assert shown["ui"]["images"].shape == (1, 3, 8, 8)


def test_soft_light_blend_keeps_black_white_and_grey_identity():
    import torch

    from nodes.image import _blend

    a = torch.linspace(0, 1, 11).view(1, 1, 1, 11).repeat(1, 3, 1, 1)
    assert torch.allclose(_blend(a, torch.full_like(a, 0.5), "soft_light"), a)
    darker = _blend(a, torch.zeros_like(a), "soft_light")
    lighter = _blend(a, torch.ones_like(a), "soft_light")
    assert (darker <= a + 1e-6).all() and (lighter >= a - 1e-6).all()


def test_notes_never_run():
    from engine import Executor, Graph

    g = Graph()
    g.add("note", "n", text="hello", markdown=True)
    m = g.add("solid_mask", "m")
    g.add("preview_mask", "p", mask=g.add("invert_mask", "i", mask=m["mask"])["mask"])
    assert g.output_nodes() == ["p"]
    r = Executor().run(g)
    assert r.ok and "n" not in r.computed and "p" in r.computed
