"""VAE Decode and VAE Encode, tiled automatically when an image would not fit memory."""

from __future__ import annotations

from engine.spec import Bool, In, Node, Output
from engine.types import T
from engine.values import Latent

from .models import components

# Above this many output pixels a decode runs tiled (diffusers' blended tiles, seamless).
TILE_PIXELS = {"cpu": 2048 * 2048, "cuda": 3072 * 3072, "mps": 1536 * 1536}


def _should_tile(ctx, pixels: int, force: bool) -> bool:
    if force:
        return True
    return pixels > TILE_PIXELS.get(ctx.models.device.device.split(":")[0], 2048 * 2048)


class VAEDecode(Node):
    type = "vae_decode"
    title = "VAE Decode"
    category = "latent"
    description = "Latent to image. Large images decode in blended tiles to bound memory."
    inputs = (In("vae", T.vae), In("latent", T.latent), Bool("tiled", False))
    outputs = (Output("image", T.image),)

    def run(self, ctx, vae, latent, tiled=False):
        comps = components(ctx, vae)
        model = comps.vae
        device = ctx.models.device.torch_device()
        z = latent.samples.to(device, model.dtype)
        shift = getattr(model.config, "shift_factor", None) or 0.0
        z = z / model.config.scaling_factor + shift
        pixels = z.shape[-1] * z.shape[-2] * 64
        out = []
        for i in range(z.shape[0]):  # one image at a time bounds memory for batches
            ctx.check_cancelled()
            zi = z[i: i + 1]

            def plain(zi=zi):
                return model.decode(zi, return_dict=False)[0]

            def tiles(zi=zi):
                return model.tiled_decode(zi, return_dict=False)[0]

            if _should_tile(ctx, pixels, tiled):
                img = tiles()
            else:
                try:
                    img = ctx.models.retry_on_oom(plain, "VAE Decode")
                except Exception as exc:
                    from engine.runtime.models import OutOfMemory

                    if not isinstance(exc, OutOfMemory):
                        raise
                    img = tiles()  # the last resort before failing
            out.append((img.float().cpu() / 2 + 0.5).clamp(0, 1))
            ctx.progress(i + 1, z.shape[0])
        import torch

        return {"image": torch.cat(out)}


class VAEEncode(Node):
    type = "vae_encode"
    title = "VAE Encode"
    category = "latent"
    description = ("Image to latent (the distribution's mean). Sizes that are not multiples "
                   "of 8 are cropped to the nearest smaller multiple, centred.")
    inputs = (In("vae", T.vae), In("image", T.image), Bool("tiled", False))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, vae, image, tiled=False):
        (image,) = crop_to_8(ctx, image)
        return {"latent": Latent(encode(ctx, vae, image, tiled))}


def crop_to_8(ctx, image, *alike):
    """The image (and tensors of its size, e.g. its mask) cropped, centred, to the nearest
    smaller multiple of 8 on each side, as the VAE needs."""
    h, w = image.shape[-2:]
    h8, w8 = h - h % 8, w - w % 8
    if (h8, w8) == (h, w):
        return (image, *alike)
    y, x = (h - h8) // 2, (w - w8) // 2
    ctx.log.info("cropped %dx%d to %dx%d for the VAE", w, h, w8, h8)
    return tuple(t[..., y: y + h8, x: x + w8] for t in (image, *alike))


def encode(ctx, vae, image, tiled: bool = False):
    """Images (sides multiples of 8) -> scaled latents: the distribution's mean, one image
    at a time, tiled when large."""
    import torch

    model = components(ctx, vae).vae
    device = ctx.models.device.torch_device()
    shift = getattr(model.config, "shift_factor", None) or 0.0
    pixels = image.shape[-1] * image.shape[-2]
    out = []
    for i in range(image.shape[0]):
        ctx.check_cancelled()
        x = (image[i: i + 1, :3] * 2 - 1).to(device, model.dtype)
        if _should_tile(ctx, pixels, tiled):
            dist = model.tiled_encode(x, return_dict=False)[0]
        else:
            dist = ctx.models.retry_on_oom(lambda x=x: model.encode(x, return_dict=False)[0],
                                           "VAE Encode")
        out.append(((dist.mean - shift) * model.config.scaling_factor).float().cpu())
    return torch.cat(out)


NODES = (VAEDecode, VAEEncode)
