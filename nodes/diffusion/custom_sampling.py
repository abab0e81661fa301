"""Sampling over an explicit noise schedule (sigmas): the Advanced Sampler (start and end
steps, no-noise starts, leftover noise for a refiner) and the custom-sampling family that
ComfyUI users know (sampler, sigmas, guider and noise as separate nodes).

The loops run in k-diffusion's sigma space: x = x0 + sigma * noise, the model called on
x / sqrt(sigma^2 + 1) at the timestep whose training sigma matches. They share the
Sampler's `Predictor`, so ControlNets, combined and area prompts and inpainting work alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from engine.errors import InputError
from engine.runtime import generator_for
from engine.spec import Bool, Choice, Float, In, Int, Node, Output, Seed, SeedControl
from engine.types import T
from engine.values import Latent

from .models import components
from .sampling import SAMPLERS, SCHEDULES, Predictor, make_noise, preview_image, sample
from .sigma_steps import STEPS, Walk

# The samplers that step over any sigmas.
SIGMA_SAMPLERS = tuple(STEPS)


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


def _scheduler(ctx, model, schedule: str) -> Any:
    import diffusers

    if schedule not in SCHEDULES:
        raise InputError("scheduler", f"one of {', '.join(SCHEDULES)}", schedule)
    config = {k: v for k, v in components(ctx, model).scheduler_config.items()
              if not k.startswith("_")}
    return diffusers.EulerDiscreteScheduler.from_config(config, **SCHEDULES[schedule])


def schedule_sigmas(ctx, model, schedule: str, steps: int, denoise: float = 1.0) -> Any:
    """The model's sigmas for `steps` steps on a named schedule, ending at 0. denoise < 1
    keeps the last steps of a longer schedule (ComfyUI's BasicScheduler)."""
    import torch

    if denoise <= 0:
        return torch.zeros(0)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    sched = _scheduler(ctx, model, schedule)
    sched.set_timesteps(total)
    return sched.sigmas.float().cpu()[-(steps + 1):].clone()


class SigmaModel:
    """The model's training sigmas, to turn a sigma into the UNet's timestep."""

    def __init__(self, ctx, model):
        import torch

        sched = _scheduler(ctx, model, "normal")
        ac = sched.alphas_cumprod.double().clamp(min=2.0 ** -24)
        self.log_sigmas = ((1 - ac) / ac).sqrt().log().float()
        self.v = sched.config.prediction_type == "v_prediction"
        if sched.config.prediction_type not in ("epsilon", "v_prediction"):
            raise InputError("model", "a model that predicts noise or v",
                             sched.config.prediction_type)
        self.torch = torch

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def sigma(self, timestep: float) -> float:
        """The training sigma at a (fractional) timestep."""
        t = min(max(float(timestep), 0.0), len(self.log_sigmas) - 1.0)
        lo = int(math.floor(t))
        hi = min(lo + 1, len(self.log_sigmas) - 1)
        w = t - lo
        return float(((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp())

    def timestep(self, sigma: float) -> float:
        torch = self.torch
        ls = self.log_sigmas
        log_s = math.log(max(sigma, 1e-10))
        hi = int(torch.searchsorted(ls, torch.tensor(log_s)).clamp(1, len(ls) - 1))
        lo = hi - 1
        w = (log_s - float(ls[lo])) / max(float(ls[hi] - ls[lo]), 1e-12)
        return lo + min(max(w, 0.0), 1.0)


def run_sigmas(ctx, guider: Guider, sampler: str, sigmas: Any, latent: Latent,
               noise: Noise, start_scale: float | None = None) -> tuple[Latent, Latent]:
    """Denoise `latent` along `sigmas` (from sigmas[0] down to sigmas[-1]); returns the
    result and the model's last estimate of the clean latent. `start_scale` scales the
    starting noise (default: sigmas[0], or sqrt(1 + sigma^2) from the model's top level)."""
    import torch

    if sampler not in SIGMA_SAMPLERS:
        raise InputError("sampler", f"one of {', '.join(SIGMA_SAMPLERS)} (the samplers that "
                         "follow explicit sigmas)", sampler)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if len(sigmas) < 2:
        return latent, latent
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise InputError("sigmas", "finite sigmas of at least 0", sigmas.tolist()[:8])
    model = guider.model
    comps = components(ctx, model)
    sm = SigmaModel(ctx, model)
    predict = Predictor(ctx, model, comps, guider.positive, guider.negative, guider.cfg, latent)
    device, dtype = predict.device, predict.dtype
    samples = latent.samples.to(device, torch.float32)
    batch = samples.shape[0]
    seed = noise.seed if noise.seed is not None else 0
    gens = [generator_for(seed, i) for i in (latent.batch_index or tuple(range(batch)))]
    if noise.seed is not None:
        first = make_noise(samples.shape, gens, device, torch.float32)
    else:
        first = torch.zeros_like(samples)
    s0 = float(sigmas[0])
    if start_scale is None:
        # from the model's top noise level the start is pure noise of unit variance in the
        # model's input space (as ComfyUI starts): scale by sqrt(1 + sigma^2)
        start_scale = math.sqrt(1 + s0 * s0) if s0 >= sm.sigma_max * (1 - 1e-4) else s0
    x = samples + first * start_scale
    mask = predict.mask.float() if predict.mask is not None and not predict.inpaint_unet \
        else None
    total = len(sigmas) - 1

    def denoised(x, s: float, i: int):
        ctx.check_cancelled()
        if s <= 0:
            return x
        t = torch.tensor(sm.timestep(s), device=device, dtype=torch.float32)
        c_in = 1.0 / math.sqrt(s * s + 1)
        out = predict((x * c_in).to(dtype), t, i, total).float()
        if sm.v:
            return x / (s * s + 1) - out * (s / math.sqrt(s * s + 1))
        return x - out * s

    def step_noise():
        return make_noise(samples.shape, gens, device, torch.float32)

    step = STEPS[sampler]
    den = samples
    walk = Walk([float(v) for v in sigmas], denoised, step_noise)
    for i in range(total):
        s, s_next = walk.sigmas[i], walk.sigmas[i + 1]
        den = denoised(x, s, i)
        if s <= 0:
            x = den
        else:
            x = step(walk, x, den, i)
            walk.old = den
        if mask is not None:  # keep the unmasked part on the source, noised to this level
            x = mask * x + (1 - mask) * (samples + first * s_next)
        ctx.progress(i + 1, total, preview=lambda lat=x: preview_image(lat, model.family))

    def wrap(z):
        return Latent(samples=z.float().cpu(), noise_mask=latent.noise_mask,
                      batch_index=latent.batch_index)

    return wrap(x), wrap(den)


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
              Choice("scheduler", tuple(SCHEDULES), "normal"),
              Int("start_at_step", 0, min=0, max=10000),
              Int("end_at_step", 10000, min=0, max=10000),
              Bool("return_with_leftover_noise", False))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, model, positive, negative, latent, add_noise=True, seed=0, steps=20,
            cfg=7.0, sampler="euler", scheduler="normal", start_at_step=0, end_at_step=10000,
            return_with_leftover_noise=False, control_after_run="fixed"):
        if start_at_step == 0 and end_at_step >= steps and add_noise:  # the Sampler's job
            return {"latent": sample(ctx, model, positive, negative, latent, seed, steps,
                                     cfg, sampler, scheduler, 1.0)}
        if sampler not in SIGMA_SAMPLERS:
            raise InputError("sampler", f"one of {', '.join(SIGMA_SAMPLERS)} when sampling "
                             "part of the schedule", sampler)
        sched = _scheduler(ctx, model, scheduler)
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.float().cpu().clone()
        # from step 0 the noise is scaled as the Sampler scales it, so the two agree
        start_scale = float(sched.init_noise_sigma) if start_at_step == 0 else None
        if end_at_step < steps:
            sigmas = sigmas[:end_at_step + 1]
            if not return_with_leftover_noise:
                sigmas[-1] = 0
        sigmas = sigmas[start_at_step:]
        if len(sigmas) < 2:
            return {"latent": latent}
        out, _ = run_sigmas(ctx, Guider(model, positive, negative, cfg), sampler, sigmas,
                            latent, Noise(seed if add_noise else None), start_scale)
        return {"latent": out}


class SamplerSelect(Node):
    type = "sampler_select"
    title = "Sampler Select"
    category = "sampling/custom"
    description = "A sampling method for the Custom Sampler."
    inputs = (Choice("sampler", SIGMA_SAMPLERS, "euler"),)
    outputs = (Output("sampler", T.sampler),)

    def run(self, ctx, sampler="euler"):
        return {"sampler": sampler}


class ScheduleSigmas(Node):
    type = "schedule_sigmas"
    title = "Schedule Sigmas"
    category = "sampling/custom"
    description = "The model's noise levels for a number of steps on a named schedule."
    inputs = (In("model", T.model), Choice("scheduler", tuple(SCHEDULES), "normal"),
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
        import torch

        if sigma_min <= 0 or sigma_max < sigma_min or rho <= 0:
            raise InputError("sigma_min", "0 < sigma_min <= sigma_max and rho > 0",
                             f"sigma_min {sigma_min}, sigma_max {sigma_max}, rho {rho}")
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sig = (hi + ramp * (lo - hi)) ** rho
        return {"sigmas": torch.cat([sig, torch.zeros(1, dtype=torch.float64)]).float()}


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
        sm = SigmaModel(ctx, model)
        ts = [999 - 100 * k for k in range(10)][start:start + steps]
        return {"sigmas": torch.tensor([sm.sigma(t) for t in ts] + [0.0])}


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
