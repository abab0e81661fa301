"""How a model family maps noise levels (sigmas) to its inputs and timesteps, as ComfyUI's
model_sampling objects do: discrete eps / v prediction over scaled-linear betas, and
rectified flow (SD3's shifted discrete flow, AuraFlow-style shift with multiplier 1, Flux's
resolution-dependent shift). Every schedule and sampler reads the model through this."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

EPS, V, FLOW = "eps", "v", "flow"


@dataclasses.dataclass
class ModelSampling:
    """`sigmas`: the model's training sigmas, ascending (float32 tensor)."""

    prediction: str
    sigmas: Any
    # flow: sigma(t) = shift_fn(t / multiplier); discrete: interpolated log sigmas
    shift: float = 1.0
    multiplier: float = 1000.0
    flux: bool = False
    sigma_data: float = 1.0
    # discrete models: float32 logs of the float64 sigmas, as ComfyUI stores them
    stored_log_sigmas: Any = None

    @property
    def flow(self) -> bool:
        return self.prediction == FLOW

    @property
    def sigma_min(self) -> Any:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Any:
        return self.sigmas[-1]

    # ---- sigma <-> timestep ----------------------------------------------------------
    def timestep(self, sigma: Any) -> Any:
        """The model's timestep for a sigma: the nearest training step for discrete models
        (as ComfyUI feeds the UNet), sigma x multiplier for flow models."""
        import torch

        if self.flow:
            return sigma * self.multiplier  # Flux's multiplier is 1
        sigma = torch.as_tensor(sigma)
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: Any) -> Any:
        import torch

        t = torch.as_tensor(timestep)
        if self.flow:
            if self.flux:
                return flux_time_shift(self.shift, 1.0, t)
            return time_snr_shift(self.shift, t / self.multiplier)
        t = torch.clamp(t.float().to(self.log_sigmas.device), min=0,
                        max=len(self.sigmas) - 1)
        low_idx = t.floor().long()
        high_idx = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(t.device)

    def percent_to_sigma(self, percent: float) -> float:
        """The sigma a share of the way through sampling (flow models in double precision,
        as ComfyUI computes it: near sigma 1 the half-log-SNR is steep)."""
        if percent <= 0.0:
            return 1.0 if self.flow else 999999999.9
        if percent >= 1.0:
            return 0.0
        if self.flow:
            t = 1.0 - percent
            return float(flux_time_shift(self.shift, 1.0, t) if self.flux
                         else time_snr_shift(self.shift, t))
        return float(self.sigma(999 * (1.0 - percent)))

    @property
    def log_sigmas(self) -> Any:
        if self.stored_log_sigmas is None:
            self.stored_log_sigmas = self.sigmas.log()
        return self.stored_log_sigmas

    # ---- the model's input and output ------------------------------------------------
    def noise_scaling(self, sigma: Any, noise: Any, latent: Any,
                      max_denoise: bool = False) -> Any:
        """The latent at noise level `sigma`; from the top of the schedule (max_denoise) a
        discrete model starts from noise of variance 1 + sigma^2, as ComfyUI starts."""
        if self.flow:
            return sigma * noise + (1.0 - sigma) * latent
        if max_denoise:
            return latent + noise * (1.0 + sigma ** 2.0) ** 0.5
        return latent + noise * sigma

    def inverse_noise_scaling(self, sigma: Any, latent: Any) -> Any:
        if self.flow:
            return latent / (1.0 - sigma)
        return latent

    def calculate_input(self, sigma: Any, x: Any) -> Any:
        if self.flow:
            return x
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma: Any, out: Any, x: Any) -> Any:
        """The clean latent from the model's output (noise, v or flow velocity)."""
        if self.prediction == V:
            sd = self.sigma_data
            return x * sd ** 2 / (sigma ** 2 + sd ** 2) - out * sigma * sd / (
                sigma ** 2 + sd ** 2) ** 0.5
        return x - out * sigma

    def max_denoise(self, sigmas: Any) -> bool:
        """Whether the schedule starts at the model's top level (pure noise)."""
        top, first = float(self.sigma_max), float(sigmas[0])
        return math.isclose(top, first, rel_tol=1e-05) or first > top


def time_snr_shift(alpha: float, t: Any) -> Any:
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def flux_time_shift(mu: float, sigma: float, t: Any) -> Any:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def discrete(prediction: str = EPS, beta_start: float = 0.00085, beta_end: float = 0.012,
             timesteps: int = 1000, schedule: str = "scaled_linear") -> ModelSampling:
    """SD 1.x / 2.x / SDXL: sigmas from the betas (float64 math, stored float32)."""
    import torch

    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps,
                               dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"beta schedule {schedule!r}")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return ModelSampling(prediction, sigmas.float(), stored_log_sigmas=sigmas.log().float())


def discrete_flow(shift: float = 3.0, multiplier: float = 1000.0,
                  timesteps: int = 1000) -> ModelSampling:
    """SD3 (shift 3, multiplier 1000) and AuraFlow-style models (multiplier 1)."""
    import torch

    t = torch.arange(1, timesteps + 1, 1) / timesteps * multiplier
    return ModelSampling(FLOW, time_snr_shift(shift, t / multiplier), shift, multiplier)


def flux(shift: float = 1.15, timesteps: int = 10000) -> ModelSampling:
    import torch

    t = torch.arange(1, timesteps + 1, 1) / timesteps
    return ModelSampling(FLOW, flux_time_shift(shift, 1.0, t), shift, 1.0, flux=True)


def flux_shift(width: int, height: int, max_shift: float = 1.15,
               base_shift: float = 0.5) -> float:
    """Flux's shift for an image size (ComfyUI's ModelSamplingFlux)."""
    x1, x2 = 256, 4096
    mm = (max_shift - base_shift) / (x2 - x1)
    b = base_shift - mm * x1
    return (width * height / (8 * 8 * 2 * 2)) * mm + b
