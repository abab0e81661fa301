"""SDE samplers in half-log-SNR time (lambda = log(alpha / sigma), see basic.half_log_snr):
DPM-Solver++ SDE, (2M) SDE, (3M) SDE on a Brownian tree; ER-SDE, SEEDS-2/3 and the
stochastic exponential Heun on the default step noise. Flow schedules that start at sigma
1 start just below it (lambda is infinite there), as ComfyUI does. The `_gpu` names differ
in ComfyUI only by where the Brownian tree lives; here it is always on the CPU."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from .base import Run
from .basic import get_ancestral_step, half_log_snr, half_log_snr_to_sigma, offset_first_sigma, walk
from .noise import NoiseSampler, step_noise, tree_noise


def _substep(x: Any, estimate: Any, lam_s: Any, lam_to: Any, sigma: Any, sigma_to: Any,
             eta: float, noise: NoiseSampler | None) -> Any:
    """DPM-Solver++ first-order step from lambda_s to lambda_to with an ancestral split
    (in sigma/alpha space), renoised by `noise` unless it is None."""
    alpha_s = sigma * lam_s.exp()
    alpha_to = sigma_to * lam_to.exp()
    sigma_down, sigma_up = get_ancestral_step(lam_s.neg().exp(), lam_to.neg().exp(), eta)
    h = sigma_down.log().neg() - lam_s
    x = (alpha_to / alpha_s) * (-h).exp() * x - alpha_to * (-h).expm1() * estimate
    if noise is not None:
        x = x + alpha_to * noise(sigma, sigma_to) * sigma_up
    return x


def dpmpp_sde(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0,
              r: float = 0.5) -> Any:
    """DPM-Solver++ (stochastic): a substep at fraction r of the step in lambda, then the
    full step from the blend of both estimates."""
    if len(run.sigmas) <= 1:
        return x
    tree = tree_noise(run, x)
    noise = (lambda a, b: tree(a, b) * s_noise) if eta > 0 and s_noise > 0 else None
    ms, s_in = run.ms, run.s_in(x)
    sigmas = offset_first_sigma(run.sigmas, ms)
    fac = 1 / (2 * r)

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lam_s, lam_t = half_log_snr(sigma, ms), half_log_snr(sigma_next, ms)
        lam_1 = lam_s + r * (lam_t - lam_s)
        sigma_1 = half_log_snr_to_sigma(lam_1, ms)
        x_2 = _substep(x, denoised, lam_s, lam_1, sigma, sigma_1, eta, noise)
        blend = (1 - fac) * denoised + fac * run.model(x_2, sigma_1 * s_in)
        return _substep(x, blend, lam_s, lam_t, sigma, sigma_next, eta, noise)

    return walk(run, x, step, sigmas, lands=True)


def _multistep_sde(run: Run, x: Any, order: int = 2, midpoint: bool = False,
                   eta: float = 1.0, s_noise: float = 1.0) -> Any:
    """DPM-Solver++(2M) SDE (midpoint or Heun correction) and (3M) SDE: exponential steps
    corrected by the last one or two estimates, noise from the Brownian tree."""
    if len(run.sigmas) <= 1:
        return x
    noise = tree_noise(run, x)
    ms = run.ms
    sigmas = offset_first_sigma(run.sigmas, ms)
    history: list[tuple[Any, Any]] = []  # (denoised, h) of the steps before, newest first

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lam_s, lam_t = half_log_snr(sigma, ms), half_log_snr(sigma_next, ms)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        alpha_t = sigma_next * lam_t.exp()
        x = sigma_next / sigma * (-h * eta).exp() * x \
            + alpha_t * (-h_eta).expm1().neg() * denoised
        if history:
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            denoised_1, h_1 = history[0]
            d1_0 = (denoised - denoised_1) / (h_1 / h)
            if order == 3 and len(history) > 1:
                denoised_2, h_2 = history[1]
                r0, r1 = h_1 / h, h_2 / h
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * (phi_2 / h_eta - 0.5)) * d2
            elif midpoint:
                x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * d1_0
            else:
                x = x + (alpha_t * phi_2) * d1_0
        if eta > 0 and s_noise > 0:
            x = x + noise(sigma, sigma_next) * sigma_next \
                * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        history[:] = [(denoised, h), *history][:2]
        return x

    return walk(run, x, step, sigmas, lands=True)


def _er_noise_scaler(x: Any) -> Any:
    return x * ((x ** 0.3).exp() + 10.0)


def er_sde(run: Run, x: Any, s_noise: float = 1.0, max_stage: int = 3,
           noise_scaler: Callable[[Any], Any] = _er_noise_scaler) -> Any:
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3, arXiv 2309.06169), stepping
    in er_lambda = sigma / alpha with the integrals taken over 200 points."""
    import torch

    noise = step_noise(run, x)
    ms = run.ms
    sigmas = offset_first_sigma(run.sigmas, ms)
    er_lambdas = half_log_snr(sigmas, ms).neg().exp()
    points = torch.arange(0, 200.0, dtype=torch.float32, device=x.device)
    old: dict[str, Any] = {}  # the last step's estimate and its divided difference

    def step(i: int, x: Any, denoised: Any) -> Any:
        stage = min(max_stage, i + 1)
        er_s, er_t = er_lambdas[i], er_lambdas[i + 1]
        alpha_s, alpha_t = sigmas[i] / er_s, sigmas[i + 1] / er_t
        r = noise_scaler(er_t) / noise_scaler(er_s)
        x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
        if stage >= 2:
            dt = er_t - er_s
            width = -dt / 200.0
            pos = er_t + points * width
            scaled = noise_scaler(pos)
            denoised_d = (denoised - old["denoised"]) / (er_s - er_lambdas[i - 1])
            s = torch.sum(1 / scaled) * width
            x = x + alpha_t * (dt + s * noise_scaler(er_t)) * denoised_d
            if stage >= 3:
                s_u = torch.sum((pos - er_s) / scaled) * width
                denoised_u = (denoised_d - old["d"]) / ((er_s - er_lambdas[i - 2]) / 2)
                x = x + alpha_t * ((dt ** 2) / 2 + s_u * noise_scaler(er_t)) * denoised_u
            old["d"] = denoised_d
        if s_noise > 0:
            spread = (er_t ** 2 - er_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old["denoised"] = denoised
        return x

    return walk(run, x, step, sigmas, lands=True)


def _phi_1(h: Any) -> Any:
    return h.expm1()


def _phi_2(h: Any) -> Any:
    return (h.expm1() - h) / h


# a SEEDS stage: where it ends (fraction of the step in lambda) and, from h * (eta + 1),
# the weights of the estimates so far (None: unused)
Stage = tuple[float, Callable[[Any], Sequence[Any]]]


def _seeds(run: Run, x: Any, stages: Sequence[Stage], eta: float = 1.0,
           s_noise: float = 1.0) -> Any:
    """SEEDS (arXiv 2305.14267, data prediction): stages at fractions of each step, each an
    exponential step from the step's start over the estimates so far, with noise that stays
    one Brownian path across the stages; the last stage ends the step."""
    noise = step_noise(run, x)
    inject = eta > 0 and s_noise > 0
    ms, s_in = run.ms, run.s_in(x)
    sigmas = offset_first_sigma(run.sigmas, ms)

    def step(i: int, x: Any, denoised: Any) -> Any:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lam_s, lam_t = half_log_snr(sigma, ms), half_log_snr(sigma_next, ms)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        estimates, path, r_prev, sigma_prev = [denoised], 0.0, 0.0, sigma
        for k, (r, weights) in enumerate(stages):
            last = k == len(stages) - 1
            lam = lam_t if last else lam_s.lerp(lam_t, r)
            sigma_r = sigma_next if last else half_log_snr_to_sigma(lam, ms)
            mix = sum(w * e for w, e in zip(weights(h_eta), estimates) if w is not None)
            x_r = sigma_r / sigma * (-r * h * eta).exp() * x - sigma_r * lam.exp() * mix
            if inject:
                segment = (r_prev - r) * h * eta
                path = path * segment.exp() \
                    + segment.mul(2).expm1().neg().sqrt() * noise(sigma_prev, sigma_r)
                x_r = x_r + path * sigma_r * s_noise
            r_prev, sigma_prev = r, sigma_r
            if not last:
                estimates.append(run.model(x_r, sigma_r * s_in))
        return x_r

    return walk(run, x, step, sigmas, lands=True)


def seeds_2(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
            solver_type: str = "phi_1") -> Any:
    """SEEDS-2; r = 1 with phi_2 is the exponential Heun method (exp_heun_2_x0)."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"seeds_2: solver_type must be 'phi_1' or 'phi_2', not {solver_type!r}")
    fac = 1 / (2 * r)

    def final(he: Any) -> tuple[Any, Any]:
        if solver_type == "phi_1":
            return _phi_1(-he) * (1 - fac), _phi_1(-he) * fac
        b2 = _phi_2(-he) / r
        return _phi_1(-he) - b2, b2

    return _seeds(run, x, [(r, lambda he: (_phi_1(-r * he),)), (1.0, final)], eta, s_noise)


def seeds_3(run: Run, x: Any, eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1 / 3,
            r_2: float = 2 / 3) -> Any:
    def second(he: Any) -> tuple[Any, Any]:
        a_2 = r_2 / r_1 * _phi_2(-r_2 * he)
        return _phi_1(-r_2 * he) - a_2, a_2

    def final(he: Any) -> tuple[Any, Any, Any]:
        b_3 = _phi_2(-he) / r_2
        return _phi_1(-he) - b_3, None, b_3

    return _seeds(run, x, [(r_1, lambda he: (_phi_1(-r_1 * he),)), (r_2, second),
                           (1.0, final)], eta, s_noise)


_2m_sde = functools.partial(_multistep_sde, order=2, midpoint=True)
_2m_sde_heun = functools.partial(_multistep_sde, order=2)
_3m_sde = functools.partial(_multistep_sde, order=3)
_exp_heun_sde = functools.partial(seeds_2, r=1.0, solver_type="phi_2")

SAMPLERS = {
    "dpmpp_sde": dpmpp_sde, "dpmpp_sde_gpu": dpmpp_sde,
    "dpmpp_2m_sde": _2m_sde, "dpmpp_2m_sde_gpu": _2m_sde,
    "dpmpp_2m_sde_heun": _2m_sde_heun, "dpmpp_2m_sde_heun_gpu": _2m_sde_heun,
    "dpmpp_3m_sde": _3m_sde, "dpmpp_3m_sde_gpu": _3m_sde,
    "er_sde": er_sde, "seeds_2": seeds_2, "seeds_3": seeds_3,
    "exp_heun_2_x0_sde": _exp_heun_sde,
}
