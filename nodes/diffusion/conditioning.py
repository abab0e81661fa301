"""Text Encode: a prompt into CONDITIONING, with weights and long prompts."""

from __future__ import annotations

import dataclasses

from engine.errors import InputError
from engine.spec import Choice, Float, In, Int, Node, Output, String
from engine.types import T
from engine.values import Conditioning

from .arch import Arch
from .encode_flow import encode_text, is_flow
from .models import components
from .prompt_comfy import encode_chunks

WEIGHTINGS = ("comfyui", "a1111")


def encode(ctx, clip_ref, text: str, clip_skip: int = 0, text_2: str | None = None,
           extra: dict | None = None, weighting: str = "comfyui") -> Conditioning:
    """Encode a prompt; SDXL's second encoder reads `text_2` when given (ComfyUI's text_g).
    `weighting`: how (word:1.2) weighs, ComfyUI's way or A1111's (prompt_comfy, prompt)."""
    import torch

    if weighting not in WEIGHTINGS:
        raise InputError("weighting", f"one of {', '.join(WEIGHTINGS)}", weighting)
    if is_flow(clip_ref):
        return encode_text(ctx, clip_ref, text, weighting, extra)
    comps = components(ctx, clip_ref)
    device = ctx.models.device.torch_device()
    encoders = [(comps.tokenizer, comps.text_encoder)]
    if comps.text_encoder_2 is not None:
        encoders.append((comps.tokenizer_2, comps.text_encoder_2))
    encoders = [(t, e) for t, e in encoders if e is not None]
    sdxl = comps.text_encoder_2 is not None
    per_encoder, pooled = [], None
    for tokenizer, encoder in encoders:
        prompt = text_2 if text_2 is not None and encoder is comps.text_encoder_2 else text

        def hidden(chunk_ids, encoder=encoder):
            ctx.check_cancelled()
            out = encoder(torch.tensor([chunk_ids], device=device), output_hidden_states=True)
            if sdxl:  # SDXL uses the penultimate layer, without the final norm
                return out.hidden_states[-(2 + clip_skip)], out[0]
            if clip_skip:
                norm = encoder.text_model.final_layer_norm if hasattr(encoder, "text_model") \
                    else encoder.final_layer_norm
                return norm(out.hidden_states[-(1 + clip_skip)]), None
            return out[0], None

        z, pool = encode_chunks(tokenizer, prompt, hidden, weighting, warn=ctx.log.warning)
        if encoder is comps.text_encoder_2:
            pooled = pool  # text_embeds of the projection model (its first chunk)
        per_encoder.append(z)
    embeds = torch.cat(per_encoder, dim=-1) if len(per_encoder) > 1 else per_encoder[0]
    return Conditioning(embeds=embeds.float().cpu(),
                        pooled=pooled.float().cpu() if pooled is not None else None,
                        extra=dict(extra or {}))


class TextEncode(Node):
    type = "text_encode"
    title = "Text Encode"
    category = "conditioning"
    description = ("Encode a prompt. (word:1.3) weighs a word up, (word) by 1.1; prompts longer "
                   "than 75 tokens are encoded in chunks. Weighting: ComfyUI's (the default; "
                   "[word] is literal) or A1111's ([word] weighs down, (word:1.3) multiplies).")
    inputs = (In("clip", T.clip), String("text", "", multiline=True),
              Int("clip_skip", 0, min=0, max=12, description="skip this many last layers"),
              Choice("weighting", WEIGHTINGS, "comfyui"))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, text="", clip_skip=0, weighting="comfyui"):
        if not isinstance(text, str):
            raise InputError("text", "text", text)
        return {"conditioning": encode(ctx, clip, text, clip_skip or clip.get("clip_skip", 0),
                                       weighting=weighting)}


class ClipSetLastLayer(Node):
    type = "clip_set_last_layer"
    title = "CLIP Set Last Layer"
    category = "conditioning"
    description = ("Stop the text encoder at an earlier layer: -1 is the last, -2 the one "
                   "before (\"clip skip 2\"). Text Encode nodes fed by this CLIP use it.")
    inputs = (In("clip", T.clip), Int("stop_at_clip_layer", -1, min=-24, max=-1))
    outputs = (Output("clip", T.clip),)

    def run(self, ctx, clip, stop_at_clip_layer=-1):
        skip = -stop_at_clip_layer - 1
        arch = Arch.of(clip.family)
        if arch is not None and arch.is_sdxl_like:  # it already reads the penultimate layer
            skip = max(skip - 1, 0)
        extra = tuple((k, v) for k, v in clip.extra if k != "clip_skip") + (("clip_skip", skip),)
        return {"clip": dataclasses.replace(clip, extra=extra)}


