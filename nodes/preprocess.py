"""Control-image preprocessors that work offline, with no model downloads: Canny edges,
soft edges and line art from image gradients, threshold / scribble, greyscale as depth,
and tile (downscale-blur). Outputs are ordinary images to preview, save or feed a
ControlNet; lines are white on black, as ControlNets expect."""

from __future__ import annotations

from engine.errors import InputError
from engine.spec import Bool, Float, In, Int, Node, Output
from engine.types import T

from ._tensors import check_image, luminance, to_uint8


def gradient_magnitude(image, blur: float):
    import torch
    import torch.nn.functional as F

    from ._filters import gaussian_blur

    g = luminance(image)
    if blur > 0:
        g = gaussian_blur(g, blur)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    p = F.pad(g, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(p, kx), F.conv2d(p, kx.transpose(-1, -2))
    mag = (gx * gx + gy * gy).sqrt()
    peak = mag.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    return mag / peak


class Canny(Node):
    type = "canny"
    title = "Canny Edges"
    category = "controlnet/preprocessors"
    description = "Hard edges (OpenCV's Canny), for a canny ControlNet."
    inputs = (In("image", T.image), Int("low_threshold", 100, min=0, max=255),
              Int("high_threshold", 200, min=0, max=255))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, low_threshold=100, high_threshold=200):
        import cv2
        import torch

        check_image(image, "image")
        if high_threshold < low_threshold:
            raise InputError("high_threshold", f"at least low_threshold ({low_threshold})",
                             high_threshold)
        out = []
        for i in range(image.shape[0]):
            ctx.check_cancelled()
            grey = cv2.cvtColor(to_uint8(image[:, :3], i), cv2.COLOR_RGB2GRAY)
            edges = cv2.Canny(grey, low_threshold, high_threshold)
            out.append(torch.from_numpy(edges).float().div(255)[None].expand(3, -1, -1))
        return {"image": torch.stack(out)}


class SoftEdges(Node):
    type = "soft_edges"
    title = "Soft Edges"
    category = "controlnet/preprocessors"
    description = "Edge strength from image gradients (Sobel), for softedge / HED ControlNets."
    inputs = (In("image", T.image), Float("blur", 1.0, min=0.0, max=16.0, step=0.5))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, blur=1.0):
        check_image(image, "image")
        return {"image": gradient_magnitude(image, blur).expand(-1, 3, -1, -1).contiguous()}


class LineArt(Node):
    type = "lineart"
    title = "Line Art"
    category = "controlnet/preprocessors"
    description = "Thin lines where the image changes, for lineart ControlNets."
    inputs = (In("image", T.image), Float("threshold", 0.15, min=0.0, max=1.0, step=0.01),
              Float("blur", 0.5, min=0.0, max=16.0, step=0.5))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, threshold=0.15, blur=0.5):
        check_image(image, "image")
        mag = gradient_magnitude(image, blur)
        return {"image": (mag > threshold).float().expand(-1, 3, -1, -1).contiguous()}


class Threshold(Node):
    type = "threshold_image"
    title = "Threshold / Scribble"
    category = "controlnet/preprocessors"
    description = ("Black and white by brightness; invert turns dark strokes on white paper "
                   "into the white-on-black scribbles a scribble ControlNet wants.")
    inputs = (In("image", T.image), Float("threshold", 0.5, min=0.0, max=1.0, step=0.01),
              Bool("invert", True))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, threshold=0.5, invert=True):
        check_image(image, "image")
        on = luminance(image) >= threshold
        if invert:
            on = ~on
        return {"image": on.float().expand(-1, 3, -1, -1).contiguous()}


class GreyscaleDepth(Node):
    type = "greyscale_depth"
    title = "Greyscale as Depth"
    category = "controlnet/preprocessors"
    description = "Use a greyscale depth map you already have (near = bright) as it is."
    inputs = (In("image", T.image),)
    outputs = (Output("image", T.image),)

    def run(self, ctx, image):
        check_image(image, "image")
        return {"image": luminance(image).expand(-1, 3, -1, -1).contiguous()}


class Tile(Node):
    type = "tile_image"
    title = "Tile (Downscale Blur)"
    category = "controlnet/preprocessors"
    description = "Shrink and enlarge again: the blurred guide a tile ControlNet refines."
    inputs = (In("image", T.image), Float("downscale", 2.0, min=1.0, max=16.0, step=0.5))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, downscale=2.0):
        from .image import resize

        check_image(image, "image")
        h, w = image.shape[-2:]
        small = resize(image[:, :3], max(1, round(w / downscale)), max(1, round(h / downscale)),
                       "area")
        return {"image": resize(small, w, h, "bicubic")}


NODES = (Canny, SoftEdges, LineArt, Threshold, GreyscaleDepth, Tile)
