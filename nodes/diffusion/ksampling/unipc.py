"""UniPC (Zhao et al., arXiv 2302.04867; multistep predictor-corrector, B(h) = h for bh1
or e^h - 1 for bh2), run as ComfyUI runs it: the sigmas read as a variance-preserving
schedule (alpha = 1 / sqrt(1 + sigma^2)) whatever the model family, a final sigma of 0
replaced by 0.001, order 3 with lower orders at the start and the end, and the data
estimate recovered from the noise estimate with the schedule's own float32 formulas."""

from __future__ import annotations

from typing import Any

from .base import Run

_LAST_SIGMA = 0.001


def _log_alpha(sigma: Any) -> Any:
    import torch

    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _std(sigma: Any) -> Any:
    return (1.0 - (2.0 * _log_alpha(sigma)).exp()).sqrt()


def _lambda(sigma: Any) -> Any:
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * (1.0 - (2.0 * log_alpha).exp()).log()


def _dims(v: Any, x: Any) -> Any:
    return v.reshape(-1, *[1] * (x.ndim - 1))


class _UniPC:
    def __init__(self, run: Run, bh2: bool):
        self.run = run
        self.bh2 = bh2

    def data(self, x: Any, t: Any) -> Any:
        """The data estimate at VP state x, via the noise estimate as ComfyUI's wrapper
        computes it."""
        sigma = _dims(t, x)
        scaled = x * ((sigma ** 2 + 1.0) ** 0.5)
        eps = (scaled - self.run.model(scaled, t)) / sigma
        return (x - _dims(_std(t), x) * eps) / _dims(_log_alpha(t).exp(), x)

    def update(self, x: Any, models: list, ts: list, t: Any, order: int,
               correct: bool) -> tuple[Any, Any]:
        """One step to t from the last `order` estimates; returns (x, the estimate at
        the predicted x, made for the corrector)."""
        import torch

        lam_prev, model_prev = _lambda(ts[-1]), models[-1]
        h = _lambda(t) - lam_prev
        rks, diffs = [], []
        for i in range(1, order):
            rk = ((_lambda(ts[-(i + 1)]) - lam_prev) / h)[0]
            rks.append(rk)
            diffs.append((models[-(i + 1)] - model_prev) / rk)
        rks.append(1.0)
        rks_t = torch.tensor(rks, device=x.device)
        hh = -h[0]
        h_phi_k = hh.expm1() / hh - 1
        b_h = hh.expm1() if self.bh2 else hh
        rows, b, factorial = [], [], 1
        for i in range(1, order + 1):
            rows.append(torch.pow(rks_t, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_mat, b_t = torch.stack(rows), torch.tensor(b, device=x.device)
        d1s = torch.stack(diffs, dim=1) if diffs else None

        def weigh(rhos: Any) -> Any:
            return torch.tensordot(d1s, rhos, dims=([1], [0])) if d1s is not None else 0

        alpha_t = _log_alpha(t).exp()
        base = _dims(_std(t) / _std(ts[-1]), x) * x - _dims(alpha_t * hh.expm1(), x) * model_prev
        scale = _dims(alpha_t * b_h, x)
        if d1s is not None:
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else \
                torch.linalg.solve(r_mat[:-1, :-1], b_t[:-1])
            x_t = base - scale * weigh(rhos_p)
        else:
            x_t = base - scale * 0
        if not correct:
            return x_t, None
        rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else \
            torch.linalg.solve(r_mat, b_t)
        model_t = self.data(x_t, t)
        return base - scale * (weigh(rhos_c[:-1]) + rhos_c[-1] * (model_t - model_prev)), model_t

    def sample(self, x: Any, timesteps: Any) -> Any:
        steps = len(timesteps) - 1
        order = min(3, len(timesteps) - 2)
        models: list[Any] = []
        ts: list[Any] = []
        for index in range(steps):
            if index == 0:
                t = timesteps[0].expand(x.shape[0])
                models, ts = [self.data(x, t)], [t]
            elif index < order:
                t = timesteps[index].expand(x.shape[0])
                x, model_x = self.update(x, models, ts, t, index, True)
                models.append(model_x)
                ts.append(t)
            else:
                # the last index also takes the step to the final sigma (no corrector)
                for step in range(index, index + 1 + (index == steps - 1)):
                    t = timesteps[step].expand(x.shape[0])
                    x, model_x = self.update(x, models, ts, t, min(order, steps + 1 - step),
                                             step != steps)
                    models[:-1], ts[:-1] = models[1:], ts[1:]
                    ts[-1] = t
                    if step < steps:
                        models[-1] = model_x
            self.run.step_done(index, x, models[-1])
        return x


def _sampler(bh2: bool) -> Any:
    def sample(run: Run, x: Any) -> Any:
        timesteps = run.sigmas.clone()
        if timesteps[-1] == 0:
            timesteps[-1] = _LAST_SIGMA
        x = x / (1.0 + timesteps[0] ** 2.0).sqrt()
        x = _UniPC(run, bh2).sample(x, timesteps)
        return x / _log_alpha(timesteps[-1]).exp()

    return sample


SAMPLERS = {"uni_pc": _sampler(False), "uni_pc_bh2": _sampler(True)}
