"""Ancestral samplers (k-diffusion's, with ComfyUI's rectified-flow and CFG++ variants):
each step solves down to a level below the next sigma and adds fresh noise back up to it.
Also DDPM, LCM and the ancestral res_multistep, which renoise every step the same way.

CFG++ variants step along the unconditional estimate (`run.uncond`) and add the guidance
back afterwards; without guidance (uncond None) they take the plain step."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .base import Run
from .basic import get_ancestral_step, half_log_snr, half_log_snr_to_sigma, to_d, walk
from .noise import step_noise


def _uncond(run: Run, denoised: Any, cfg_pp: bool) -> Any:
    """What a step moves along: the unconditional estimate for CFG++ when guiding."""
    return run.uncond if cfg_pp and run.uncond is not None else denoised


def _alpha(sigma: Any, ms: Any) -> Any:
    """The signal scale at sigma: 1 - sigma for rectified flow, 1 otherwise."""
    return 1 - sigma if ms.flow else 1.0


def _down(ms: Any, sigma: Any, sigma_next: Any, eta: float) -> tuple[Any, Any, Any]:
    """(sigma_down, scale, amount): after a step to sigma_down, `scale * x + amount * noise`
    is at sigma_next. Flow models shrink the signal as they renoise (ComfyUI's _RF steps)."""
    if not ms.flow:
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        return sigma_down, 1.0, sigma_up
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    amount = (sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
    return sigma_down, alpha_next / alpha_down, amount


Estimate = Callable[[Any, Any], Any]
Step = Callable[[Run, Estimate, Any, Any, Any, Any], Any]


def _euler_step(run: Run, estimate: Estimate, x: Any, denoised: Any, sigma: Any,
                sigma_down: Any) -> Any:
    return x + to_d(x, sigma, denoised) * (sigma_down - sigma)


def _dpm_2_step(run: Run, estimate: Estimate, x: Any, denoised: Any, sigma: Any,
                sigma_down: Any) -> Any:
    sigma_mid = sigma.log().lerp(sigma_down.log(), 0.5).exp()
    x_2 = x + to_d(x, sigma, denoised) * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, estimate(x_2, sigma_mid))
    return x + d_2 * (sigma_down - sigma)


def _dpmpp_2s_step(run: Run, estimate: Estimate, x: Any, denoised: Any, sigma: Any,
                   sigma_down: Any) -> Any:
    """DPM-Solver++(2S): a half step in half-log-SNR, then the full step from its estimate."""
    ms = run.ms
    if ms.flow and sigma == 1.0:
        sigma_mid: Any = 0.9999
    else:
        lam = half_log_snr(sigma, ms).lerp(half_log_snr(sigma_down, ms), 0.5)
        sigma_mid = half_log_snr_to_sigma(lam, ms)
    ratio = sigma_mid / sigma
    mid = estimate(ratio * x + (1 - ratio) * denoised, sigma_mid)
    ratio = sigma_down / sigma
    return ratio * x + (1 - ratio) * mid


def _ancestral(run: Run, x: Any, step: Step, eta: float = 1.0, s_noise: float = 1.0,
               cfg_pp: bool = False) -> Any:
    """The loop the ancestral samplers share: estimate, `step` down to sigma_down, renoise
    up to the next sigma."""
    noise = step_noise(run, x)
    ms, sigmas, s_in = run.ms, run.sigmas, run.s_in(x)

    def estimate(x_: Any, sigma_: Any) -> Any:
        return _uncond(run, run.model(x_, sigma_ * s_in), cfg_pp)

    def ancestral_step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        along = _uncond(run, denoised, cfg_pp)
        sigma_down, scale, amount = _down(ms, sigma, sigma_next, eta)
        if sigma_down == 0 and not ms.flow:  # eta > 1 leaves nothing to solve
            x = _euler_step(run, estimate, x, along, sigma, sigma_down)
        else:
            x = step(run, estimate, x, along, sigma, sigma_down)
            if eta > 0:
                x = scale * x + noise(sigma, sigma_next) * s_noise * amount
        return x + _alpha(sigma_next, ms) * (denoised - along) if cfg_pp else x

    return walk(run, x, ancestral_step, lands=True)


def euler_ancestral(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0) -> Any:
    return _ancestral(run, x, _euler_step, eta, s_noise)


def dpm_2_ancestral(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0) -> Any:
    return _ancestral(run, x, _dpm_2_step, eta, s_noise)


def dpmpp_2s_ancestral(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0,
                       cfg_pp: bool = False) -> Any:
    return _ancestral(run, x, _dpmpp_2s_step, eta, s_noise, cfg_pp)


def euler_ancestral_cfg_pp(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0) -> Any:
    """CFG++ Euler: the denoised estimate plus the unconditional noise direction, with the
    ancestral split taken in the model's sigma/alpha space."""
    noise = step_noise(run, x)
    ms, sigmas = run.ms, run.sigmas

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        alpha_s = sigma * half_log_snr(sigma, ms).exp()
        alpha_t = sigma_next * half_log_snr(sigma_next, ms).exp()
        d = to_d(x, sigma, alpha_s * _uncond(run, denoised, True))
        sigma_down, sigma_up = get_ancestral_step(sigma / alpha_s, sigma_next / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigma, sigma_next) * s_noise * sigma_up
        return x

    return walk(run, x, step, lands=True)


def euler_cfg_pp(run: Run, x: Any) -> Any:
    return euler_ancestral_cfg_pp(run, x, eta=0.0, s_noise=0.0)


def res_multistep(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0,
                  cfg_pp: bool = False) -> Any:
    """RES second-order multistep (arXiv 2308.02157) over ancestral steps; eta 0 is the
    deterministic res_multistep."""
    noise = step_noise(run, x)
    sigmas = run.sigmas
    old: list[Any] = []  # the last step's estimate and sigma_down

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        along = _uncond(run, denoised, cfg_pp)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0 or not old:
            if cfg_pp:
                x = denoised + to_d(x, sigma, along) * sigma_down
            else:
                x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            old_denoised, old_sigma_down = old
            t, t_next = sigma.log().neg(), sigma_down.log().neg()
            h = t_next - t
            c2 = (sigmas[i - 1].log().neg() - old_sigma_down.log().neg()) / h
            phi1 = (-h).expm1() / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = (phi1 - phi2 / c2).nan_to_num(nan=0.0)
            b2 = (phi2 / c2).nan_to_num(nan=0.0)
            if cfg_pp:
                x = x + (denoised - along)
            x = (-h).exp() * x + h * (b1 * along + b2 * old_denoised)
        if eta > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        old[:] = [along, sigma_down]
        return x

    return walk(run, x, step, lands=True)


def _ddpm_step(x: Any, sigma: Any, sigma_prev: Any, eps: Any, noise: Any) -> Any:
    """One DDPM posterior step, in the variance-preserving scaling."""
    alpha_cumprod = 1 / (sigma * sigma + 1)
    alpha_cumprod_prev = 1 / (sigma_prev * sigma_prev + 1)
    alpha = alpha_cumprod / alpha_cumprod_prev
    mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
    if sigma_prev > 0:
        mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() \
            * noise(sigma, sigma_prev)
    return mu


def ddpm(run: Run, x: Any) -> Any:
    noise = step_noise(run, x)
    sigmas = run.sigmas

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x = _ddpm_step(x / (1.0 + sigma ** 2.0).sqrt(), sigma, sigma_next,
                       (x - denoised) / sigma, noise)
        return x * (1.0 + sigma_next ** 2.0).sqrt() if sigma_next != 0 else x

    # the last step too: its float32 posterior mean is what ComfyUI gives, not the estimate
    return walk(run, x, step)


def lcm(run: Run, x: Any, s_noise: float = 1.0) -> Any:
    """Latent consistency: jump to the estimate, renoise it to the next level."""
    noise = step_noise(run, x)
    sigmas = run.sigmas

    def step(i: int, x: Any, denoised: Any) -> Any:
        fresh = noise(sigmas[i], sigmas[i + 1])
        return run.ms.noise_scaling(sigmas[i + 1], fresh * s_noise if s_noise != 1.0
                                    else fresh, denoised)

    return walk(run, x, step, lands=True)


SAMPLERS = {
    "euler_ancestral": euler_ancestral,
    "euler_cfg_pp": euler_cfg_pp,
    "euler_ancestral_cfg_pp": euler_ancestral_cfg_pp,
    "dpm_2_ancestral": dpm_2_ancestral,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": functools.partial(dpmpp_2s_ancestral, cfg_pp=True),
    "ddpm": ddpm,
    "lcm": lcm,
    "res_multistep": functools.partial(res_multistep, eta=0.0),
    "res_multistep_cfg_pp": functools.partial(res_multistep, eta=0.0, cfg_pp=True),
    "res_multistep_ancestral": res_multistep,
    "res_multistep_ancestral_cfg_pp": functools.partial(res_multistep, cfg_pp=True),
}
