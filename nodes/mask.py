"""Mask nodes. A MASK is float32 [B, 1, H, W] with 1 = change this pixel."""

from __future__ import annotations

from engine.spec import Choice, Float, In, Int, Node, Output, String
from engine.types import T

from ._filters import gaussian_blur, grow
from ._tensors import check_image, check_mask, luminance, parse_color

MAX_SIDE = 16384


class MaskFromColor(Node):
    type = "mask_from_color"
    title = "Mask from Color"
    category = "mask"
    description = "1 where the image has the colour (within a tolerance), 0 elsewhere."
    inputs = (In("image", T.image), String("color", "#ffffff"),
              Float("tolerance", 0.05, min=0.0, max=1.0, step=0.01))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, image, color="#ffffff", tolerance=0.05):
        import torch

        check_image(image, "image")
        rgb = torch.tensor(parse_color(color), dtype=image.dtype).view(1, 3, 1, 1)
        dist = (image[:, :3] - rgb).abs().amax(dim=1, keepdim=True)
        return {"mask": (dist <= tolerance + 1e-6).to(torch.float32)}


class ImageToMask(Node):
    type = "image_to_mask"
    title = "Image Channel to Mask"
    category = "mask"
    description = "Use one channel (or the luminance) of an image as a mask."
    inputs = (In("image", T.image), Choice("channel", ("red", "green", "blue", "luminance"),
                                           "luminance"))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, image, channel="luminance"):
        check_image(image, "image")
        if channel == "luminance":
            return {"mask": luminance(image)}
        i = ("red", "green", "blue").index(channel)
        return {"mask": image[:, i: i + 1].clone()}


class MaskToImage(Node):
    type = "mask_to_image"
    title = "Mask to Image"
    category = "mask"
    description = "Show a mask as a grey image."
    inputs = (In("mask", T.mask),)
    outputs = (Output("image", T.image),)

    def run(self, ctx, mask):
        check_mask(mask, "mask")
        return {"image": mask.expand(-1, 3, -1, -1).clone()}


class InvertMask(Node):
    type = "invert_mask"
    title = "Invert Mask"
    category = "mask"
    description = "1 becomes 0 and 0 becomes 1."
    inputs = (In("mask", T.mask),)
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, mask):
        check_mask(mask, "mask")
        return {"mask": 1.0 - mask}


class GrowMask(Node):
    type = "grow_mask"
    title = "Grow / Shrink Mask"
    category = "mask"
    description = "Grow the masked area by a number of pixels; negative values shrink it."
    inputs = (In("mask", T.mask), Int("pixels", 8, min=-512, max=512))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, mask, pixels=8):
        check_mask(mask, "mask")
        return {"mask": grow(mask, pixels, ctx.check_cancelled)}


class BlurMask(Node):
    type = "blur_mask"
    title = "Blur Mask"
    category = "mask"
    description = "Soften a mask's edge (feather) by a radius in pixels."
    inputs = (In("mask", T.mask), Float("radius", 4.0, min=0.0, max=256.0, step=0.5))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, mask, radius=4.0):
        check_mask(mask, "mask")
        return {"mask": gaussian_blur(mask, radius).clamp_(0, 1)}


class ThresholdMask(Node):
    type = "threshold_mask"
    title = "Threshold Mask"
    category = "mask"
    description = "1 where the mask is at least the threshold, else 0."
    inputs = (In("mask", T.mask), Float("threshold", 0.5, min=0.0, max=1.0, step=0.01))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, mask, threshold=0.5):
        check_mask(mask, "mask")
        return {"mask": (mask >= threshold).to(mask.dtype)}


class SolidMask(Node):
    type = "solid_mask"
    title = "Solid Mask"
    pixel_inputs = (None, "width", "height")
    category = "mask"
    description = "A mask of one value everywhere."
    inputs = (Float("value", 1.0, min=0.0, max=1.0, step=0.01),
              Int("width", 512, min=1, max=MAX_SIDE), Int("height", 512, min=1, max=MAX_SIDE))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, value=1.0, width=512, height=512):
        import torch

        return {"mask": torch.full((1, 1, height, width), float(value))}


