"""Pixel filters shared by the image, mask and preprocessing nodes (below all of them, so
none imports another node module for them)."""

from __future__ import annotations

import math


def grow(mask, pixels: int, check=lambda: None):
    """Dilate (pixels > 0) or erode (< 0) by alternating 3x3 square and cross steps,
    which grows a point into an octagon close to a disc, in O(pixels) work."""
    import torch
    import torch.nn.functional as F

    if pixels == 0:
        return mask.clone()
    x = mask if pixels > 0 else 1.0 - mask
    for i in range(abs(pixels)):
        check()
        if i % 2 == 0:
            x = F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        else:
            # grey-scale dilation by the cross: the max over the 5 cross cells
            p = F.pad(x, (1, 1, 1, 1), mode="replicate")
            x = torch.stack([p[..., 1:-1, 1:-1], p[..., :-2, 1:-1], p[..., 2:, 1:-1],
                             p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)
    return x if pixels > 0 else 1.0 - x


def gaussian_blur(x, radius: float):
    """Separable Gaussian blur; sigma = radius / 3, so the kernel reaches `radius` pixels."""
    import torch
    import torch.nn.functional as F

    if radius <= 0:
        return x.clone()
    r = max(1, math.ceil(radius))
    sigma = max(radius / 3.0, 1e-3)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), ky, groups=c)
