"""The step noise of stochastic samplers, drawn as ComfyUI draws it on the CPU: the default
sampler's fresh Gaussian per step from a generator seeded with seed + 1, and the SDE
samplers' Brownian tree (torchsde) seeded with the seed. Noise is always drawn on the CPU
and moved to the latent's device, so a seed gives the same picture on every device."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .base import Run

NoiseSampler = Callable[[Any, Any], Any]


def default_noise_sampler(x: Any, seed: int | None = None) -> NoiseSampler:
    """A fresh N(0, 1) tensor shaped like x per call (the sigmas are ignored)."""
    import torch

    generator = None
    if seed is not None:
        # ComfyUI seeds its CPU generator with seed + 1 (the initial noise used seed)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed + 1)

    def sample(sigma: Any, sigma_next: Any) -> Any:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, generator=generator,
                           device="cpu").to(x.device)

    return sample


class BrownianTreeNoiseSampler:
    """Noise from a Brownian motion W over [sigma_min, sigma_max]: a call for (sigma,
    sigma_next) gives (W(sigma_next) - W(sigma)) / sqrt|sigma_next - sigma|, so increments
    over adjacent intervals are consistent however a sampler subdivides a step."""

    def __init__(self, x: Any, sigma_min: Any, sigma_max: Any, seed: int | None = None,
                 transform: Callable[[Any], Any] = lambda s: s):
        import torch
        import torchsde

        self.transform = transform
        t0 = transform(torch.as_tensor(sigma_min)).detach().cpu()
        t1 = transform(torch.as_tensor(sigma_max)).detach().cpu()
        self.sign = 1 if t0 < t1 else -1
        t0, t1 = min(t0, t1), max(t0, t1)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 63 - 1, ()).item())
        w0 = torch.zeros_like(x, device="cpu")
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)
        self.device = x.device

    def __call__(self, sigma: Any, sigma_next: Any) -> Any:
        import torch

        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        sign = self.sign if t0 < t1 else -self.sign
        lo, hi = (t0, t1) if t0 < t1 else (t1, t0)
        with warnings.catch_warnings():
            # queries at the float32 ends, which torchsde's rounded bounds call out of range
            warnings.filterwarnings("ignore", message=r"Should have (ta>=t0|tb<=t1)")
            w = self.tree(lo.detach().cpu().float(), hi.detach().cpu().float())
        w = w.to(device=self.device, dtype=lo.dtype) * sign
        return w / (t1 - t0).abs().sqrt().to(self.device)


def step_noise(run: Run, x: Any) -> NoiseSampler:
    """The run's noise sampler, else the default one for its seed."""
    if run.noise_sampler is not None:
        return run.noise_sampler
    return _in_batch(run, x, lambda like: default_noise_sampler(like, run.seed))


def tree_noise(run: Run, x: Any) -> NoiseSampler:
    """The run's noise sampler, else a Brownian tree over the schedule's nonzero sigmas."""
    if run.noise_sampler is not None:
        return run.noise_sampler
    sigmas = run.sigmas
    return _in_batch(run, x, lambda like: BrownianTreeNoiseSampler(
        like, sigmas[sigmas > 0].min(), sigmas.max(), run.seed))


def _in_batch(run: Run, x: Any, make: Callable[[Any], NoiseSampler]) -> NoiseSampler:
    """For a latent cut from a batch (`run.batch_index`), the rows of the noise the whole
    batch would get, so image k steps through the same noise alone as in its batch (ComfyUI
    draws a cut latent's step noise afresh). Without an index, ComfyUI's draw as it is."""
    import torch

    index = run.batch_index
    if index is None:
        return make(x)
    whole = make(x.new_empty((max(index) + 1, *x.shape[1:])))
    rows = torch.tensor(index, device=x.device)
    return lambda sigma, sigma_next: whole(sigma, sigma_next)[rows]
