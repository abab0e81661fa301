"""The Load LoRA node; the patching itself lives in patches.py."""

from __future__ import annotations

import os

from engine.errors import InputError
from engine.spec import Float, In, Node, Output, String
from engine.types import T

from .arch import Arch
from .files import LORAS, find
from .models import components
from .patches import matched, read_lora


class LoadLoRA(Node):
    type = "load_lora"
    title = "Load LoRA"
    category = "loaders"
    description = ("Patch the model and text encoder with a LoRA (kohya or diffusers layout). "
                   "Chain several to stack them.")
    inputs = (In("model", T.model), In("clip", T.clip, optional=True),
              String("lora_name", "", file=LORAS),
              Float("strength_model", 1.0, min=-10.0, max=10.0, step=0.05),
              Float("strength_clip", 1.0, min=-10.0, max=10.0, step=0.05))
    outputs = (Output("model", T.model), Output("clip", T.clip))

    def run(self, ctx, model, lora_name, clip=None, strength_model=1.0, strength_clip=1.0):
        arch = Arch.of(model.family)
        if arch is not None and arch.is_transformer:
            raise InputError("model", "an SD 1.x, 2.x or SDXL model", f"a {model.family} model",
                             hint="Loom does not apply LoRAs to Flux models yet")
        path = find(ctx, LORAS, lora_name, "lora_name")
        parts = read_lora(ctx, path)
        base = components(ctx, type(model)(model.kind, model.family, model.source, model.key,
                                           extra=model.extra))
        hit, total, unet_fits = matched(ctx, base, parts)
        if hit == 0 or not unet_fits:
            raise InputError("lora_name", f"a LoRA for this {model.family} model", lora_name,
                             hint=f"its UNet layers fit none of this model's ({hit} of "
                             f"{total} layers fit): it is for another model family")
        if hit < total:
            ctx.log.warning("%s: %d of %d LoRA layers matched the model", lora_name, hit, total)
        stamp = os.stat(path).st_mtime_ns
        out_model = model.with_patch(("lora", str(path), stamp, float(strength_model)))
        out_clip = clip.with_patch(("lora", str(path), stamp, float(strength_clip))) \
            if clip is not None else None
        return {"model": out_model, "clip": out_clip}


NODES = (LoadLoRA,)


