"""Samplers that call the model more than once a step (Heun, Heun++, DPM-2, the
exponential Heun in x0 and half-log-SNR time), and DDIM, which ComfyUI runs as Euler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Run
from .basic import (
    euler,
    half_log_snr,
    half_log_snr_to_sigma,
    model_step,
    offset_first_sigma,
    to_d,
    walk,
)


def _walk(run: Run, x: Any, step: Callable[[int, Any, Any], Any]) -> Any:
    """The loop with `step(i, x, d)` given the first slope of the step."""
    sigmas = run.sigmas
    return walk(run, x, lambda i, x, denoised: step(i, x, to_d(x, sigmas[i], denoised)))


def heun(run: Run, x: Any) -> Any:
    sigmas = run.sigmas

    def step(i: int, x: Any, d: Any) -> Any:
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            return x + d * dt
        d_2 = model_step(run, x + d * dt, sigmas[i + 1])
        return x + (d + d_2) / 2 * dt

    return _walk(run, x, step)


def heunpp2(run: Run, x: Any) -> Any:
    """Heun++: Heun's two slopes, or three with a look-ahead step, weighted by how far
    down the schedule the step is."""
    sigmas = run.sigmas
    s_end = sigmas[-1]

    def step(i: int, x: Any, d: Any) -> Any:
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            return x + d * dt
        x_2 = x + d * dt
        d_2 = model_step(run, x_2, sigmas[i + 1])
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            return x + (d * (1 - w2) + d_2 * w2) * dt
        d_3 = model_step(run, x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1]), sigmas[i + 2])
        w = 3 * sigmas[0]
        w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
        return x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt

    return _walk(run, x, step)


def dpm_2(run: Run, x: Any) -> Any:
    """DPM-Solver-2: the slope at the log-midpoint sigma carries the whole step."""
    sigmas = run.sigmas

    def step(i: int, x: Any, d: Any) -> Any:
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            return x + d * (s_next - s)
        s_mid = s.log().lerp(s_next.log(), 0.5).exp()
        return x + model_step(run, x + d * (s_mid - s), s_mid) * (s_next - s)

    return _walk(run, x, step)


def exp_heun_2_x0(run: Run, x: Any) -> Any:
    """Exponential Heun (second order) on the denoised estimate in half-log-SNR time."""
    ms = run.ms
    sigmas = offset_first_sigma(run.sigmas, ms)

    def step(i: int, x: Any, denoised: Any) -> Any:
        s, s_next = sigmas[i], sigmas[i + 1]
        if s_next == 0:
            return denoised
        lam_s, lam_t = half_log_snr(s, ms), half_log_snr(s_next, ms)
        h = lam_t - lam_s
        s_1 = half_log_snr_to_sigma(lam_t, ms)
        x_2 = s_1 / s * x - s_1 * lam_t.exp() * (-h).expm1() * denoised
        denoised_2 = run.model(x_2, s_1 * run.s_in(x))
        b2 = ((-h).expm1() + h) / -h
        b1 = (-h).expm1() - b2
        return s_next / s * x - s_next * lam_t.exp() * (b1 * denoised + b2 * denoised_2)

    return walk(run, x, step, sigmas)


SAMPLERS = {"heun": heun, "heunpp2": heunpp2, "dpm_2": dpm_2,
            "exp_heun_2_x0": exp_heun_2_x0, "ddim": euler}
