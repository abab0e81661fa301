"""Sampling over an explicit noise schedule (sigmas): the Advanced Sampler (start and end
steps, no-noise starts, leftover noise for a refiner) and the custom-sampling family that
ComfyUI users know (sampler, sigmas, guider and noise as separate nodes).

All of them walk the sigmas as ComfyUI does (walk.py), with the Sampler's `Predictor`, so
ControlNets, combined and area prompts and inpainting work alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.errors import InputError
from engine.spec import Bool, Choice, Float, In, Int, Node, Output, Seed, SeedControl
from engine.types import T
from engine.values import Latent

from .ksampling import DISCARD_PENULTIMATE, SAMPLERS
from .ksampling.schedules import SCHEDULERS, calculate_sigmas, karras_sigmas, ksampler_sigmas
from .models import components
from .predictor import Predictor
from .walk import check_sampler, model_sampling, prepare_noise, walk


@dataclasses.dataclass(frozen=True)
class Guider:
    """A model and the conditionings that guide it (ComfyUI's GUIDER)."""

    model: Any
    positive: Any
    negative: Any = None
    cfg: float = 1.0


@dataclasses.dataclass(frozen=True)
class Noise:
    """The starting noise: a seed, or None for none (the latent is already noisy)."""

    seed: int | None = None


def _check_scheduler(scheduler: str) -> None:
    if scheduler not in SCHEDULERS:
        raise InputError("scheduler", f"one of {', '.join(SCHEDULERS)}", scheduler)


def schedule_sigmas(ctx, model, schedule: str, steps: int, denoise: float = 1.0) -> Any:
    """The model's sigmas for `steps` steps on a named schedule (ComfyUI's BasicScheduler:
    below denoise 1 the last steps of an int(steps / denoise)-step schedule)."""
    import torch

    _check_scheduler(schedule)
    if denoise <= 0:
        return torch.zeros(0)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    ms = model_sampling(components(ctx, model), model)
    return calculate_sigmas(ms, schedule, total).cpu()[-(steps + 1):].clone()


def run_sigmas(ctx, guider: Guider, sampler: str, sigmas: Any, latent: Latent,
               noise: Noise) -> tuple[Latent, Latent]:
    """Denoise `latent` along `sigmas` (from sigmas[0] down to sigmas[-1]); returns the
    result and the model's last estimate of the clean latent."""
    import torch

    check_sampler(sampler)
    model = guider.model
    comps = components(ctx, model)
    predict = Predictor(ctx, model, comps, guider.positive, guider.negative, guider.cfg, latent)
    shape = tuple(latent.samples.shape)
    start = torch.zeros(shape) if noise.seed is None else \
        prepare_noise(shape, noise.seed, latent.batch_index)
    return walk(ctx, model, predict, sampler, sigmas, latent, start,
                0 if noise.seed is None else noise.seed)


# ---- nodes ----------------------------------------------------------------------------


class AdvancedSampler(Node):
    type = "sampler_advanced"
    title = "Advanced Sampler"
    category = "sampling"
    description = ("The Sampler over part of its schedule: start and end at given steps, "
                   "start without adding noise, or stop with the noise left in (to hand a "
                   "latent to a refiner).")
    inputs = (In("model", T.model), In("positive", T.conditioning),
              In("negative", T.conditioning), In("latent", T.latent),
              Bool("add_noise", True), Seed("seed", 0), SeedControl(),
              Int("steps", 20, min=1, max=1000),
              Float("cfg", 7.0, min=0.0, max=100.0, step=0.1),
              Choice("sampler", tuple(SAMPLERS), "euler"),
              Choice("scheduler", tuple(SCHEDULERS), "normal"),
              Int("start_at_step", 0, min=0, max=10000),
              Int("end_at_step", 10000, min=0, max=10000),
              Bool("return_with_leftover_noise", False))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, model, positive, negative, latent, add_noise=True, seed=0, steps=20,
            cfg=7.0, sampler="euler", scheduler="normal", start_at_step=0, end_at_step=10000,
            return_with_leftover_noise=False, control_after_run="fixed"):
        """ComfyUI's KSamplerAdvanced: the whole schedule cut to [start, end]; without
        leftover noise a cut end goes down to 0."""
        _check_scheduler(scheduler)
        check_sampler(sampler)  # also when the cut leaves nothing to run
        ms = model_sampling(components(ctx, model), model, latent)
        sigmas = ksampler_sigmas(ms, scheduler, steps,
                                 1.0, sampler in DISCARD_PENULTIMATE).clone()
        if end_at_step < len(sigmas) - 1:
            sigmas = sigmas[:end_at_step + 1]
            if not return_with_leftover_noise:
                sigmas[-1] = 0
        if start_at_step >= len(sigmas) - 1:
            return {"latent": latent}
        out, _ = run_sigmas(ctx, Guider(model, positive, negative, cfg), sampler,
                            sigmas[start_at_step:], latent, Noise(seed if add_noise else None))
        return {"latent": out}


class SamplerSelect(Node):
    type = "sampler_select"
    title = "Sampler Select"
    category = "sampling/custom"
    description = "A sampling method for the Custom Sampler."
    inputs = (Choice("sampler", tuple(SAMPLERS), "euler"),)
    outputs = (Output("sampler", T.sampler),)

    def run(self, ctx, sampler="euler"):
        return {"sampler": sampler}


