"""ComfyUI's schedulers: the sigmas its KSampler walks for a scheduler name, a step count
and a denoise, over a model's sampling (its sigma range and training sigmas)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .modelsampling import ModelSampling


def simple(ms: ModelSampling, steps: int) -> list[float]:
    ss = len(ms.sigmas) / steps
    return [float(ms.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


def ddim_uniform(ms: ModelSampling, steps: int) -> list[float]:
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += ss
    return sigs[::-1]


def normal(ms: ModelSampling, steps: int, sgm: bool = False) -> list[float]:
    import torch

    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    return sigs + [0.0] if append_zero else sigs


def sgm_uniform(ms: ModelSampling, steps: int) -> list[float]:
    return normal(ms, steps, sgm=True)


def karras(ms: ModelSampling, steps: int) -> Any:
    return karras_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def karras_sigmas(steps: int, lo: float, hi: float, rho: float = 7.0) -> Any:
    """Karras et al.'s schedule between two noise levels, ending at 0."""
    import torch

    ramp = torch.linspace(0, 1, steps)
    min_inv, max_inv = lo ** (1 / rho), hi ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def exponential(ms: ModelSampling, steps: int) -> Any:
    import torch

    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    sigmas = torch.linspace(math.log(hi), math.log(lo), steps).exp()
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> list[float]:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) (Lee et al., 2024), as ComfyUI."""
    import numpy as np
    from scipy.stats import beta as beta_dist

    total = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(beta_dist.ppf(ts, alpha, beta_) * total)
    sigs: list[float] = []
    last = -1.0
    for t in ts:
        if t != last:
            sigs.append(float(ms.sigmas[int(t)]))
        last = t
    return sigs + [0.0]


def linear_quadratic(ms: ModelSampling, steps: int, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> Any:
    """Linear then quadratic in sigma (Mochi's schedule), scaled to the model's top sigma."""
    import torch

    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold_noise / linear_steps - 2 * diff / (quadratic_steps ** 2)
        const = quad_coef * (linear_steps ** 2)
        quadratic = [quad_coef * (i ** 2) + lin_coef * i + const
                     for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max.cpu()


def kl_optimal(ms: ModelSampling, steps: int) -> Any:
    """Align Your Steps' KL-optimal schedule. For one step ComfyUI divides 0 by 0 and
    returns NaN (a black image); here the one step starts at the top sigma, the formula's
    value at its start."""
    import torch

    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    idx = torch.arange(steps, dtype=torch.float).div_(steps - 1) if steps > 1 \
        else torch.zeros(1)
    sigmas = idx.new_zeros(steps + 1)
    sigmas[:-1] = (idx * math.atan(lo) + (1 - idx) * math.atan(hi)).tan_()
    return sigmas


# ComfyUI's SCHEDULER_NAMES order
SCHEDULERS: dict[str, Callable[[ModelSampling, int], Any]] = {
    "simple": simple, "sgm_uniform": sgm_uniform, "karras": karras,
    "exponential": exponential, "ddim_uniform": ddim_uniform, "beta": beta,
    "normal": normal, "linear_quadratic": linear_quadratic, "kl_optimal": kl_optimal}


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> Any:
    import torch

    return torch.as_tensor(SCHEDULERS[scheduler](ms, steps), dtype=torch.float32)


def ksampler_sigmas(ms: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0,
                    discard_penultimate: bool = False) -> Any:
    """The sigmas ComfyUI's KSampler runs: below denoise 1 the last `steps` of an
    int(steps / denoise)-step schedule; some samplers (`discard_penultimate`) compute one
    step more and drop the second-to-last sigma."""
    import torch

    def computed(n: int) -> Any:
        if discard_penultimate:
            sigmas = calculate_sigmas(ms, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(ms, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return computed(steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    return computed(int(steps / denoise))[-(steps + 1):]
