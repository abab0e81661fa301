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


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """The level an ancestral step goes down to and the noise it adds back (k-diffusion's),
    so that sigma_down^2 + sigma_up^2 = sigma_to^2."""
    if not eta:
        return sigma_to, 0.0
    # builtin min on purpose: a NaN bound (sigma_from infinite) keeps sigma_to, as ComfyUI
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2)
                                    / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def half_log_snr(sigma: Any, ms: Any) -> Any:
    """lambda = log(alpha / sigma): -log(sigma) for discrete models, the negative logit of
    sigma for rectified flow (alpha = 1 - sigma)."""
    return sigma.logit().neg() if ms.flow else sigma.log().neg()


def sigma_of_half_log_snr(lam: Any, ms: Any) -> Any:
    return lam.neg().sigmoid() if ms.flow else lam.neg().exp()


def offset_first_sigma(sigmas: Any, ms: Any, percent: float = 1e-4) -> Any:
    """A flow schedule starting at sigma 1 (lambda -inf) starts a hair below it instead."""
    from .modelsampling import flux_time_shift, time_snr_shift

    if len(sigmas) > 1 and ms.flow and sigmas[0] >= 1:
        # ComfyUI's percent_to_sigma in double precision: lambda is steep near sigma 1, so
        # the float32 timestep path is off by 1e-4 in the final latent
        t = 1.0 - percent
        sigmas = sigmas.clone()
        sigmas[0] = flux_time_shift(ms.shift, 1.0, t) if ms.flux else time_snr_shift(ms.shift, t)
    return sigmas


def walk(run: Run, x: Any, step: Any, sigmas: Any = None, lands: bool = True) -> Any:
    """The loop most samplers share: the estimate at each sigma (then the callback), and
    `step(i, x, denoised)` on to the next sigma; a step to sigma 0 lands on the estimate
    (unless not `lands`: then `step` takes that one too)."""
    sigmas = run.sigmas if sigmas is None else sigmas
    s_in = run.s_in(x)
    for i in range(len(sigmas) - 1):
        denoised = run.model(x, sigmas[i] * s_in)
        run.step_done(i, x, denoised)
        x = denoised if lands and sigmas[i + 1] == 0 else step(i, x, denoised)
    return x