class LoadImageMask(Node):
    type = "load_image_mask"
    title = "Load Image Mask"
    category = "mask"
    description = ("A painted mask from an image file: one channel, or the alpha channel "
                   "(transparent = 1, the part to change).")
    inputs = (String("path", "", file="image"),
              Choice("channel", ("alpha", "red", "green", "blue", "luminance"), "alpha"))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, path, channel="alpha"):
        from .image import LoadImage

        out = LoadImage().run(ctx, path)
        if channel == "alpha":
            return {"mask": out["mask"]}
        return ImageToMask().run(ctx, out["image"], channel)



MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


class MaskComposite(Node):
    type = "mask_composite"
    title = "Combine Masks"
    category = "mask"
    description = ("Combine source into destination at (x, y): multiply, add, subtract "
                   "(clamped to 0..1), or the logical and / or / xor of masks above 0.5.")
    inputs = (In("destination", T.mask), In("source", T.mask),
              Int("x", 0, min=-MAX_SIDE, max=MAX_SIDE), Int("y", 0, min=-MAX_SIDE, max=MAX_SIDE),
              Choice("operation", MASK_OPERATIONS, "multiply"))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, destination, source, x=0, y=0, operation="multiply"):
        check_mask(destination, "destination")
        check_mask(source, "source")
        out = destination.clone()
        H, W = out.shape[-2:]
        h, w = source.shape[-2:]
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, H), min(x + w, W)
        if y1 <= y0 or x1 <= x0:
            return {"mask": out}
        src = source[..., y0 - y: y1 - y, x0 - x: x1 - x]
        if src.shape[0] != out.shape[0]:
            src = src[:1].expand(out.shape[0], -1, -1, -1)
        dst = out[..., y0:y1, x0:x1]
        if operation == "multiply":
            res = dst * src
        elif operation == "add":
            res = dst + src
        elif operation == "subtract":
            res = dst - src
        else:
            a, b = dst > 0.5, src > 0.5
            res = {"and": a & b, "or": a | b, "xor": a ^ b}[operation].to(dst.dtype)
        out[..., y0:y1, x0:x1] = res.clamp(0, 1)
        return {"mask": out}


class FeatherMask(Node):
    type = "feather_mask"
    title = "Feather Mask Edges"
    category = "mask"
    description = ("Fade the mask out towards the image's borders: over this many pixels from "
                   "each side it falls linearly to 0.")
    inputs = (In("mask", T.mask), Int("left", 0, min=0, max=MAX_SIDE),
              Int("top", 0, min=0, max=MAX_SIDE), Int("right", 0, min=0, max=MAX_SIDE),
              Int("bottom", 0, min=0, max=MAX_SIDE))
    outputs = (Output("mask", T.mask),)

    def run(self, ctx, mask, left=0, top=0, right=0, bottom=0):
        import torch

        check_mask(mask, "mask")
        H, W = mask.shape[-2:]

        def ramp(n, first, last):
            i = torch.arange(n, dtype=torch.float32)
            r = torch.ones(n)
            if first:
                r = torch.minimum(r, (i + 1) / first)
            if last:
                r = torch.minimum(r, (n - i) / last)
            return r

        wy = ramp(H, min(top, H), min(bottom, H))
        wx = ramp(W, min(left, W), min(right, W))
        return {"mask": mask * (wy[:, None] * wx[None, :])}


class PreviewMask(Node):
    type = "preview_mask"
    title = "Preview Mask"
    category = "mask"
    description = "Show a mask in the editor (white = masked)."
    output = True
    inputs = (In("mask", T.mask),)
    outputs = ()

    def run(self, ctx, mask):
        check_mask(mask, "mask")
        return {"ui": {"images": mask.repeat(1, 3, 1, 1)}}


NODES = (LoadImageMask, MaskFromColor, ImageToMask, MaskToImage, InvertMask, GrowMask, BlurMask,
         ThresholdMask, SolidMask, MaskComposite, FeatherMask, PreviewMask)
