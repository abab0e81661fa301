"""The flow-matching transformers' side of the shared sampling: how the Predictor calls a
Flux transformer (2x2 latent patches as tokens, their positions, the timestep as sigma,
the distilled guidance and the pooled text embedding), what an inpainting (Fill) model
reads beside the latent, and the noise levels of a flow model (its shift)."""

from __future__ import annotations

from typing import Any

from engine.errors import InputError

from .arch import Arch
from .ksampling.modelsampling import (
    ModelSampling,
    discrete_flow,
    flux,
    flux_shift,
    flux_time_shift,
    time_snr_shift,
)

DEFAULT_GUIDANCE = 3.5  # ComfyUI's, when no Flux Guidance node set one


def is_transformer(comps: Any) -> bool:
    arch = Arch.of(comps.family)
    return arch is not None and arch.is_transformer


def pack(x: Any) -> Any:
    """[B, C, H, W] (H, W even) -> [B, H/2 x W/2 tokens, C x 4]."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: Any, h: int, w: int) -> Any:
    b, _, d = x.shape
    c = d // 4
    x = x.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int, device: Any, dtype: Any) -> Any:
    """Each token's (0, row, column), as diffusers' FluxPipeline numbers them."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device, dtype)


def added(comps: Any, positive: Any, negative: Any, batch: int, guided: bool, device: Any,
          dtype: Any) -> dict[str, Any]:
    """The pooled embedding and (for guidance-distilled models) the guidance per image of
    the batch, negative half first when guided."""
    import torch

    sides = [negative, positive] if guided else [positive]
    for c in sides:
        if c.pooled is None:
            raise InputError("positive", "a Flux conditioning (T5 embedding with CLIP-L's "
                             "pooled output)", "one without a pooled embedding",
                             hint="encode the prompt with Flux's text encoders")
    pooled = torch.cat([c.pooled.reshape(c.pooled.shape[0], -1)[:1].repeat(batch, 1)
                        for c in sides])
    out: dict[str, Any] = {"pooled": pooled.to(device, dtype), "guidance": None,
                           "refs": references(sides, batch, device, dtype)}
    if comps.unet.config.get("guidance_embeds"):
        g = [float(c.extra.get("guidance", DEFAULT_GUIDANCE)) for c in sides]
        out["guidance"] = torch.tensor([v for v in g for _ in range(batch)], device=device,
                                       dtype=torch.float32)
    return out


def references(sides: list[Any], batch: int, device: Any, dtype: Any) -> Any:
    """Reference latents (ReferenceLatent, Flux Kontext) as tokens after the image's, with
    their ids: (tokens [B, N, C x 4], ids [N, 3]) or None. Each reference is numbered 1 in
    the ids' first place and placed beside the ones before it (ComfyUI's "offset")."""
    import torch

    shapes = [tuple(tuple(r.shape) for r in c.extra.get("reference_latents", ()))
              for c in sides]
    if not shapes[0] and not shapes[-1]:
        return None
    if len(set(shapes)) > 1:
        raise InputError("negative", "the positive's reference latents (shapes "
                         f"{list(shapes[-1])})", f"{list(shapes[0])}",
                         hint="give the negative the same ReferenceLatent, or zero the "
                         "positive out (Conditioning Zero Out) for it")
    tokens, ids, h, w = [], [], 0, 0
    for i, _ in enumerate(sides[0].extra["reference_latents"]):
        refs = [c.extra["reference_latents"][i] for c in sides]
        rh, rw = refs[0].shape[-2:]
        dy, dx = (0, w) if rh + h > rw + w else (h, 0)
        h, w = max(h, rh + dy), max(w, rw + dx)
        tokens.append(torch.cat([pack(_even(r[:1].float())).repeat(batch, 1, 1)
                                 for r in refs]))
        pos = image_ids(rh + rh % 2, rw + rw % 2, "cpu", torch.float32)
        pos[:, 0] = 1
        pos[:, 1] += (dy + 1) // 2
        pos[:, 2] += (dx + 1) // 2
        ids.append(pos)
    return torch.cat(tokens, 1).to(device, dtype), torch.cat(ids).to(device, dtype)


def _even(x: Any) -> Any:
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    return F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if h % 2 or w % 2 else x


