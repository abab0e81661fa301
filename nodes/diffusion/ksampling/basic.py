"""Euler: the first-order step every other sampler refines."""

from __future__ import annotations

from typing import Any

from .base import Run


def to_d(x: Any, sigma: Any, denoised: Any) -> Any:
    """The ODE's derivative dx/dsigma at x."""
    return (x - denoised) / sigma.reshape(-1, *[1] * (x.ndim - 1)) \
        if getattr(sigma, "ndim", 0) else (x - denoised) / sigma


def euler(run: Run, x: Any) -> Any:
    sigmas = run.sigmas
    s_in = run.s_in(x)
    for i in range(len(sigmas) - 1):
        denoised = run.model(x, sigmas[i] * s_in)
        run.step_done(i, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


SAMPLERS = {"euler": euler}
