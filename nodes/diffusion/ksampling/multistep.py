"""Multistep samplers: one model call a step, earlier steps' slopes or estimates reused.
Linear multistep over the ODE's slope (LMS, iPNDM, iPNDM-v, DEIS), DPM-Solver++(2M),
the RES multistep and the gradient-estimation sampler, with the CFG++ variants that step
along the unconditional estimate (`run.uncond`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Run
from .basic import guide, to_d, walk
from .deis import deis_coefficients

# Adams-Bashforth numerators and denominator by order (iPNDM)
_AB = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


def _slope_multistep(run: Run, x: Any, max_order: int,
                     step: Callable[[int, int, Any, Any, list], Any],
                     denoise_last: bool = True) -> Any:
    """The slope d of each step and the last max_order - 1 before it (newest first);
    `step(i, order, x, d, history)` gives the next x. A step to sigma 0 returns the
    denoised estimate (where `denoise_last`)."""
    sigmas = run.sigmas
    history: list[Any] = []

    def slope_step(i: int, x: Any, denoised: Any) -> Any:
        d = to_d(x, sigmas[i], denoised)
        if denoise_last and sigmas[i + 1] == 0:
            x = denoised
        else:
            x = step(i, min(max_order, i + 1), x, d, history)
        history[:] = [d, *history][:max_order - 1]
        return x

    return walk(run, x, slope_step)


def _lagrange_integral(t: Any, i: int, j: int, order: int) -> float:
    """The integral over [t_i, t_i+1] of the Lagrange basis polynomial of t_(i-j) on the
    nodes t_i .. t_(i-order+1) (Gauss-Legendre, exact for these degrees)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(max(order, 1))
    a, b = t[i], t[i + 1]
    tau = (b - a) / 2 * nodes + (a + b) / 2
    prod = np.ones_like(tau)
    for k in range(order):
        if k != j:
            prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
    return float((b - a) / 2 * np.sum(weights * prod))


def lms(run: Run, x: Any) -> Any:
    import numpy as np

    t = run.sigmas.detach().cpu().numpy().astype(np.float64)

    def step(i: int, order: int, x: Any, d: Any, history: list) -> Any:
        coeffs = [_lagrange_integral(t, i, j, order) for j in range(order)]
        return x + sum(c * dj for c, dj in zip(coeffs, [d, *history]))

    return _slope_multistep(run, x, 4, step)


def ipndm(run: Run, x: Any) -> Any:
    sigmas = run.sigmas

    def step(i: int, order: int, x: Any, d: Any, history: list) -> Any:
        nums, den = _AB[order]
        total = nums[0] * d
        for n, dj in zip(nums[1:], history):
            total = total + n * dj
        return x + (sigmas[i + 1] - sigmas[i]) * total / den

    return _slope_multistep(run, x, 4, step)


def _ipndm_v_coefficients(h: list) -> list:
    """Variable-step Adams-Bashforth weights for the slopes, newest first; h[k] is the
    k-th step size back (h[0] the step being taken)."""
    order = len(h)
    if order == 1:
        return [1]
    h0, h1 = h[0], h[1]
    c1, c2 = (2 + h0 / h1) / 2, -(h0 / h1) / 2
    if order == 2:
        return [c1, c2]
    h2 = h[2]
    t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [c1 + t1, c2 - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = h[3]
    t2 = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0
          / (6 * (h0 + h1 + h2))) * (h0 * (h0 + h1) * (h0 + h1 + h2)) \
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [c1 + t1 + t2, c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
            t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2, -t2 * q * h1 / h2]


def ipndm_v(run: Run, x: Any) -> Any:
    sigmas = run.sigmas

    def step(i: int, order: int, x: Any, d: Any, history: list) -> Any:
        h = [sigmas[i + 1 - k] - sigmas[i - k] for k in range(order)]
        coeffs = _ipndm_v_coefficients(h)
        total = coeffs[0] * d
        for c, dj in zip(coeffs[1:], history):
            total = total + c * dj
        return x + h[0] * total

    return _slope_multistep(run, x, 4, step)


def deis(run: Run, x: Any) -> Any:
    sigmas = run.sigmas
    coeffs = deis_coefficients(sigmas, 3)

    def step(i: int, order: int, x: Any, d: Any, history: list) -> Any:
        if order == 1 or sigmas[i + 1] <= 0:
            return x + (sigmas[i + 1] - sigmas[i]) * d
        for c, dj in zip(coeffs[i], [d, *history]):
            x = x + c * dj
        return x

    return _slope_multistep(run, x, 3, step, denoise_last=False)


def _estimate_multistep(run: Run, x: Any, step: Callable[..., Any]) -> Any:
    """One model call a step; `step(i, x, denoised, uncond, memory)` gives the next x
    and may keep what later steps need in the dict `memory`."""
    memory: dict[str, Any] = {}
    return walk(run, x, lambda i, x, denoised: step(i, x, denoised, guide(run, denoised),
                                                    memory))


def _t(sigma: Any) -> Any:
    return sigma.log().neg()


def _dpmpp_2m(cfg_pp: bool) -> Callable[[Run, Any], Any]:
    def sampler(run: Run, x: Any) -> Any:
        sigmas = run.sigmas

        def step(i: int, x: Any, denoised: Any, uncond: Any, memory: dict) -> Any:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            old = memory.get("old")
            memory["old"] = uncond if cfg_pp else denoised
            first = old is None or sigmas[i + 1] == 0
            half_r = None if first else 1 / (2 * ((t - _t(sigmas[i - 1])) / h))
            if cfg_pp:
                mix = -(-h).exp() * uncond
                if not first:
                    mix = mix - (-h).expm1() * half_r * (denoised - old)
                return denoised + mix + (-h).exp() * x
            if not first:
                denoised = (1 + half_r) * denoised - half_r * old
            return (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised

        return _estimate_multistep(run, x, step)

    return sampler


def _gradient_estimation(cfg_pp: bool, gamma: float = 2.0) -> Callable[[Run, Any], Any]:
    """Euler plus (gamma - 1) times the change of the slope since the last step."""

    def sampler(run: Run, x: Any) -> Any:
        sigmas = run.sigmas

        def step(i: int, x: Any, denoised: Any, uncond: Any, memory: dict) -> Any:
            s, s_next = sigmas[i], sigmas[i + 1]
            d = to_d(x, s, uncond if cfg_pp else denoised)
            old_d = memory.get("d")
            memory["d"] = d
            if s_next == 0:
                return denoised
            dt = s_next - s
            x = denoised + d * s_next if cfg_pp else x + d * dt
            return x if old_d is None else x + (gamma - 1) * (d - old_d) * dt

        return _estimate_multistep(run, x, step)

    return sampler


SAMPLERS = {
    "lms": lms, "dpmpp_2m": _dpmpp_2m(False),
    "dpmpp_2m_cfg_pp": _dpmpp_2m(True), "ipndm": ipndm, "ipndm_v": ipndm_v, "deis": deis,
    "gradient_estimation": _gradient_estimation(False),
    "gradient_estimation_cfg_pp": _gradient_estimation(True)}