class TextEncodeSDXL(Node):
    type = "text_encode_sdxl"
    title = "Text Encode (SDXL)"
    category = "conditioning"
    description = ("SDXL prompts with their size conditioning: text_g feeds the big encoder, "
                   "text_l the small one; the sizes tell the model the framing to imitate.")
    inputs = (In("clip", T.clip),
              Int("width", 1024, min=0, max=16384), Int("height", 1024, min=0, max=16384),
              Int("crop_w", 0, min=0, max=16384), Int("crop_h", 0, min=0, max=16384),
              Int("target_width", 1024, min=0, max=16384),
              Int("target_height", 1024, min=0, max=16384),
              String("text_g", "", multiline=True), String("text_l", "", multiline=True))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024,
            target_height=1024, text_g="", text_l=""):
        extra = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}
        return {"conditioning": encode(ctx, clip, text_l, clip.get("clip_skip", 0),
                                       text_2=text_g, extra=extra)}


class TextEncodeSDXLRefiner(Node):
    type = "text_encode_sdxl_refiner"
    title = "Text Encode (SDXL Refiner)"
    category = "conditioning"
    description = "A prompt for the SDXL refiner, with its aesthetic score (6 good, 2.5 bad)."
    inputs = (In("clip", T.clip), Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
              Int("width", 1024, min=0, max=16384), Int("height", 1024, min=0, max=16384),
              String("text", "", multiline=True))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, ascore=6.0, width=1024, height=1024, text=""):
        extra = {"aesthetic_score": ascore, "width": width, "height": height}
        return {"conditioning": encode(ctx, clip, text, clip.get("clip_skip", 0), extra=extra)}


def map_parts(c: Conditioning, fn) -> Conditioning:
    """Apply `fn` to a conditioning and to every one combined with it."""
    head = fn(dataclasses.replace(c, combined=()))
    return dataclasses.replace(head, combined=tuple(map_parts(o, fn) for o in c.combined))


class ConditioningCombine(Node):
    type = "conditioning_combine"
    title = "Conditioning Combine"
    category = "conditioning"
    description = ("Use both conditionings: the model is asked with each, and the answers "
                   "are averaged (where areas are set, each counts only in its area).")
    inputs = (In("conditioning_1", T.conditioning), In("conditioning_2", T.conditioning))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning_1, conditioning_2):
        c = conditioning_1
        return {"conditioning": dataclasses.replace(c, combined=c.combined + (conditioning_2,))}


class ConditioningSetArea(Node):
    type = "conditioning_set_area"
    title = "Conditioning Set Area"
    category = "conditioning"
    description = ("Apply a conditioning to a rectangle of the image only (pixels, multiples "
                   "of 8), with a strength; combine it with one for the whole image.")
    inputs = (In("conditioning", T.conditioning),
              Int("width", 64, min=8, max=16384, step=8), Int("height", 64, min=8, max=16384,
                                                              step=8),
              Int("x", 0, min=0, max=16384, step=8), Int("y", 0, min=0, max=16384, step=8),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning, width=64, height=64, x=0, y=0, strength=1.0):
        def set_area(c):
            return dataclasses.replace(c, extra={**c.extra, "area": (height, width, y, x),
                                                 "strength": strength})

        return {"conditioning": map_parts(conditioning, set_area)}


class ConditioningZeroOut(Node):
    type = "conditioning_zero_out"
    title = "Conditioning Zero Out"
    category = "conditioning"
    description = "The same conditioning with its embeddings set to zero (an empty negative)."
    inputs = (In("conditioning", T.conditioning),)
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning):
        def zero(c):
            return dataclasses.replace(c, embeds=c.embeds * 0, pooled=None if c.pooled is None
                                       else c.pooled * 0)

        return {"conditioning": map_parts(conditioning, zero)}


NODES = (TextEncode, ClipSetLastLayer, TextEncodeSDXL, TextEncodeSDXLRefiner,
         ConditioningCombine, ConditioningSetArea, ConditioningZeroOut)
