"""SA-Solver, the stochastic Adams predictor-corrector (NeurIPS 2023, arXiv 2309.05019) in
data prediction and half-log-SNR time, as ComfyUI runs it: stochastic (tau 1) between 20%
and 80% of the model's noise range, deterministic outside; PECE re-evaluates the corrected
state."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from .base import Run
from .basic import half_log_snr, offset_first_sigma
from .noise import step_noise


def _exponential_coeffs(s: Any, t: Any, order: int, tau: float) -> Any:
    """(1 + tau^2) * integral_s^t exp((1 + tau^2) l) l^p dl / exp((1 + tau^2) t) for
    p < order, by repeated integration by parts (a lower-triangular recursion)."""
    import torch

    tau_mul = 1 + tau ** 2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    ends = t ** p - s ** p * (-tau_mul * (t - s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_coeff = log_coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coeff.exp() * signs).tril() @ ends


def _b_coeffs(sigma_next: Any, lambdas: Any, lam_s: Any, lam_t: Any, tau: float,
              simple_order_2: bool, corrector: bool) -> Any:
    """The weights of the estimates at `lambdas` for a step from lam_s to lam_t: integrals
    of their Lagrange basis against the SDE's exponential kernel."""
    import torch

    n = lambdas.shape[0]
    alpha_t = sigma_next * lam_t.exp()
    if simple_order_2 and n == 2:
        # the paper's simplified second order (appendix D)
        tau_mul, h = 1 + tau ** 2, lam_t - lam_s
        full = alpha_t * (-h * tau_mul).expm1().neg()
        if corrector:
            b_1 = alpha_t * (0.5 * tau_mul * h)
            return torch.stack([full - b_1, b_1])
        b_2 = alpha_t * (0.5 * tau_mul * h ** 2) / (lambdas[-2] - lam_s)
        return torch.stack([b_2, full - b_2])
    integrals = _exponential_coeffs(lam_s, lam_t, n, tau)
    vandermonde_t = torch.vander(lambdas, n, increasing=True).T
    return alpha_t * torch.linalg.solve(vandermonde_t, integrals)


def tau_interval(start_sigma: float, end_sigma: float,
                 eta: float = 1.0) -> Callable[[Any], float]:
    """Stochastic strength eta for sigmas in [end_sigma, start_sigma], 0 (ODE) elsewhere."""

    def tau(sigma: Any) -> float:
        if eta <= 0:
            return 0.0
        return eta if start_sigma >= float(sigma) >= end_sigma else 0.0

    return tau


def _combine(estimates: list[Any], weights: Any) -> Any:
    import torch

    stacked = torch.stack(estimates, dim=1)
    return torch.tensordot(stacked, weights.to(stacked.device), dims=([1], [0]))


def sa_solver(run: Run, x: Any, tau_func: Callable[[Any], float] | None = None,
              s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
              use_pece: bool = False, simple_order_2: bool = False) -> Any:
    if len(run.sigmas) <= 1:
        return x
    noise_sampler = step_noise(run, x)
    ms, s_in = run.ms, run.s_in(x)
    sigmas = offset_first_sigma(run.sigmas, ms)
    lambdas = half_log_snr(sigmas, ms)
    if tau_func is None:
        tau_func = tau_interval(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
    x_pred = x
    h: Any = 0.0
    tau = 0.0
    noise: Any = 0.0
    estimates: list[Any] = []
    # near a schedule's end at 0 the orders come down, for stability
    lower_to_end = float(sigmas[-1]) == 0
    n = len(sigmas)
    for i in range(n - 1):
        denoised = run.model(x_pred, sigmas[i] * s_in)
        run.step_done(i, x_pred, denoised)
        estimates = [*estimates, denoised][-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(estimates))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) \
            else min(corrector_order, len(estimates))
        if lower_to_end:
            p_order = min(p_order, n - 2 - i)
            c_order = min(c_order, n - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            b = _b_coeffs(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1],
                          lambdas[i], tau, simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x \
                + _combine(estimates[-c_order:], b)
            if tau > 0 and s_noise > 0:
                x = x + noise  # the predictor's noise: the corrector lands on its path
            if use_pece:
                denoised = run.model(x, sigmas[i] * s_in)
                estimates[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        b = _b_coeffs(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i],
                      lambdas[i + 1], tau, simple_order_2, corrector=False)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x \
            + _combine(estimates[-p_order:], b)
        if tau > 0 and s_noise > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] \
                * (-2 * tau ** 2 * h).expm1().neg().sqrt() * s_noise
            x_pred = x_pred + noise
    return x_pred


SAMPLERS = {
    "sa_solver": sa_solver,
    "sa_solver_pece": functools.partial(sa_solver, use_pece=True),
}
