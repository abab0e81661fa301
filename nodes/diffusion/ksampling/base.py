"""The run a sampler walks: model, sigmas, model sampling, seed and callback."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .modelsampling import ModelSampling


@dataclasses.dataclass
class Run:
    """What a sampler may use.

    model(x, sigma) -> denoised, sigma a tensor of shape [batch] (as k-diffusion calls it:
    `sigmas[i] * x.new_ones([x.shape[0]])`). `ms` is the model's sampling (flow models take
    other ancestral and SDE steps). `seed` seeds the step noise as ComfyUI does.
    `callback(i, x, denoised)` runs after each step's model call (progress, previews and
    cancellation)."""

    model: Callable[[Any, Any], Any]
    sigmas: Any
    ms: ModelSampling
    seed: int | None = None
    callback: Callable[[int, Any, Any], None] | None = None
    noise_sampler: Callable[[Any, Any], Any] | None = None
    # where the latent's images stand in the batch they were cut from (Latent.batch_index)
    batch_index: tuple[int, ...] | None = None
    # the last model call's unconditional denoised estimate, set by the model wrapper when
    # it guides (CFG++ samplers step along it); None when it does not guide
    uncond: Any = None

    def step_done(self, i: int, x: Any, denoised: Any) -> None:
        if self.callback is not None:
            self.callback(i, x, denoised)

    def s_in(self, x: Any) -> Any:
        return x.new_ones([x.shape[0]])


Sampler = Callable[[Run, Any], Any]
