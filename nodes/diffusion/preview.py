"""The sampler's live preview: a fixed linear map from latent channels to RGB per base
family, cheap enough for every step."""

from __future__ import annotations

from typing import Any

from .arch import Arch

# A fixed linear map from latent channels to RGB per base family: a cheap live preview.
PREVIEW_RGB = {
    Arch.sd15: ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    Arch.sdxl: ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
              [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}


def preview_image(latents: Any, family: str) -> Any:
    import torch

    arch = Arch.of(family) or Arch.sd15
    weights, bias = PREVIEW_RGB.get(arch.base, PREVIEW_RGB[Arch.sd15])
    w = torch.tensor(weights, dtype=torch.float32)
    x = latents[:1].detach().float().cpu()
    rgb = torch.einsum("bchw,cr->brhw", x, w) + torch.tensor(bias).view(1, 3, 1, 1)
    return ((rgb + 1) / 2).clamp(0, 1)
