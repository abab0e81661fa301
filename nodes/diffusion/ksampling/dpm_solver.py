"""DPM-Solver (arXiv 2206.00927) on the noise estimate in t = -log sigma: fixed steps of
orders 3, 2, 1 (dpm_fast) and the adaptive 2/3 pair with a PID step-size controller
(dpm_adaptive). ComfyUI runs both from the first sigma down to the last non-zero one."""

from __future__ import annotations

import math
from typing import Any

from .base import Run


class _Solver:
    def __init__(self, run: Run, x: Any):
        self.run = run
        self.s_in = run.s_in(x)

    @staticmethod
    def sigma(t: Any) -> Any:
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x: Any, t: Any) -> Any:
        if key not in cache:
            sigma = self.sigma(t)
            cache[key] = (x - self.run.model(x, sigma * self.s_in)) / sigma
        return cache[key]

    def step(self, order: int, x: Any, t: Any, t_next: Any, cache: dict,
             r1: float | None = None) -> Any:
        """One DPM-Solver-1/2/3 step; `cache` holds the model calls already made at the
        step's stages (the adaptive pair shares them)."""
        sig = self.sigma
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        base = x - sig(t_next) * h.expm1() * eps
        if order == 1:
            return base
        r1 = (1 / 2 if order == 2 else 1 / 3) if r1 is None else r1
        s1 = t + r1 * h
        u1 = x - sig(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        if order == 2:
            return base - sig(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        r2 = 2 / 3
        s2 = t + r2 * h
        u2 = x - sig(s2) * (r2 * h).expm1() * eps - sig(s2) * (r2 / r1) * (
            (r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return base - sig(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def denoised(self, cache: dict, x: Any, t: Any) -> Any:
        return x - self.sigma(t) * self.eps(cache, "eps", x, t)


def _range(run: Run) -> tuple[Any, Any] | None:
    """(t_start, t_end) from the first sigma to the last non-zero one."""
    sigmas = run.sigmas
    if len(sigmas) <= 1:
        return None
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError("dpm_fast / dpm_adaptive need sigmas above 0")
    return sigmas[0].log().neg(), sigma_min.log().neg()


def dpm_fast(run: Run, x: Any) -> Any:
    import torch

    span = _range(run)
    if span is None:
        return x
    t_start, t_end = span
    nfe = len(run.sigmas) - 1
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _Solver(run, x)
    for i, order in enumerate(orders):
        cache: dict = {}
        run.step_done(i, x, solver.denoised(cache, x, ts[i]))
        x = solver.step(order, x, ts[i], ts[i + 1], cache)
    return x


class _PID:
    """The step-size controller (integral term only, as k-diffusion's defaults)."""

    def __init__(self, h: float, order: float, accept_safety: float = 0.81,
                 eps: float = 1e-8):
        self.h = h
        self.b1 = 1 / order
        self.accept_safety = accept_safety
        self.eps = eps

    def propose(self, error: Any) -> bool:
        factor = (1 / (float(error) + self.eps)) ** self.b1
        factor = 1 + math.atan(factor - 1)
        self.h *= factor
        return factor >= self.accept_safety


def dpm_adaptive(run: Run, x: Any, order: int = 3, rtol: float = 0.05,
                 atol: float = 0.0078, h_init: float = 0.05) -> Any:
    import torch

    span = _range(run)
    if span is None:
        return x
    s, t_end = span
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    x_prev = x
    pid = _PID(h_init, order)
    solver = _Solver(run, x)
    steps = 0
    while s < t_end - 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + pid.h)
        denoised = solver.denoised(cache, x, s)
        x_low = solver.step(order - 1, x, s, t, cache, r1=1 / 3 if order == 3 else None)
        x_high = solver.step(order, x, s, t, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if not torch.isfinite(error):
            # the step-size controller would shrink the step forever
            raise ValueError(f"dpm_adaptive: the model's estimate at sigma "
                             f"{float(solver.sigma(s)):.4g} is not finite")
        if pid.propose(error):
            x_prev, x, s = x_low, x_high, t
        run.step_done(steps, x, denoised)
        steps += 1
    return x


SAMPLERS = {"dpm_fast": dpm_fast, "dpm_adaptive": dpm_adaptive}