class ScheduleSigmas(Node):
    type = "schedule_sigmas"
    title = "Schedule Sigmas"
    category = "sampling/custom"
    description = "The model's noise levels for a number of steps on a named schedule."
    inputs = (In("model", T.model), Choice("scheduler", tuple(SCHEDULERS), "normal"),
              Int("steps", 20, min=1, max=10000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("sigmas", T.sigmas),)

    def run(self, ctx, model, scheduler="normal", steps=20, denoise=1.0):
        return {"sigmas": schedule_sigmas(ctx, model, scheduler, steps, denoise)}


class KarrasSigmas(Node):
    type = "karras_sigmas"
    title = "Karras Sigmas"
    category = "sampling/custom"
    description = "Karras et al.'s schedule between two noise levels."
    inputs = (Int("steps", 20, min=1, max=10000),
              Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01),
              Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01),
              Float("rho", 7.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output("sigmas", T.sigmas),)

    def run(self, ctx, steps=20, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0):
        if sigma_min <= 0 or sigma_max < sigma_min or rho <= 0:
            raise InputError("sigma_min", "0 < sigma_min <= sigma_max and rho > 0",
                             f"sigma_min {sigma_min}, sigma_max {sigma_max}, rho {rho}")
        return {"sigmas": karras_sigmas(steps, sigma_min, sigma_max, rho)}


class TurboSigmas(Node):
    type = "turbo_sigmas"
    title = "Turbo Sigmas"
    category = "sampling/custom"
    description = "The few-step schedule of SD-Turbo models (timesteps 999, 899, ...)."
    inputs = (In("model", T.model), Int("steps", 1, min=1, max=10),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("sigmas", T.sigmas),)

    def run(self, ctx, model, steps=1, denoise=1.0):
        import torch

        start = 10 - int(10 * denoise)
        ms = model_sampling(components(ctx, model), model)
        ts = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
        sigmas = ms.sigma(ts).float()
        return {"sigmas": torch.cat([sigmas, sigmas.new_zeros([1])])}


class SetFirstSigma(Node):
    type = "set_first_sigma"
    title = "Set First Sigma"
    category = "sampling/custom"
    description = "Replace the first noise level of a schedule."
    inputs = (In("sigmas", T.sigmas), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001))
    outputs = (Output("sigmas", T.sigmas),)

    def run(self, ctx, sigmas, sigma=136.0):
        out = sigmas.clone()
        if len(out):
            out[0] = sigma
        return {"sigmas": out}


class BasicGuider(Node):
    type = "basic_guider"
    title = "Basic Guider"
    category = "sampling/custom"
    description = "Guide the model by one conditioning, without a negative (cfg 1)."
    inputs = (In("model", T.model), In("conditioning", T.conditioning))
    outputs = (Output("guider", T.guider),)

    def run(self, ctx, model, conditioning):
        return {"guider": Guider(model, conditioning, None, 1.0)}


class CFGGuider(Node):
    type = "cfg_guider"
    title = "CFG Guider"
    category = "sampling/custom"
    description = "Guide the model by a positive and a negative conditioning."
    inputs = (In("model", T.model), In("positive", T.conditioning),
              In("negative", T.conditioning),
              Float("cfg", 8.0, min=0.0, max=100.0, step=0.1))
    outputs = (Output("guider", T.guider),)

    def run(self, ctx, model, positive, negative, cfg=8.0):
        return {"guider": Guider(model, positive, negative, cfg)}


class RandomNoise(Node):
    type = "random_noise"
    title = "Random Noise"
    category = "sampling/custom"
    description = "Starting noise from a seed."
    inputs = (Seed("seed", 0), SeedControl())
    outputs = (Output("noise", T.noise),)

    def run(self, ctx, seed=0, control_after_run="fixed"):
        return {"noise": Noise(seed)}


class DisableNoise(Node):
    type = "disable_noise"
    title = "No Noise"
    category = "sampling/custom"
    description = "Start from the latent as it is (it already holds noise)."
    inputs = ()
    outputs = (Output("noise", T.noise),)

    def run(self, ctx):
        return {"noise": Noise(None)}


class CustomSampler(Node):
    type = "custom_sampler"
    title = "Custom Sampler"
    category = "sampling/custom"
    description = ("Sample along explicit sigmas with a chosen method; also returns the "
                   "model's last estimate of the clean latent.")
    inputs = (In("model", T.model), Bool("add_noise", True), Seed("seed", 0), SeedControl(),
              Float("cfg", 8.0, min=0.0, max=100.0, step=0.1),
              In("positive", T.conditioning), In("negative", T.conditioning),
              In("sampler", T.sampler), In("sigmas", T.sigmas), In("latent", T.latent))
    outputs = (Output("output", T.latent), Output("denoised_output", T.latent))

    def run(self, ctx, model, positive, negative, sampler, sigmas, latent, add_noise=True,
            seed=0, cfg=8.0, control_after_run="fixed"):
        out, den = run_sigmas(ctx, Guider(model, positive, negative, cfg), sampler, sigmas,
                              latent, Noise(seed if add_noise else None))
        return {"output": out, "denoised_output": den}


class CustomSamplerAdvanced(Node):
    type = "custom_sampler_advanced"
    title = "Custom Sampler (Guider)"
    category = "sampling/custom"
    description = "Sample along explicit sigmas with separate noise, guider and method."
    inputs = (In("noise", T.noise), In("guider", T.guider), In("sampler", T.sampler),
              In("sigmas", T.sigmas), In("latent", T.latent))
    outputs = (Output("output", T.latent), Output("denoised_output", T.latent))

    def run(self, ctx, noise, guider, sampler, sigmas, latent):
        out, den = run_sigmas(ctx, guider, sampler, sigmas, latent, noise)
        return {"output": out, "denoised_output": den}


NODES = (AdvancedSampler, SamplerSelect, ScheduleSigmas, KarrasSigmas, TurboSigmas,
         SetFirstSigma, BasicGuider, CFGGuider, RandomNoise, DisableNoise, CustomSampler,
         CustomSamplerAdvanced)