def call(model: Any, x: Any, t: Any, emb: Any, extra: dict[str, Any]) -> Any:
    """The transformer's velocity for latents `x` [B, C, H, W] (with any extra input
    channels concatenated) at timestep `t` (sigma x the model sampling's multiplier)."""
    import torch

    b, _, h, w = x.shape
    x = _even(x)  # a tile or area of odd size: padded to whole patches
    hh, ww = x.shape[-2:]
    dtype = emb.dtype
    txt_ids = torch.zeros(emb.shape[1], 3, device=x.device, dtype=dtype)
    timestep = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(b)
    tokens, ids = pack(x.to(dtype)), image_ids(hh, ww, x.device, dtype)
    n = tokens.shape[1]
    if extra.get("refs") is not None:
        ref_tokens, ref_ids = extra["refs"]
        tokens = torch.cat([tokens, ref_tokens], 1)
        ids = torch.cat([ids, ref_ids])
    out = model(hidden_states=tokens, timestep=timestep.to(dtype), guidance=extra["guidance"],
                pooled_projections=extra["pooled"].to(dtype), encoder_hidden_states=emb,
                txt_ids=txt_ids, img_ids=ids, return_dict=False)[0]
    return unpack(out[:, :n], hh, ww)[..., :h, :w]


def fill_inputs(concat: tuple[Any, Any], shape: tuple[int, ...], batch: int, device: Any,
                dtype: Any) -> Any:
    """What a Flux Fill model reads beside the latent, as latent-sized channels: the masked
    image's latent, then the pixel mask folded 8x8 into 64 channels (FluxFillPipeline's
    order once packed)."""
    import torch
    import torch.nn.functional as F

    mask, masked = concat
    h, w = shape[-2:]
    mask = mask.float()
    if mask.ndim == 3:
        mask = mask[:, None]
    if tuple(mask.shape[-2:]) != (h * 8, w * 8):
        mask = F.interpolate(mask, size=(h * 8, w * 8), mode="bilinear")
    mask = mask[:, :1].reshape(mask.shape[0], h, 8, w, 8).permute(0, 2, 4, 1, 3)
    mask = mask.reshape(mask.shape[0], 64, h, w)
    if mask.shape[0] != batch:
        mask = mask[:1].repeat(batch, 1, 1, 1)
    masked = masked if masked.shape[0] == batch else masked[:1].repeat(batch, 1, 1, 1)
    return torch.cat([masked.to(device, dtype), mask.to(device, dtype)], dim=1)


def _patch(model: Any) -> tuple | None:
    return next((p for p in reversed(getattr(model, "patches", ()))
                 if p[0] == "model_sampling"), None)


def model_sampling(comps: Any, model: Any = None, latent: Any = None) -> ModelSampling:
    """A flow model's noise levels: a Model Sampling node's choice carried on the MODEL
    ref, else the model's own (Flux dev: shifted for the image size as diffusers' dynamic
    shifting does, 1.15 at 1024x1024, ComfyUI's fixed value; schnell: ComfyUI's 1.0)."""
    patch = _patch(model)
    if patch is not None:
        _, kind, shift, multiplier = patch
        return flux(shift) if kind == "flux" else discrete_flow(shift, multiplier)
    config = comps.scheduler_config
    if not config.get("use_dynamic_shifting"):
        return flux(float(config.get("shift", 1.0)))
    size = Arch.of(comps.family).native_resolution
    h, w = (latent.samples.shape[-2] * 8, latent.samples.shape[-1] * 8) \
        if latent is not None else (size, size)
    return flux(flux_shift(w, h, float(config.get("max_shift", 1.15)),
                           float(config.get("base_shift", 0.5))))


def diffusers_sigmas(comps: Any, model: Any, latent: Any, steps: int, denoise: float) -> Any:
    """FluxPipeline's sigmas: linspace(1, 1/steps) through the scheduler's shift (dynamic:
    by image size; a Model Sampling node's, if one is set), then 0; below denoise 1 the
    last int(steps x denoise) of them, as its image-to-image pipeline runs."""
    import numpy as np
    import torch

    t = torch.from_numpy(np.linspace(1.0, 1 / steps, steps))
    config = comps.scheduler_config
    if _patch(model) is None and not config.get("use_dynamic_shifting"):
        sigmas = time_snr_shift(float(config.get("shift", 1.0)), t)
    else:
        ms = model_sampling(comps, model, latent)
        sigmas = flux_time_shift(ms.shift, 1.0, t) if ms.flux else time_snr_shift(ms.shift, t)
    sigmas = torch.cat([sigmas.float(), torch.zeros(1)])
    if denoise < 1.0:
        sigmas = sigmas[steps - min(int(steps * denoise), steps):]
    return sigmas
