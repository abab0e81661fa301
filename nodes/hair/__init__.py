"""Hair transfer (Stable-Hair, arXiv 2407.14078): Load Hair Models, Remove Hair (stage 1:
the Bald Converter), Transfer Hair (stage 2: Hair Extractor + hair attention + Latent
IdentityNet). Both stages run in the Sampler's loop, so they get its progress, previews,
cancellation and out-of-memory handling; their ControlNets are ordinary control hints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.modelpaths import Layout, ModelKind
from engine.registry import Registry
from engine.runtime.models import ModelRef
from engine.spec import Float, In, Int, Node, Output, Seed, SeedControl, String
from engine.types import LinkType, T
from engine.values import Latent

from ..diffusion.arch import Arch
from ..diffusion.controlnet import CONTROL_RESOLVERS, ControlHint

SAMPLER, SCHEDULE = "uni_pc", "diffusers"  # the paper's pipeline: diffusers' UniPC
LATENT_CONTROL = "LATENT_CONTROL"  # the ref kind of one of a hair model's Latent ControlNets
HAIR_MODEL = LinkType("HAIR_MODEL", colour="#ce93d8")
HAIR = ModelKind("hair", layout=Layout.folders, description="one Stable-Hair set per folder")


def hair_models(ctx, ref: ModelRef) -> Any:
    """The loaded parts behind a HAIR_MODEL (or one of its Latent ControlNet refs)."""
    from .model import load_hair_models

    def load():
        import torch

        return load_hair_models(Path(ref.source), getattr(torch, ctx.models.device.dtype))

    return ctx.models.get(ref.key, load)


def _latent_control(ctx, ref: ModelRef) -> Any:
    return hair_models(ctx, ref)[ref.get("part")]


CONTROL_RESOLVERS[LATENT_CONTROL] = _latent_control


def _part_ref(hair: ModelRef, part: str) -> ModelRef:
    return ModelRef(LATENT_CONTROL, hair.family, hair.source, hair.key,
                    extra=(("part", part),))


def _check_size(image: Any, name: str) -> None:
    h, w = image.shape[-2:]
    if h % 8 or w % 8:
        raise InputError(name, "an image whose sides are multiples of 8 (512x512 is the "
                         "paper's size)", f"{w}x{h}", hint="crop or resize it first")


def _decode(ctx, vae, samples) -> Any:
    from ..diffusion.vae import VAEDecode

    return VAEDecode().run(ctx, vae, Latent(samples))["image"]


def _empty_prompt(ctx, clip, controls) -> Any:
    from ..diffusion.conditioning import encode

    return dataclasses.replace(encode(ctx, clip, ""), controls=tuple(controls))


class LoadHairModels(Node):
    type = "load_hair_models"
    title = "Load Hair Models"
    category = "hair"
    description = ("Stable-Hair's weights from a folder in hair/ in the released layout: "
                   "stage1/pytorch_model.bin, stage2/pytorch_model.bin, _1.bin, _2.bin "
                   "(or the same names as .safetensors).")
    inputs = (String("hair_name", "", file=HAIR, description="a folder in hair/"),)
    outputs = (Output("hair_model", HAIR_MODEL),)

    def run(self, ctx, hair_name):
        from ..diffusion.files import find

        path = find(ctx, HAIR, hair_name, "hair_name")
        if not path.is_dir():
            raise InputError("hair_name", "a folder (the released Stable-Hair layout)",
                             hair_name)
        try:
            stamp = max(os.stat(p).st_mtime_ns for p in path.rglob("*") if p.is_file())
        except ValueError:
            stamp = 0
        key = f"hair:{path}:{stamp}:{ctx.models.device.dtype}"
        ref = ModelRef(HAIR_MODEL.value, Arch.sd15, str(path), key)
        try:
            models = hair_models(ctx, ref)
        except InputError as exc:
            raise InputError("hair_name", exc.expected, hair_name, hint=exc.hint) from None
        for part, found in models.report.items():
            if found["unexpected"]:
                ctx.log.warning("%s: %d unexpected weights ignored, e.g. %s", part,
                                len(found["unexpected"]), found["unexpected"][0])
        return {"hair_model": ref}


class RemoveHair(Node):
    type = "remove_hair"
    title = "Remove Hair"
    category = "hair"
    description = ("Stage 1: the same person without hair, generated from noise with the "
                   "Bald Converter (a Latent ControlNet on the photo). Needs an SD 1.5 model.")
    inputs = (In("image", T.image), In("model", T.model), In("clip", T.clip), In("vae", T.vae),
              In("hair_model", HAIR_MODEL), Seed("seed", 0), SeedControl(),
              Int("steps", 30, min=1, max=1000),
              Float("cfg", 1.5, min=0.0, max=30.0, step=0.1),
              Float("strength", 0.9, min=0.0, max=2.0, step=0.01))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, model, clip, vae, hair_model, seed=0, steps=30, cfg=1.5,
            strength=0.9, control_after_run="fixed"):
        import torch

        from ..diffusion.sampling import sample
        from ..diffusion.vae import encode

        _check_size(image, "image")
        hair_models(ctx, hair_model)
        cond = encode(ctx, vae, image[:1, :3])
        hint = ControlHint(_part_ref(hair_model, "bald_converter"), cond, strength)
        c = _empty_prompt(ctx, clip, [hint])
        latent = Latent(torch.zeros_like(cond))
        out = sample(ctx, model, c, c, latent, seed, steps, cfg, SAMPLER, SCHEDULE, 1.0)
        return {"image": _decode(ctx, vae, out.samples)}


@contextlib.contextmanager
def hair_attention(unet: Any, parts: Any, scale: float):
    """Hair attention on the main UNet's self-attention layers and capture on the
    extractor's, for the duration of one sampling; the UNet's own processors are put back
    however it ends (so the MODEL samples as before)."""
    procs = parts["hair_attention"]
    extractor = parts["hair_extractor"]
    names = list(unet.attn_processors)
    if names != list(extractor.attn_processors):
        raise InputError("model", "an SD 1.5 UNet (the architecture the hair models were "
                         "made for)", "a UNet with other attention layers")
    from .model import classes

    Capture = classes()[3]
    bank: dict[str, Any] = {}
    saved = unet.attn_processors
    saved_ex = extractor.attn_processors
    for p in procs:
        if hasattr(p, "to_k_SSR"):
            p.bank, p.scale = bank, scale
    try:
        unet.set_attn_processor(dict(zip(names, procs)))
        extractor.set_attn_processor({n: Capture(n, bank) if n.endswith("attn1.processor")
                                      else saved_ex[n] for n in names})
        yield bank
    finally:
        unet.set_attn_processor(saved)
        extractor.set_attn_processor(saved_ex)
        bank.clear()
        for p in procs:
            if hasattr(p, "to_k_SSR"):
                p.bank = None


class TransferHair(Node):
    type = "transfer_hair"
    title = "Transfer Hair"
    category = "hair"
    description = ("Stage 2: the reference's hair on the bald image. The Hair Extractor reads "
                   "the reference at every step; hair attention carries it into the image; "
                   "the Latent IdentityNet keeps face, pose and background.")
    inputs = (In("bald", T.image), In("reference", T.image), In("model", T.model),
              In("clip", T.clip), In("vae", T.vae), In("hair_model", HAIR_MODEL),
              Seed("seed", 0), SeedControl(), Int("steps", 30, min=1, max=1000),
              Float("cfg", 1.5, min=0.0, max=30.0, step=0.1),
              Float("hair_scale", 1.0, min=0.0, max=5.0, step=0.01),
              Float("identity_strength", 1.0, min=0.0, max=2.0, step=0.01))
    outputs = (Output("image", T.image),)

    def run(self, ctx, bald, reference, model, clip, vae, hair_model, seed=0, steps=30,
            cfg=1.5, hair_scale=1.0, identity_strength=1.0, control_after_run="fixed"):
        import torch

        from ..diffusion.models import components
        from ..diffusion.sampling import sample
        from ..diffusion.vae import encode
        from ..image import resize

        _check_size(bald, "bald")
        parts = hair_models(ctx, hair_model)
        bald_lat = encode(ctx, vae, bald[:1, :3])
        h, w = bald.shape[-2:]
        ref_lat = encode(ctx, vae, resize(reference[:1, :3], w, h, "bicubic"))
        hint = ControlHint(_part_ref(hair_model, "identity_net"), bald_lat, identity_strength)
        c = _empty_prompt(ctx, clip, [hint])
        latent = Latent(torch.zeros_like(bald_lat))
        extractor = parts["hair_extractor"]

        def extract(x, t, emb):
            """Run the extractor on the reference latent at this step's timestep; a guided
            batch's negative half gets a latent of -1."""
            ref = ref_lat.to(x.device, extractor.dtype)
            half = x.shape[0] // 2
            if half and x.shape[0] == 2 * half and cfg > 1.0:
                batch = torch.cat([torch.full_like(ref, -1).repeat(half, 1, 1, 1),
                                   ref.repeat(half, 1, 1, 1)])
            else:
                batch = ref.repeat(x.shape[0], 1, 1, 1)
            extractor(batch, t, encoder_hidden_states=emb.to(extractor.dtype),
                      return_dict=False)

        if hair_scale == 0:  # no hair attention: the extractor would run for nothing
            patch, hooks = contextlib.nullcontext(), ()
        else:
            patch, hooks = hair_attention(components(ctx, model).unet, parts, hair_scale), \
                (extract,)
        with patch:
            out = sample(ctx, model, c, c, latent, seed, steps, cfg, SAMPLER, SCHEDULE, 1.0,
                         hooks=hooks)
        return {"image": _decode(ctx, vae, out.samples)}


NODES = (LoadHairModels, RemoveHair, TransferHair)


def register(registry: Registry) -> None:
    registry.add_link_type(HAIR_MODEL)
    registry.add_model_kind(HAIR)
    registry.register_all(NODES)
