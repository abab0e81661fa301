"""DEIS's coefficients (the 'tab' variant, as ComfyUI computes them): the sigmas are mapped
to the time of a VP SDE fitted to EDM's range (0.002 .. 80), and each step's weights are
integrals of the exponential integrator's kernel against Lagrange polynomials through
the earlier times, summed over 10000 points in float32."""

from __future__ import annotations

from typing import Any

_EPS_S, _SIGMA_MIN, _SIGMA_MAX = 1e-3, 0.002, 80.0


def _vp_time(sigmas: Any) -> tuple[Any, Any, Any]:
    """(t for each sigma, beta_0, beta_1) of the fitted VP schedule."""
    import torch

    log_min = torch.log(torch.tensor(_SIGMA_MIN) ** 2 + 1)
    log_max = torch.log(torch.tensor(_SIGMA_MAX) ** 2 + 1)
    beta_d = 2 * (log_min / _EPS_S - log_max) / (_EPS_S - 1)
    beta_min = log_max - 0.5 * beta_d
    sigmas = sigmas.detach().cpu()
    t = ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _kernel(beta_0: Any, beta_1: Any, taus: Any) -> Any:
    """-1/2 dlog(alpha)/dtau / sqrt(alpha (1 - alpha)), the slope taken by autograd."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        taus = taus.clone().requires_grad_(True)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1.clone() - beta_0.clone())
                          - taus * beta_0.clone())
        alpha.log().sum().backward()
        slope = taus.grad
    return (-0.5 * slope / torch.sqrt(alpha * (1 - alpha))).detach()


def deis_coefficients(sigmas: Any, max_order: int, n: int = 10000) -> list[list[Any]]:
    """Per step, the weights of the newest slope and the earlier ones (empty for the
    first step, which is Euler's)."""
    import torch

    t, beta_0, beta_1 = _vp_time(sigmas)
    out: list[list[Any]] = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            out.append([])
            continue
        t_cur, t_next = t[i], t[i + 1]
        taus = torch.linspace(t_cur, t_next, n)
        dtau = (t_next - t_cur) / n
        prev = t[[i - k for k in range(order)]]
        kernel = _kernel(beta_0, beta_1, taus)
        row = []
        for j in range(order):
            poly: Any = 1
            for k in range(order):
                if k != j:
                    poly = poly * ((taus - prev[k]) / (prev[j] - prev[k]))
            row.append(torch.sum(kernel * poly) * dtau)
        out.append(row)
    return out
