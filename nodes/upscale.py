"""Upscaling: model upscalers (every architecture spandrel reads), run in blended tiles
so memory stays bounded at any size; plain resampling of images and latents."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.modelpaths import ModelKind
from engine.registry import Registry
from engine.runtime.models import ModelRef
from engine.spec import Choice, Float, In, Int, Node, Output, String
from engine.types import LinkType, T
from engine.values import Latent

from ._tensors import check_image, luminance
from .image import RESIZE_METHODS, resize

UPSCALE_MODEL = LinkType("UPSCALE_MODEL", colour="#a1887f")
UPSCALE_MODELS = ModelKind("upscale_models", comfyui_keys=("upscale_models",))

LATENT_METHODS = ("nearest", "bilinear", "bicubic", "area")


def load_upscaler(path: Path) -> Any:
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    from .diffusion.loading import read_state_dict

    state = read_state_dict(path)  # safetensors, or a pickle read with weights_only
    try:
        desc = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise InputError("upscale_model_name", "an upscale model of an architecture spandrel "
                         "reads (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, ...)",
                         path.name, hint="its weights match none of them") from None
    if not isinstance(desc, ImageModelDescriptor):
        raise InputError("upscale_model_name", "an image-to-image upscale model", path.name,
                         hint=f"it is a {type(desc).__name__} ({desc.architecture.name})")
    desc.model.requires_grad_(False).eval()
    return desc


def upscaler(ctx, ref: ModelRef) -> Any:
    desc = ctx.models.get(ref.key, lambda: load_upscaler(Path(ref.source)))
    desc.model.to(ctx.models.device.torch_device())
    return desc


class LoadUpscaleModel(Node):
    type = "load_upscale_model"
    title = "Load Upscale Model"
    category = "loaders"
    description = "An upscaler (.pth / .safetensors in upscale_models/); the scale comes from it."
    inputs = (String("upscale_model_name", "", file=UPSCALE_MODELS),)
    outputs = (Output("upscale_model", UPSCALE_MODEL),)

    def run(self, ctx, upscale_model_name):
        from .diffusion.files import find, model_key

        path = find(ctx, UPSCALE_MODELS, upscale_model_name, "upscale_model_name")
        ref = ModelRef("UPSCALE_MODEL", "", str(path), model_key("upscale", path))
        desc = upscaler(ctx, ref)
        return {"upscale_model": ModelRef("UPSCALE_MODEL", desc.architecture.name, str(path),
                                          ref.key, extra=(("scale", desc.scale),))}


def auto_tile(ctx, scale: int) -> int:
    """A tile edge (input pixels) that fits comfortably in free memory."""
    free = _free_bytes(ctx)
    per_pixel = 4 * 3 * scale * scale * 48  # output plus a generous allowance for activations
    edge = int(math.sqrt(free * 0.25 / per_pixel))
    return max(64, min(1024, edge // 32 * 32))


def _free_bytes(ctx) -> int:
    import torch

    device = ctx.models.device.device
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def ramp(length: int, fade: int, start_edge: bool, end_edge: bool) -> Any:
    """Weights along one axis of a tile: 1 inside, rising over `fade` at inner edges."""
    import torch

    w = torch.ones(length)
    fade = min(fade, length // 2)
    if fade > 0:
        up = (torch.arange(fade, dtype=torch.float32) + 1) / (fade + 1)
        if not start_edge:
            w[:fade] = up
        if not end_edge:
            w[length - fade:] = up.flip(0)
    return w


def run_model(desc: Any, x: Any) -> Any:
    """Run a spandrel model on one tile, padding it to the sizes the model needs."""
    import torch.nn.functional as F

    req = desc.size_requirements
    h, w = x.shape[-2:]
    th, tw = max(h, req.minimum), max(w, req.minimum)
    if req.multiple_of > 1:
        th, tw = -(-th // req.multiple_of) * req.multiple_of, -(-tw // req.multiple_of) * \
            req.multiple_of
    if req.square:
        th = tw = max(th, tw)
    if (th, tw) != (h, w):
        mode = "reflect" if h > th - h and w > tw - w else "replicate"
        x = F.pad(x, (0, tw - w, 0, th - h), mode=mode)
    channels = desc.input_channels
    if channels == 1:
        x = luminance(x)
    elif channels == 4:
        import torch

        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    y = desc(x)
    if y.shape[1] == 1:
        y = y.expand(-1, 3, -1, -1)
    s = desc.scale
    return y[:, :3, : h * s, : w * s]


def upscale_tiled(ctx, desc: Any, image: Any, tile: int, overlap: int) -> Any:
    import torch

    s = desc.scale
    device = ctx.models.device.torch_device()
    dtype = next(desc.model.parameters()).dtype
    out_all = []
    for b in range(image.shape[0]):
        img = image[b: b + 1, :3]
        h, w = img.shape[-2:]
        ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        total = len(ys) * len(xs)
        out = torch.zeros(1, 3, h * s, w * s)
        weight = torch.zeros(1, 1, h * s, w * s)
        n = 0
        for y in ys:
            for x in xs:
                ctx.check_cancelled()
                th, tw = min(tile, h), min(tile, w)
                piece = img[..., y: y + th, x: x + tw].to(device, dtype)
                pred = ctx.models.retry_on_oom(lambda p=piece: run_model(desc, p),
                                               "the upscaler").float().cpu()
                wy = ramp(th * s, overlap * s // 2, y == 0, y + th >= h)
                wx = ramp(tw * s, overlap * s // 2, x == 0, x + tw >= w)
                wt = (wy[:, None] * wx[None, :])[None, None]
                out[..., y * s:(y + th) * s, x * s:(x + tw) * s] += pred * wt
                weight[..., y * s:(y + th) * s, x * s:(x + tw) * s] += wt
                n += 1
                ctx.progress(n, total)
        result = out.div_(weight).clamp_(0, 1)  # in place: no second full-size copy
        del weight
        if image.shape[1] == 4:  # an alpha channel: resampled beside the model's colours
            alpha = resize(image[b: b + 1, 3:4].float(), w * s, h * s, "bicubic")
            result = torch.cat([result, alpha], dim=1)
        out_all.append(result)
    return out_all[0] if len(out_all) == 1 else torch.cat(out_all)


class UpscaleWithModel(Node):
    type = "upscale_with_model"
    title = "Upscale Image with Model"
    category = "image/upscale"
    description = ("Upscale with a model, in overlapping blended tiles so memory stays bounded "
                   "at any size. tile_size 0 picks one from free memory. An alpha channel is "
                   "resampled (bicubic) beside the colours.")
    inputs = (In("upscale_model", UPSCALE_MODEL), In("image", T.image),
              Int("tile_size", 0, min=0, max=8192, step=32),
              Int("overlap", 32, min=0, max=512))
    outputs = (Output("image", T.image),)

    def run(self, ctx, upscale_model, image, tile_size=0, overlap=32):
        check_image(image, "image")
        desc = upscaler(ctx, upscale_model)
        tile = tile_size or auto_tile(ctx, desc.scale)
        if overlap >= tile:
            raise InputError("overlap", f"less than the tile size ({tile})", overlap)
        return {"image": upscale_tiled(ctx, desc, image, tile, overlap)}


class UpscaleWithModelBy(Node):
    type = "upscale_with_model_by"
    title = "Upscale by Model to Factor"
    category = "image/upscale"
    description = ("Upscale with a model, then resize to exactly `factor` times the input "
                   "(a 4x model for a 2x result, say).")
    inputs = (In("upscale_model", UPSCALE_MODEL), In("image", T.image),
              Float("factor", 2.0, min=0.01, max=16.0, step=0.05),
              Choice("method", RESIZE_METHODS, "lanczos"),
              Int("tile_size", 0, min=0, max=8192, step=32), Int("overlap", 32, min=0, max=512))
    outputs = (Output("image", T.image),)

    def run(self, ctx, upscale_model, image, factor=2.0, method="lanczos", tile_size=0,
            overlap=32):
        up = UpscaleWithModel().run(ctx, upscale_model, image, tile_size, overlap)["image"]
        h, w = image.shape[-2:]
        return {"image": resize(up, max(1, round(w * factor)), max(1, round(h * factor)),
                                method)}


class UpscaleImageBy(Node):
    type = "upscale_image_by"
    title = "Upscale Image By"
    category = "image/upscale"
    description = "Resample by a factor (Resize Image sets an exact size)."
    inputs = (In("image", T.image), Choice("method", RESIZE_METHODS, "lanczos"),
              Float("scale_by", 2.0, min=0.01, max=16.0, step=0.05))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, method="lanczos", scale_by=2.0):
        check_image(image, "image")
        h, w = image.shape[-2:]
        return {"image": resize(image, max(1, round(w * scale_by)), max(1, round(h * scale_by)),
                                method)}


def resize_latent(latent: Latent, width: int, height: int, method: str) -> Latent:
    import dataclasses

    import torch.nn.functional as F

    h, w = height // 8, width // 8
    mode = "nearest-exact" if method == "nearest" else method
    kw = {} if mode in ("nearest-exact", "area") else {"align_corners": False}
    samples = F.interpolate(latent.samples, size=(h, w), mode=mode, **kw)
    mask = latent.noise_mask
    if mask is not None:
        mask = F.interpolate(mask, size=(height, width) if mask.shape[-1] != latent.samples
                             .shape[-1] else (h, w), mode="bilinear", align_corners=False)
    return dataclasses.replace(latent, samples=samples, noise_mask=mask)


class UpscaleLatent(Node):
    type = "upscale_latent"
    title = "Upscale Latent"
    pixel_inputs = (None, "width", "height")
    category = "latent"
    description = ("Resample a latent to a size in pixels (multiples of 8; 0 keeps the aspect "
                   "ratio). For a hires-fix pass, sample it again at low denoise.")
    inputs = (In("latent", T.latent), Choice("method", LATENT_METHODS, "bilinear"),
              Int("width", 1024, min=0, max=16384, step=8),
              Int("height", 1024, min=0, max=16384, step=8))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, latent, method="bilinear", width=1024, height=1024):
        h, w = latent.samples.shape[-2:]
        if width == 0 and height == 0:
            raise InputError("width", "a width or a height above 0", 0)
        if width == 0:
            width = round(w * height / h)
        elif height == 0:
            height = round(h * width / w)
        width, height = max(8, width // 8 * 8), max(8, height // 8 * 8)
        return {"latent": resize_latent(latent, width, height, method)}


class UpscaleLatentBy(Node):
    type = "upscale_latent_by"
    title = "Upscale Latent By"
    category = "latent"
    description = "Resample a latent by a factor."
    inputs = (In("latent", T.latent), Choice("method", LATENT_METHODS, "bilinear"),
              Float("scale_by", 1.5, min=0.01, max=8.0, step=0.05))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, latent, method="bilinear", scale_by=1.5):
        h, w = latent.samples.shape[-2:]
        return {"latent": resize_latent(latent, max(8, round(w * scale_by) * 8),
                                        max(8, round(h * scale_by) * 8), method)}


NODES = (LoadUpscaleModel, UpscaleWithModel, UpscaleWithModelBy, UpscaleImageBy,
         UpscaleLatent, UpscaleLatentBy)


def register(registry: Registry) -> None:
    registry.add_link_type(UPSCALE_MODEL)
    registry.add_model_kind(UPSCALE_MODELS)
    registry.register_all(NODES)
