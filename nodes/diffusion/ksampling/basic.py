"""Euler: the first-order step every other sampler refines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Run


def to_d(x: Any, sigma: Any, denoised: Any) -> Any:
    """The ODE's derivative dx/dsigma at x."""
    return (x - denoised) / sigma.reshape(-1, *[1] * (x.ndim - 1)) \
        if getattr(sigma, "ndim", 0) else (x - denoised) / sigma


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """The level an ancestral step goes down to and the noise it adds back (k-diffusion's),
    so that sigma_down^2 + sigma_up^2 = sigma_to^2."""
    if not eta:
        return sigma_to, 0.0
    # builtin min on purpose: a NaN bound (sigma_from infinite) keeps sigma_to, as ComfyUI
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2)
                                    / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def walk(run: Run, x: Any, step: Callable[[int, Any, Any], Any], sigmas: Any = None,
         lands: bool = False) -> Any:
    """The loop most samplers share: the estimate at each sigma (run.sigmas unless given),
    reported to the callback, then `step(i, x, denoised)` on to the next sigma; with
    `lands`, a step to sigma 0 lands on the estimate instead."""
    sigmas = run.sigmas if sigmas is None else sigmas
    s_in = run.s_in(x)
    for i in range(len(sigmas) - 1):
        denoised = run.model(x, sigmas[i] * s_in)
        run.step_done(i, x, denoised)
        x = denoised if lands and sigmas[i + 1] == 0 else step(i, x, denoised)
    return x


def euler(run: Run, x: Any) -> Any:
    sigmas = run.sigmas
    return walk(run, x, lambda i, x, denoised: x + to_d(x, sigmas[i], denoised)
                * (sigmas[i + 1] - sigmas[i]))


SAMPLERS = {"euler": euler}


def model_step(run: Run, x: Any, sigma: Any) -> Any:
    """The derivative at (x, sigma) from a fresh model call (a sampler's inner stage)."""
    return to_d(x, sigma, run.model(x, sigma * run.s_in(x)))


def guide(run: Run, denoised: Any) -> Any:
    """What CFG++ samplers step along: the last call's unconditional estimate, or the
    denoised estimate itself when the model does not guide."""
    return denoised if run.uncond is None else run.uncond


# ---- half-log-SNR time (log alpha / sigma) as ComfyUI measures it for each family ----
def half_log_snr(sigma: Any, ms: Any) -> Any:
    return sigma.logit().neg() if ms.flow else sigma.log().neg()


def half_log_snr_to_sigma(lam: Any, ms: Any) -> Any:
    return lam.neg().sigmoid() if ms.flow else lam.neg().exp()


def offset_first_sigma(sigmas: Any, ms: Any, percent: float = 1e-4) -> Any:
    """A flow schedule starting at sigma 1 (infinite log-SNR) starts a hair below it."""
    if len(sigmas) > 1 and ms.flow and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = ms.percent_to_sigma(percent)
    return sigmas
