"""Empty Latent and the Sampler: the denoising loop over diffusers' schedulers, with
progress, previews and cancellation at every step."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from engine.errors import InputError
from engine.runtime import generator_for
from engine.spec import Choice, Float, In, Int, Node, Output, Seed, SeedControl
from engine.types import T
from engine.values import Latent

from .arch import Arch
from .models import components

# One table: the sampler names users know -> a diffusers scheduler and its settings.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                 "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                     "solver_order": 2}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
SCHEDULES: dict[str, dict[str, Any]] = {
    "normal": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
}

# A fixed linear map from latent channels to RGB per base family: a cheap live preview.
PREVIEW_RGB = {
    Arch.sd15: ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    Arch.sdxl: ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}


def make_scheduler(base_config: dict[str, Any], sampler: str, schedule: str) -> Any:
    import diffusers

    cls_name, settings = SAMPLERS[sampler]
    cls = getattr(diffusers, cls_name)
    params = inspect.signature(cls.__init__).parameters
    extra = dict(settings)
    for k, v in SCHEDULES[schedule].items():
        if k not in params:
            raise InputError("scheduler", f"a schedule that {sampler} supports (normal"
                             + (", sgm_uniform" if "timestep_spacing" in params else "") + ")",
                             schedule)
        extra[k] = v
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config(config, **extra)


def preview_image(latents: Any, family: str) -> Any:
    import torch

    arch = Arch.of(family) or Arch.sd15
    weights, bias = PREVIEW_RGB.get(arch.base, PREVIEW_RGB[Arch.sd15])
    w = torch.tensor(weights, dtype=torch.float32)
    x = latents[:1].detach().float().cpu()
    rgb = torch.einsum("bchw,cr->brhw", x, w) + torch.tensor(bias).view(1, 3, 1, 1)
    return ((rgb + 1) / 2).clamp(0, 1)


def sample(ctx, model, positive, negative, latent: Latent, seed: int, steps: int, cfg: float,
           sampler: str, scheduler: str, denoise: float,
           tile: tuple[int, int, int] | None = None, hooks: tuple = ()) -> Latent:
    """The denoising loop. `tile` = (height, width, overlap) in latent units denoises
    overlapping tiles at every step and blends their predictions (MultiDiffusion), so any
    size runs in the memory of one tile."""

    comps = components(ctx, model)
    manager = ctx.models
    device = manager.device.torch_device()
    sched = make_scheduler(comps.scheduler_config, sampler, scheduler)
    samples = latent.samples
    batch = samples.shape[0]

    sched.set_timesteps(steps, device=device)
    timesteps = sched.timesteps
    if denoise < 1.0:
        init = min(int(steps * denoise), steps)
        t_start = max(steps - init, 0)
        timesteps = timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        if len(timesteps) == 0:
            return latent
    predict = Predictor(ctx, model, comps, positive, negative, cfg, latent, tile, hooks)
    dtype = predict.dtype
    gens = [generator_for(seed, i) for i in (latent.batch_index or tuple(range(batch)))]
    noise = make_noise(samples.shape, gens, device, dtype)
    if denoise >= 1.0:
        latents = noise * sched.init_noise_sigma
    else:
        start = timesteps[:1].repeat(batch)
        latents = sched.add_noise(samples.to(device, dtype), noise, start)

    step_kwargs = {}
    step_params = inspect.signature(sched.step).parameters
    if "generator" in step_params:
        step_kwargs["generator"] = gens
    if "eta" in step_params:
        step_kwargs["eta"] = 0.0
    mask, source = predict.mask, predict.source
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        ctx.check_cancelled()
        pred = predict(sched.scale_model_input(latents, t), t, i, total)
        latents = sched.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
        if mask is not None and not predict.inpaint_unet:
            proper = source
            if i < total - 1:
                proper = sched.add_noise(source, noise, timesteps[i + 1: i + 2])
            latents = (1 - mask) * proper + mask * latents
        ctx.progress(i + 1, total, preview=lambda lat=latents: preview_image(lat, model.family))
    return Latent(samples=latents.float().cpu(), noise_mask=latent.noise_mask,
                  batch_index=latent.batch_index)


def make_noise(shape, gens, device, dtype) -> Any:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=gens, device=device, dtype=dtype)


def parts(c: Any) -> list[Any]:
    """A conditioning and those combined with it (Conditioning Combine), each on its own."""
    out = [dataclasses.replace(c, combined=())] if c.combined else [c]
    for other in c.combined:
        out += parts(other)
    return out


class Predictor:
    """The model's guided prediction at one step, shared by every sampling loop:
    classifier-free guidance over the positive and negative conditionings, their ControlNets,
    combined and area conditionings, an inpainting model's extra input channels, and tiles.

    Called with the scheduler-scaled latents (not doubled for guidance) and a timestep; returns
    the model's output (noise or v) with guidance applied."""

    def __init__(self, ctx, model, comps, positive, negative, cfg: float, latent: Latent,
                 tile: tuple[int, int, int] | None = None, hooks: tuple = ()):
        import torch

        from .controlnet import ControlState

        self.ctx, self.model, self.comps, self.cfg = ctx, model, comps, cfg
        # called as hook(x, t, encoder_hidden_states) before each UNet call (a guided batch
        # is [negative, positive]): e.g. hair transfer runs its reference UNet there
        self.hooks = tuple(hooks)
        self.unet = unet = comps.unet
        manager = ctx.models
        self.device = device = manager.device.torch_device()
        self.dtype = dtype = unet.dtype
        samples = latent.samples
        self.shape = shape = tuple(samples.shape)
        self.batch = batch = shape[0]
        self.guided = negative is not None and cfg > 1.0
        pos_parts = parts(positive)
        neg_parts = parts(negative) if self.guided else []
        self.simple = len(pos_parts) == 1 and len(neg_parts) <= 1 and not any(
            "area" in p.extra or p.extra.get("strength", 1.0) != 1.0
            for p in pos_parts + neg_parts)
        if not self.simple and tile is not None:
            raise InputError("positive", "one conditioning without an area for the Tiled "
                             "Sampler", "combined or area conditionings",
                             hint="use the Sampler, or one prompt per tile")
        size = (shape[-2] * 8, shape[-1] * 8)

        def prepare(c, positive_side):
            emb = c.embeds.repeat(batch, 1, 1).to(device, dtype)
            added = None
            if comps.text_encoder_2 is not None or c.pooled is not None:
                added = _sdxl_added(comps, c, c, shape, batch, False, device, dtype)
            ctrl = ControlState(ctx, c.controls, model, unet, size, batch, device, dtype,
                                positive=positive_side)
            return emb, added, ctrl, c

        if self.simple:
            pos = pos_parts[0]
            neg = neg_parts[0] if neg_parts else None
            pe, ne = pos.embeds, (neg.embeds if neg is not None else None)
            if ne is not None:
                pe, ne = _same_length(pe, ne)
                emb = torch.cat([ne.repeat(batch, 1, 1), pe.repeat(batch, 1, 1)])
            else:
                emb = pe.repeat(batch, 1, 1)
            self.emb = emb.to(device, dtype)
            self.added = None
            if comps.text_encoder_2 is not None or pos.pooled is not None:
                self.added = _sdxl_added(comps, pos, neg if neg is not None else pos, shape,
                                         batch, neg is not None, device, dtype)
            self.ctrl_pos = ControlState(ctx, pos.controls, model, unet, size, batch, device,
                                         dtype, positive=True)
            self.ctrl_neg = ControlState(ctx, neg.controls if neg is not None else (), model,
                                         unet, size, batch, device, dtype, positive=False)
        else:
            self.pos_parts = [prepare(p, True) for p in pos_parts]
            self.neg_parts = [prepare(p, False) for p in neg_parts]

        # inpainting: a 9-channel UNet takes (mask, masked-image latent) beside the latent; a
        # 4-channel one keeps the unmasked area on the source, re-noised to each next step
        self.inpaint_unet = unet.config.in_channels == 9
        self.mask = self.source = None
        self.extra_in = None
        concat = positive.extra.get("concat")
        if latent.noise_mask is not None:
            self.mask = latent_mask(latent.noise_mask, shape, batch).to(device, dtype)
            self.source = samples.to(device, dtype)
        if self.inpaint_unet:
            if concat is not None:  # from Inpaint Model Conditioning
                cmask = latent_mask(concat[0], shape, batch).to(device, dtype)
                csrc = concat[1].to(device, dtype)
                csrc = csrc if csrc.shape[0] == batch else csrc[:1].repeat(batch, 1, 1, 1)
                self.extra_in = torch.cat([cmask, csrc], dim=1)
            elif self.mask is None:
                raise InputError("latent", "a latent with a mask (from VAE Encode for Inpaint "
                                 "or Set Latent Noise Mask) for this inpainting model",
                                 "a latent without one")
            else:
                self.extra_in = torch.cat([self.mask, self.source], dim=1)
        self.regions = tile_regions(shape[-2:], tile, device, dtype)

    def __call__(self, x, t, i: int, total: int):
        import torch

        manager = self.ctx.models
        if len(self.regions) == 1:
            return manager.retry_on_oom(lambda: self._predict(x, t, i, total, None),
                                        "the sampler", module=self.unet)
        pred = torch.zeros_like(x)
        weight = torch.zeros(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        for box, w in self.regions:
            self.ctx.check_cancelled()
            y0, y1, x0, x1 = box
            part = manager.retry_on_oom(lambda b=box: self._predict(x, t, i, total, b),
                                        "the sampler", module=self.unet)
            pred[..., y0:y1, x0:x1] += part * w
            weight[..., y0:y1, x0:x1] += w
        return pred / weight

    def _unet(self, x, t, emb, added, down, mid):
        for hook in self.hooks:
            hook(x, t, emb)
        return self.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added,
                         down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]

    def _predict(self, x, t, i, total, box):
        import torch

        from .controlnet import guided_residuals

        extra = self.extra_in
        if box is not None:
            x = x[..., box[0]:box[1], box[2]:box[3]]
            if extra is not None:
                extra = extra[..., box[0]:box[1], box[2]:box[3]]
        if not self.simple:
            cond = self._side(self.pos_parts, x, t, i, total, extra)
            if not self.guided:
                return cond
            uncond = self._side(self.neg_parts, x, t, i, total, extra)
            return uncond + self.cfg * (cond - uncond)
        guided = self.guided
        xx = torch.cat([x] * 2) if guided else x
        unet_x = xx
        if extra is not None:
            unet_x = torch.cat([xx, torch.cat([extra] * 2) if guided else extra], dim=1)
        down = mid = None
        if self.ctrl_pos or self.ctrl_neg:
            if guided:
                down, mid = guided_residuals(self.ctrl_neg, self.ctrl_pos, xx, t, self.emb,
                                             self.added, i, total, box)
            else:
                down, mid = self.ctrl_pos.residuals(xx, t, self.emb, self.added, i, total, box)
        pred = self._unet(unet_x, t, self.emb, self.added, down, mid)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + self.cfg * (cond - uncond)
        return pred

    def _side(self, prepared, x, t, i, total, extra):
        """Area-weighted mean of the predictions of one side's conditionings (ComfyUI's
        Conditioning Combine / Set Area): each counts with its strength where it applies."""
        import torch

        out = torch.zeros_like(x)
        count = torch.zeros(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        h, w = x.shape[-2:]
        for emb, added, ctrl, c in prepared:
            y0, y1, x0, x1 = 0, h, 0, w
            if "area" in c.extra:  # (height, width, y, x) in pixels
                ah, aw, ay, ax = (v // 8 for v in c.extra["area"])
                y0, x0 = min(ay, h - 1), min(ax, w - 1)
                y1, x1 = min(y0 + max(ah, 1), h), min(x0 + max(aw, 1), w)
            box = (y0, y1, x0, x1)
            xc = x[..., y0:y1, x0:x1]
            unet_x = xc if extra is None else torch.cat([xc, extra[..., y0:y1, x0:x1]], dim=1)
            down = mid = None
            if ctrl:
                down, mid = ctrl.residuals(xc, t, emb, added, i, total,
                                           None if box == (0, h, 0, w) else box)
            strength = float(c.extra.get("strength", 1.0))
            out[..., y0:y1, x0:x1] += self._unet(unet_x, t, emb, added, down, mid) * strength
            count[..., y0:y1, x0:x1] += strength
        return out / count.clamp(min=1e-8)


def tile_regions(size, tile, device, dtype) -> list[tuple[tuple[int, int, int, int], Any]]:
    """(y0, y1, x0, x1) boxes and their blending weights; one box when a tile covers all."""
    from ..upscale import ramp, tile_starts

    h, w = size
    if tile is None or (tile[0] >= h and tile[1] >= w):
        return [((0, h, 0, w), None)]
    th, tw, overlap = min(tile[0], h), min(tile[1], w), tile[2]
    out = []
    for y in tile_starts(h, th, overlap):
        for x in tile_starts(w, tw, overlap):
            wy = ramp(th, overlap, y == 0, y + th >= h)
            wx = ramp(tw, overlap, x == 0, x + tw >= w)
            out.append(((y, y + th, x, x + tw),
                        (wy[:, None] * wx[None, :]).to(device, dtype)[None, None]))
    return out


def latent_mask(mask: Any, shape: tuple[int, ...], batch: int) -> Any:
    """A MASK at pixel (or latent) size -> [batch, 1, h, w] at the latent's size: the share
    of each 8x8 block that is masked."""
    import torch.nn.functional as F

    h, w = shape[-2], shape[-1]
    if tuple(mask.shape[-2:]) not in ((h, w), (h * 8, w * 8)):
        raise InputError("latent", f"a mask of {w * 8}x{h * 8} pixels (the image's size)",
                         f"a mask of {mask.shape[-1]}x{mask.shape[-2]}")
    if tuple(mask.shape[-2:]) != (h, w):
        mask = F.interpolate(mask.float(), size=(h, w), mode="area")
    if mask.shape[0] != batch:
        mask = mask[:1].repeat(batch, 1, 1, 1)
    return mask


def _same_length(a: Any, b: Any) -> tuple[Any, Any]:
    """Conditionings from prompts of different chunk counts: repeat the shorter's chunks."""
    import torch

    if a.shape[1] == b.shape[1]:
        return a, b
    n = max(a.shape[1], b.shape[1])

    def grow(x):
        reps = -(-n // x.shape[1])
        return torch.cat([x] * reps, dim=1)[:, :n]

    return grow(a), grow(b)


def _sdxl_added(comps, positive, negative, shape, batch, guided, device, dtype) -> dict:
    import torch

    h, w = shape[-2] * 8, shape[-1] * 8
    arch = Arch.of(comps.family)
    if arch is not None and arch.is_refiner:
        pos_ids = [h, w, 0, 0, positive.extra.get("aesthetic_score", 6.0)]
        neg_ids = [h, w, 0, 0, negative.extra.get("aesthetic_score", 2.5)]
    else:
        def ids(c):
            e = c.extra
            return [e.get("height", h), e.get("width", w), e.get("crop_h", 0),
                    e.get("crop_w", 0), e.get("target_height", h), e.get("target_width", w)]
        pos_ids, neg_ids = ids(positive), ids(negative)
    pooled_p = positive.pooled.repeat(batch, 1)
    time_p = torch.tensor([pos_ids], dtype=dtype).repeat(batch, 1)
    if guided:
        pooled = torch.cat([negative.pooled.repeat(batch, 1), pooled_p])
        time_ids = torch.cat([torch.tensor([neg_ids], dtype=dtype).repeat(batch, 1), time_p])
    else:
        pooled, time_ids = pooled_p, time_p
    return {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids.to(device, dtype)}


class EmptyLatent(Node):
    type = "empty_latent"
    title = "Empty Latent"
    pixel_inputs = ("batch_size", "width", "height")
    category = "latent"
    description = "A blank latent for text-to-image: width and height in pixels (multiples of 8)."
    inputs = (Int("width", 512, min=8, max=16384, step=8),
              Int("height", 512, min=8, max=16384, step=8),
              Int("batch_size", 1, min=1, max=64))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, width=512, height=512, batch_size=1):
        import torch

        for name, v in (("width", width), ("height", height)):
            if v % 8:
                raise InputError(name, "a multiple of 8", v,
                                 hint=f"use {v - v % 8} or {v - v % 8 + 8}")
        return {"latent": Latent(torch.zeros(batch_size, 4, height // 8, width // 8))}


class Sampler(Node):
    type = "sampler"
    title = "Sampler"
    category = "sampling"
    aliases = ("ksampler",)
    description = ("Denoise a latent guided by the prompts. denoise < 1 keeps part of the "
                   "input latent (image to image).")
    inputs = (In("model", T.model), In("positive", T.conditioning),
              In("negative", T.conditioning), In("latent", T.latent),
              Seed("seed", 0), SeedControl(), Int("steps", 20, min=1, max=1000),
              Float("cfg", 7.0, min=0.0, max=100.0, step=0.1),
              Choice("sampler", tuple(SAMPLERS), "euler"),
              Choice("scheduler", tuple(SCHEDULES), "normal"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, model, positive, negative, latent, seed=0, steps=20, cfg=7.0,
            sampler="euler", scheduler="normal", denoise=1.0, control_after_run="fixed"):
        return {"latent": sample(ctx, model, positive, negative, latent, seed, steps, cfg,
                                 sampler, scheduler, denoise)}


class TiledSampler(Node):
    type = "tiled_sampler"
    title = "Tiled Sampler"
    category = "sampling"
    description = ("The Sampler for any size: overlapping tiles are denoised at every step and "
                   "blended, so a large image runs in the memory of one tile and shows no "
                   "seams. ControlNets (tile ones above all) are cropped to each tile.")
    inputs = Sampler.inputs + (
        Int("tile_width", 768, min=64, max=4096, step=8),
        Int("tile_height", 768, min=64, max=4096, step=8),
        Int("tile_overlap", 128, min=0, max=1024, step=8))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, model, positive, negative, latent, seed=0, steps=20, cfg=7.0,
            sampler="euler", scheduler="normal", denoise=1.0, tile_width=768, tile_height=768,
            tile_overlap=128, control_after_run="fixed"):
        if tile_overlap >= min(tile_width, tile_height):
            raise InputError("tile_overlap", "less than the tile's width and height",
                             tile_overlap)
        tile = (tile_height // 8, tile_width // 8, tile_overlap // 8)
        return {"latent": sample(ctx, model, positive, negative, latent, seed, steps, cfg,
                                 sampler, scheduler, denoise, tile)}


NODES = (EmptyLatent, Sampler, TiledSampler)
