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
    # ComfyUI's latent_formats.Flux
    Arch.flux: ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
                 [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
                 [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
                 [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421],
                 [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
                 [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103],
                 [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778]],
                [-0.0329, -0.0718, -0.0851]),
}


def preview_image(latents: Any, family: str) -> Any:
    import torch

    arch = Arch.of(family) or Arch.sd15
    weights, bias = PREVIEW_RGB.get(arch.base, PREVIEW_RGB[Arch.sd15])
    w = torch.tensor(weights, dtype=torch.float32)
    x = latents[:1].detach().float().cpu()
    if x.shape[1] != w.shape[0]:  # a latent of a width no map is for: its mean, grey
        return ((x.mean(1, keepdim=True).repeat(1, 3, 1, 1) + 1) / 2).clamp(0, 1)
    rgb = torch.einsum("bchw,cr->brhw", x, w) + torch.tensor(bias).view(1, 3, 1, 1)
    return ((rgb + 1) / 2).clamp(0, 1)
