"""Inpainting: masks on latents, for dedicated 9-channel inpainting models and for
ordinary checkpoints alike."""

from __future__ import annotations

import dataclasses

from engine.errors import InputError
from engine.spec import Bool, In, Int, Node, Output
from engine.types import T
from engine.values import Latent


class SetLatentNoiseMask(Node):
    type = "set_latent_noise_mask"
    title = "Set Latent Noise Mask"
    category = "inpaint"
    description = ("Only the masked part of this latent is re-generated; the rest is kept from "
                   "it at every step. Use with an ordinary checkpoint and VAE Encode.")
    inputs = (In("latent", T.latent), In("mask", T.mask))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, latent, mask):
        h, w = latent.samples.shape[-2:]
        if tuple(mask.shape[-2:]) not in ((h * 8, w * 8), (h, w)):
            raise InputError("mask", f"a mask the size of the image ({w * 8}x{h * 8})",
                             f"{mask.shape[-1]}x{mask.shape[-2]}")
        return {"latent": dataclasses.replace(latent, noise_mask=mask)}


class VAEEncodeForInpaint(Node):
    type = "vae_encode_inpaint"
    title = "VAE Encode for Inpaint"
    category = "inpaint"
    description = ("Encode an image with its masked part blanked to grey, and carry the mask: "
                   "what an inpainting model needs (denoise 1.0).")
    inputs = (In("vae", T.vae), In("image", T.image), In("mask", T.mask),
              Int("grow_mask_by", 6, min=0, max=64))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, vae, image, mask, grow_mask_by=6):
        from .._filters import grow
        from .._tensors import same_size
        from .vae import encode

        same_size(image, mask, "mask")
        h, w = image.shape[-2:]
        if h % 8 or w % 8:
            raise InputError("image", "a width and height that are multiples of 8",
                             f"{w}x{h}", hint="crop or resize it first")
        if grow_mask_by:
            mask = grow(mask, grow_mask_by, ctx.check_cancelled)
        keep = (mask < 0.5).to(image.dtype)
        blank = image[:, :3] * keep + 0.5 * (1 - keep)  # mid grey where it will be painted
        return {"latent": Latent(encode(ctx, vae, blank), noise_mask=mask)}


class InpaintModelConditioning(Node):
    type = "inpaint_model_conditioning"
    title = "Inpaint Model Conditioning"
    category = "inpaint"
    description = ("Prepare an inpaint at any denoise: the latent of the whole image (with "
                   "the mask as its noise mask), and conditionings that carry the masked "
                   "image, which a 9-channel inpainting model reads beside the latent.")
    inputs = (In("positive", T.conditioning), In("negative", T.conditioning), In("vae", T.vae),
              In("pixels", T.image), In("mask", T.mask), Bool("noise_mask", True))
    outputs = (Output("positive", T.conditioning), Output("negative", T.conditioning),
               Output("latent", T.latent))

    def run(self, ctx, positive, negative, vae, pixels, mask, noise_mask=True):
        from .._tensors import same_size
        from .conditioning import map_parts
        from .vae import crop_to_8, encode

        same_size(pixels, mask, "mask")
        pixels, mask = crop_to_8(ctx, pixels, mask)
        keep = (mask < 0.5).to(pixels.dtype)
        masked = pixels[:, :3] * keep + 0.5 * (1 - keep)
        concat = (mask, encode(ctx, vae, masked))

        def attach(c):
            return dataclasses.replace(c, extra={**c.extra, "concat": concat})

        latent = Latent(encode(ctx, vae, pixels), noise_mask=mask if noise_mask else None)
        return {"positive": map_parts(positive, attach), "negative": map_parts(negative, attach),
                "latent": latent}


NODES = (SetLatentNoiseMask, VAEEncodeForInpaint, InpaintModelConditioning)
