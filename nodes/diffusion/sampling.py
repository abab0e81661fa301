"""Empty Latent and the Sampler. By default the Sampler means what ComfyUI means by the
same sampler and scheduler names (walk.py); the `diffusers` scheduler instead follows the
model folder's scheduler config with the diffusers scheduler of that sampler, as diffusers'
pipelines sample. Progress, previews and cancellation at every step either way."""

from __future__ import annotations

import inspect
from typing import Any

from engine.errors import InputError
from engine.runtime import generator_for
from engine.spec import Choice, Float, In, Int, Node, Output, Seed, SeedControl
from engine.types import T
from engine.values import Latent

from .flow import diffusers_sigmas, is_transformer
from .ksampling import DISCARD_PENULTIMATE, SAMPLERS
from .ksampling.schedules import SCHEDULERS, ksampler_sigmas
from .models import components
from .predictor import Predictor
from .preview import preview_image
from .walk import check_sampler, model_sampling, prepare_noise, walk

DIFFUSERS = "diffusers"
# the Sampler's scheduler names: ComfyUI's, then the model folder's own
SCHEDULER_NAMES = (*SCHEDULERS, DIFFUSERS)

# For the `diffusers` scheduler: sampler name -> a diffusers scheduler and its settings.
DIFFUSERS_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
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
# the Sampler's sampler names: ComfyUI's (the diffusers path has a scheduler for some)
SAMPLER_NAMES = tuple(SAMPLERS)

def make_scheduler(base_config: dict[str, Any], sampler: str) -> Any:
    """The diffusers scheduler of a sampler name over a model folder's scheduler config."""
    import diffusers

    if sampler not in DIFFUSERS_SAMPLERS:
        raise InputError("sampler", "a sampler with a diffusers scheduler for the diffusers "
                         f"scheduler ({', '.join(DIFFUSERS_SAMPLERS)})", sampler,
                         hint="or pick one of ComfyUI's schedulers")
    cls_name, settings = DIFFUSERS_SAMPLERS[sampler]
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return getattr(diffusers, cls_name).from_config(config, **settings)


def sample(ctx, model, positive, negative, latent: Latent, seed: int, steps: int, cfg: float,
           sampler: str, scheduler: str, denoise: float,
           tile: tuple[int, int, int] | None = None, hooks: tuple = ()) -> Latent:
    """The denoising loop. `tile` = (height, width, overlap) in latent units denoises
    overlapping tiles at every step and blends their predictions (MultiDiffusion), so any
    size runs in the memory of one tile."""
    comps = components(ctx, model)
    flow_diffusers = scheduler == DIFFUSERS and is_transformer(comps)
    if scheduler == DIFFUSERS and not flow_diffusers:
        return sample_diffusers(ctx, model, positive, negative, latent, seed, steps, cfg,
                                sampler, denoise, tile, hooks)
    check_sampler(sampler)
    if scheduler not in SCHEDULER_NAMES:
        raise InputError("scheduler", f"one of {', '.join(SCHEDULER_NAMES)}", scheduler)
    if flow_diffusers:  # FluxPipeline's sigmas and noise, walked by the named sampler
        sigmas = diffusers_sigmas(comps, model, latent, steps, denoise)
    else:
        sigmas = ksampler_sigmas(model_sampling(comps, model, latent), scheduler, steps,
                                 denoise, sampler in DISCARD_PENULTIMATE)
    if len(sigmas) < 2:
        return latent
    predict = Predictor(ctx, model, comps, positive, negative, cfg, latent, tile, hooks)
    shape = tuple(latent.samples.shape)
    if flow_diffusers:
        import torch

        gens = [generator_for(seed, i) for i in (latent.batch_index or range(shape[0]))]
        noise = make_noise(shape, gens, torch.device("cpu"), torch.float32)
    else:
        noise = prepare_noise(shape, seed, latent.batch_index)
    return walk(ctx, model, predict, sampler, sigmas, latent, noise, seed)[0]


def sample_diffusers(ctx, model, positive, negative, latent: Latent, seed: int, steps: int,
                     cfg: float, sampler: str, denoise: float,
                     tile: tuple[int, int, int] | None = None, hooks: tuple = ()) -> Latent:
    """The loop of diffusers' pipelines, over the scheduler of the model's folder (its
    timestep spacing), image-to-image running int(steps x denoise) steps, a generator per
    batch image."""
    comps = components(ctx, model)
    manager = ctx.models
    device = manager.device.torch_device()
    sched = make_scheduler(comps.scheduler_config, sampler)
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
    channels, multiple = 4, 8

    def run(self, ctx, width=512, height=512, batch_size=1):
        import torch

        m = self.multiple
        for name, v in (("width", width), ("height", height)):
            if v % m:
                raise InputError(name, f"a multiple of {m}", v,
                                 hint=f"use {v - v % m or m} or {v - v % m + m}")
        return {"latent": Latent(torch.zeros(batch_size, self.channels, height // 8,
                                             width // 8))}


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
              Choice("sampler", SAMPLER_NAMES, "euler"),
              Choice("scheduler", SCHEDULER_NAMES, "normal"),
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
