"""Image nodes: load, save, preview, resize, crop, pad, blend, composite."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from engine.errors import InputError, PartialOutput
from engine.fsutil import remove_stale_temps, write_new
from engine.pngmeta import WORKFLOW_KEY, png_info
from engine.spec import Choice, Float, In, Int, Node, Output, String
from engine.types import T

from ._tensors import (
    check_image,
    check_mask,
    match_batch,
    parse_color,
    pil_to_tensors,
    same_size,
    size_of,
    tensor_to_pil,
    to_uint8,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_SIDE = 16384


class LoadImage(Node):
    type = "load_image"
    title = "Load Image"
    category = "image"
    description = ("Load a PNG, JPEG or WebP file. Its alpha channel becomes the mask "
                   "(transparent pixels = 1, the part to change).")
    inputs = (String("path", "", file="image", description="image file; relative paths "
                     "resolve against the workflow's folder"),)
    outputs = (Output("image", T.image), Output("mask", T.mask))

    def run(self, ctx, path):
        if not path:
            raise InputError("path", "an image file (PNG, JPEG or WebP)", path,
                             hint="choose a file")
        resolved = ctx.resolve_path(path)
        if resolved is None:
            raise InputError("path", "an existing image file (PNG, JPEG or WebP)", path)
        image, mask = pil_to_tensors(read_image(resolved, "path"))
        return {"image": image, "mask": mask}


def read_image(path: Path, input_name: str) -> Any:
    """The first frame of an image file, decoded, EXIF rotation applied; an InputError
    naming `input_name` for a file that is not a readable image within the pixel limit."""
    from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

    from engine.fsutil import IMAGE_LIMIT, open_user_file
    from engine.limits import pixels_problem
    from engine.pngmeta import TEXT_LIMIT

    # Pillow's own bounds, set to Loom's: the text of PNG chunks; and pixels, which Loom's
    # limit (raised by LOOM_MAX_PIXELS, checked below from the header) replaces
    PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY = TEXT_LIMIT
    Image.MAX_IMAGE_PIXELS = None
    expected = "a PNG, JPEG or WebP image"
    try:
        f = open_user_file(path, "image file", IMAGE_LIMIT)
    except OSError as exc:
        raise InputError(input_name, "an existing image file (PNG, JPEG or WebP)", str(path),
                         hint=f"{exc.strerror or exc}") from None
    try:
        with f, Image.open(f) as img:
            problem = pixels_problem(1, *img.size)  # read from the header, not decoded
            if problem:
                raise InputError(input_name, "an image within the pixel limit", str(path),
                                 hint=problem)
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(input_name, expected, str(path),
                         hint=f"the file could not be decoded: {exc}") from None
    return img


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class SaveImage(Node):
    type = "save_image"
    title = "Save Image"
    category = "image"
    description = ("Save PNGs into the output folder as PREFIX_00001.png, never overwriting. "
                   "Each file carries the workflow, so opening it in Loom restores the graph.")
    output = True
    inputs = (In("images", T.image),
              String("filename_prefix", "loom", description="file name start; may hold "
                     "sub-folders inside the output folder"))
    outputs = ()

    def run(self, ctx, images, filename_prefix="loom"):
        check_image(images, "images")
        prefix = Path(filename_prefix)
        if _CONTROL.search(filename_prefix):
            raise InputError("filename_prefix", "a file name without control characters "
                             "(newlines, tabs, terminal escapes)", filename_prefix)
        if (not filename_prefix or prefix.is_absolute() or ".." in prefix.parts
                or not prefix.name):
            raise InputError("filename_prefix", "a relative name inside the output folder",
                             filename_prefix)
        folder = Path(ctx.output_dir) / prefix.parent
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
        workflow = ctx.workflow() if ctx.workflow else None
        text = json.dumps(workflow, ensure_ascii=False) if workflow is not None else None
        pattern = re.compile(re.escape(prefix.name) + r"_(\d{5,})\.png$")
        counter = 1 + max((int(m.group(1)) for f in folder.iterdir()
                           if (m := pattern.match(f.name))), default=0)
        files: list[str] = []
        for i in range(images.shape[0]):
            ctx.check_cancelled()
            data = _png_bytes(tensor_to_pil(images, i), text)
            try:
                while not write_new(folder / f"{prefix.name}_{counter:05d}.png", data):
                    counter += 1
            except OSError as exc:
                wrote = (f"wrote {len(files)} of {images.shape[0]} image(s) before that: "
                         + ", ".join(files)) if files else "no image was written"
                raise PartialOutput(f"cannot write {folder / prefix.name}_{counter:05d}.png: "
                                    f"{exc.strerror or exc}; {wrote}", files) from None
            files.append(str((folder / f"{prefix.name}_{counter:05d}.png").resolve()))
            counter += 1
        return {"ui": {"files": files}}

    @classmethod
    def fingerprint(cls, values, env):
        return {"output_dir": str(Path(env.output_dir).resolve())}

    @classmethod
    def still_valid(cls, result: dict[str, Any]) -> bool:
        files = (result.get("ui") or {}).get("files") or []
        return bool(files) and all(Path(f).is_file() for f in files)


def _png_bytes(img, workflow_text: str | None) -> bytes:
    buf = io.BytesIO()
    info = png_info({WORKFLOW_KEY: workflow_text}) if workflow_text is not None else None
    img.save(buf, format="PNG", compress_level=4, pnginfo=info)
    return buf.getvalue()


class PreviewImage(Node):
    type = "preview_image"
    title = "Preview Image"
    category = "image"
    description = "Show images in the editor without saving them."
    output = True
    inputs = (In("images", T.image),)
    outputs = ()

    def run(self, ctx, images):
        check_image(images, "images")
        return {"ui": {"images": images}}


RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
FIT_MODES = ("stretch", "fit", "fill")


def resize(image, width: int, height: int, method: str):
    """Resize an IMAGE/MASK batch to width x height with the named method."""
    import torch
    import torch.nn.functional as F

    if (image.shape[-1], image.shape[-2]) == (width, height):
        return image
    if method == "lanczos":
        import numpy as np
        from PIL import Image

        out = torch.empty(*image.shape[:2], height, width)
        arr = image.detach().cpu().float().numpy()
        for b in range(arr.shape[0]):
            for c in range(arr.shape[1]):
                ch = Image.fromarray(arr[b, c], "F").resize((width, height), Image.LANCZOS)
                out[b, c] = torch.from_numpy(np.array(ch))
        return out.clamp_(0, 1)
    if method == "nearest":
        return F.interpolate(image, size=(height, width), mode="nearest-exact")
    if method == "area":
        return F.interpolate(image, size=(height, width), mode="area")
    out = F.interpolate(image, size=(height, width), mode=method, align_corners=False,
                        antialias=True)
    return out.clamp_(0, 1) if method == "bicubic" else out


class ResizeImage(Node):
    type = "resize_image"
    title = "Resize Image"
    pixel_inputs = (None, "width", "height")
    category = "image/transform"
    description = ("Resize to a width and height. 0 for one side keeps the aspect ratio. "
                   "fit: inside the box, keeping aspect; fill: cover the box and crop the rest.")
    inputs = (In("image", T.image),
              Int("width", 512, min=0, max=MAX_SIDE),
              Int("height", 512, min=0, max=MAX_SIDE),
              Choice("method", RESIZE_METHODS, "bicubic"),
              Choice("fit", FIT_MODES, "stretch"))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, width=512, height=512, method="bicubic", fit="stretch"):
        check_image(image, "image")
        h, w = image.shape[-2:]
        if width == 0 and height == 0:
            raise InputError("width", "a width or a height above 0", 0)
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        if fit == "stretch":
            return {"image": resize(image, width, height, method)}
        scale = (min if fit == "fit" else max)(width / w, height / h)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        out = resize(image, sw, sh, method)
        if fit == "fill":
            x, y = (sw - width) // 2, (sh - height) // 2
            out = out[..., y: y + height, x: x + width]
        return {"image": out.contiguous()}


class CropImage(Node):
    type = "crop_image"
    title = "Crop Image"
    category = "image/transform"
    description = "Cut out a rectangle. A rectangle reaching past the edge is cut at the edge."
    inputs = (In("image", T.image),
              Int("x", 0, min=0, max=MAX_SIDE), Int("y", 0, min=0, max=MAX_SIDE),
              Int("width", 512, min=1, max=MAX_SIDE), Int("height", 512, min=1, max=MAX_SIDE))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, x=0, y=0, width=512, height=512):
        check_image(image, "image")
        h, w = image.shape[-2:]
        if x >= w or y >= h:
            raise InputError("x" if x >= w else "y", f"a corner inside the {size_of(image)} image",
                             f"({x}, {y})")
        return {"image": image[..., y: y + height, x: x + width].clone()}


class PadImage(Node):
    type = "pad_image"
    title = "Pad Image"
    category = "image/transform"
    description = ("Add borders. The mask output is 1 over the added border, ready for "
                   "outpainting.")
    inputs = (In("image", T.image),
              Int("left", 0, min=0, max=MAX_SIDE), Int("top", 0, min=0, max=MAX_SIDE),
              Int("right", 0, min=0, max=MAX_SIDE), Int("bottom", 0, min=0, max=MAX_SIDE),
              Choice("mode", ("constant", "edge", "reflect"), "constant"),
              String("color", "#000000"))
    outputs = (Output("image", T.image), Output("mask", T.mask))

    def run(self, ctx, image, left=0, top=0, right=0, bottom=0, mode="constant",
            color="#000000"):
        import torch
        import torch.nn.functional as F

        check_image(image, "image")
        b, c, h, w = image.shape
        if mode == "reflect" and (max(left, right) >= w or max(top, bottom) >= h):
            raise InputError("mode", f"padding smaller than the image ({size_of(image)}) for "
                             "reflect", f"{left},{top},{right},{bottom}")
        pad = (left, right, top, bottom)
        if mode == "constant":
            rgb = torch.tensor(parse_color(color), dtype=image.dtype).view(1, 3, 1, 1)
            out = rgb.expand(b, c, h + top + bottom, w + left + right).clone()
            out[..., top: top + h, left: left + w] = image
        else:
            out = F.pad(image, pad, mode="replicate" if mode == "edge" else "reflect")
        mask = torch.ones(b, 1, h + top + bottom, w + left + right)
        mask[..., top: top + h, left: left + w] = 0
        return {"image": out, "mask": mask}


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "add", "subtract",
               "difference", "darken", "lighten")


def _blend(a, b, mode: str):
    import torch

    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a < 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":  # the W3C / Photoshop formula
        d = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, a.clamp(min=0).sqrt())
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (d - a))
    if mode == "add":
        return (a + b).clamp(0, 1)
    if mode == "subtract":
        return (a - b).clamp(0, 1)
    if mode == "difference":
        return (a - b).abs()
    if mode == "darken":
        return torch.minimum(a, b)
    return torch.maximum(a, b)


class BlendImages(Node):
    type = "blend_images"
    title = "Blend Images"
    category = "image/compose"
    description = "Blend image_b over image_a with a blend mode and an opacity (factor)."
    inputs = (In("image_a", T.image), In("image_b", T.image),
              Float("factor", 0.5, min=0.0, max=1.0, step=0.01),
              Choice("mode", BLEND_MODES, "normal"))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image_a, image_b, factor=0.5, mode="normal"):
        check_image(image_a, "image_a")
        check_image(image_b, "image_b")
        if image_a.shape[-2:] != image_b.shape[-2:]:
            raise InputError("image_b", f"the size of image_a ({size_of(image_a)})",
                             size_of(image_b), hint="resize one of them first")
        a, b = match_batch(image_a, image_b, ("image_a", "image_b"))
        return {"image": a + (_blend(a, b, mode) - a) * factor}


class CompositeImages(Node):
    type = "composite_images"
    title = "Composite"
    category = "image/compose"
    description = ("Paste source onto destination at (x, y), through the mask if one is given "
                   "(1 = source). Pixels outside the mask keep destination's values exactly; "
                   "feather softens the seam inside the mask's edge only.")
    inputs = (In("destination", T.image), In("source", T.image),
              Int("x", 0, min=-MAX_SIDE, max=MAX_SIDE), Int("y", 0, min=-MAX_SIDE, max=MAX_SIDE),
              In("mask", T.mask, optional=True), Int("feather", 0, min=0, max=256))
    outputs = (Output("image", T.image),)

    def run(self, ctx, destination, source, x=0, y=0, mask=None, feather=0):
        import torch

        check_image(destination, "destination")
        check_image(source, "source")
        dst, src = match_batch(destination, source, ("destination", "source"))
        B, C, H, W = dst.shape
        sh, sw = src.shape[-2:]
        if mask is not None:
            check_mask(mask, "mask")
            if feather > 0:
                from ._filters import gaussian_blur, grow

                # fade in over `feather` pixels inside the edge; outside stays exactly 0
                inner = grow((mask > 0).float(), -feather)
                mask = torch.minimum(mask, gaussian_blur(inner, feather).clamp(0, 1)
                                     .maximum(inner))
            if mask.shape[-2:] == dst.shape[-2:] and (sh, sw) != (H, W):
                mask = mask[..., max(y, 0): y + sh, max(x, 0): x + sw]
                full = torch.zeros(mask.shape[0], 1, sh, sw)
                full[..., max(-y, 0): max(-y, 0) + mask.shape[-2],
                     max(-x, 0): max(-x, 0) + mask.shape[-1]] = mask
                mask = full
            elif mask.shape[-2:] != (sh, sw):
                raise InputError("mask", f"the size of source ({size_of(src)}) or destination "
                                 f"({size_of(dst)})", size_of(mask))
            _, mask = match_batch(dst, mask, ("destination", "mask"))
        out = dst.clone()
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, W), min(y + sh, H)
        if x0 >= x1 or y0 >= y1:
            return {"image": out}
        s = src[..., y0 - y: y1 - y, x0 - x: x1 - x]
        if mask is None:
            out[..., y0:y1, x0:x1] = s
        else:
            m = mask[..., y0 - y: y1 - y, x0 - x: x1 - x]
            region = out[..., y0:y1, x0:x1]
            # lerp is exact at both ends: destination where the mask is 0, source where 1
            out[..., y0:y1, x0:x1] = torch.lerp(region, s, m.expand_as(region))
        return {"image": out}


class PadForOutpaint(Node):
    type = "pad_for_outpaint"
    title = "Pad for Outpaint"
    category = "inpaint"
    description = ("Extend the canvas with mid grey and make the mask to paint it: 1 over the "
                   "new border, fading into the original over `feathering` pixels.")
    inputs = (In("image", T.image),
              Int("left", 0, min=0, max=MAX_SIDE, step=8),
              Int("top", 0, min=0, max=MAX_SIDE, step=8),
              Int("right", 0, min=0, max=MAX_SIDE, step=8),
              Int("bottom", 0, min=0, max=MAX_SIDE, step=8),
              Int("feathering", 40, min=0, max=MAX_SIDE))
    outputs = (Output("image", T.image), Output("mask", T.mask))

    def run(self, ctx, image, left=0, top=0, right=0, bottom=0, feathering=40):
        import torch

        check_image(image, "image")
        b, c, h, w = image.shape
        out = torch.full((b, 3, h + top + bottom, w + left + right), 0.5)
        out[..., top: top + h, left: left + w] = image[:, :3]
        mask = torch.ones(b, 1, h + top + bottom, w + left + right)
        inner = torch.zeros(h, w)
        if feathering > 0:
            ys = torch.arange(h).view(-1, 1).float()
            xs = torch.arange(w).view(1, -1).float()
            dist = torch.full((h, w), float("inf"))
            for side, d in ((left, xs), (right, w - 1 - xs), (top, ys), (bottom, h - 1 - ys)):
                if side:
                    dist = torch.minimum(dist, d.expand(h, w))
            fade = ((feathering - dist) / feathering).clamp(0, 1) ** 2
            inner = torch.where(torch.isfinite(dist), fade, inner)
        mask[..., top: top + h, left: left + w] = inner
        return {"image": out, "mask": mask}


class FillMaskedArea(Node):
    type = "fill_masked_area"
    title = "Fill Masked Area"
    category = "inpaint"
    description = ("Paint over what the mask covers before it is encoded, so the old content's "
                   "colour cannot leak into a repaint: 'telea' and 'navier-stokes' continue the "
                   "surroundings inward (OpenCV's inpainting), 'neutral' fills mid grey. "
                   "Pixels where the mask is 0 keep their values exactly; a soft mask blends.")
    inputs = (In("image", T.image), In("mask", T.mask),
              Choice("mode", ("telea", "navier-stokes", "neutral"), "telea"),
              Int("radius", 3, min=1, max=64))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, mask, mode="telea", radius=3):
        import torch

        check_image(image, "image")
        check_mask(mask, "mask")
        same_size(image, mask, "mask")
        image, mask = match_batch(image, mask, ("image", "mask"))
        rgb = image[:, :3]
        if mode == "neutral":
            filled = torch.full_like(rgb, 0.5)
        else:
            import cv2

            flag = cv2.INPAINT_TELEA if mode == "telea" else cv2.INPAINT_NS
            fills = []
            for i in range(image.shape[0]):
                ctx.check_cancelled()
                hole = (mask[i, 0] > 0).byte().numpy() * 255
                done = cv2.inpaint(to_uint8(rgb, i), hole, radius, flag)
                fills.append(torch.from_numpy(done).permute(2, 0, 1).float().div(255))
            filled = torch.stack(fills)
        out = image.clone()
        # lerp is exact where the mask is 0: those pixels keep the image's values
        out[:, :3] = torch.lerp(rgb, filled, mask.expand_as(rgb))
        return {"image": out}



class ScaleToTotalPixels(Node):
    type = "scale_to_megapixels"
    title = "Scale to Megapixels"
    category = "image/transform"
    description = "Resize keeping the aspect ratio so the image has about this many megapixels."
    inputs = (In("image", T.image), Choice("method", RESIZE_METHODS, "lanczos"),
              Float("megapixels", 1.0, min=0.01, max=64.0, step=0.01))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, method="lanczos", megapixels=1.0):
        check_image(image, "image")
        h, w = image.shape[-2:]
        scale = (megapixels * 1024 * 1024 / (w * h)) ** 0.5
        return {"image": resize(image, max(1, round(w * scale)), max(1, round(h * scale)),
                                method)}


class InvertImage(Node):
    type = "invert_image"
    title = "Invert Image"
    category = "image/adjust"
    description = "Negative of the image: 1 - each channel."
    inputs = (In("image", T.image),)
    outputs = (Output("image", T.image),)

    def run(self, ctx, image):
        check_image(image, "image")
        return {"image": 1.0 - image}


class EmptyImage(Node):
    type = "empty_image"
    title = "Solid Color Image"
    pixel_inputs = ("batch_size", "width", "height")
    category = "image"
    description = "An image of one colour."
    inputs = (Int("width", 512, min=1, max=MAX_SIDE), Int("height", 512, min=1, max=MAX_SIDE),
              Int("batch_size", 1, min=1, max=64), String("color", "#000000"))
    outputs = (Output("image", T.image),)

    def run(self, ctx, width=512, height=512, batch_size=1, color="#000000"):
        import torch

        rgb = parse_color(color)
        return {"image": torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)
                .repeat(batch_size, 1, height, width)}

NODES = (LoadImage, SaveImage, PreviewImage, ResizeImage, CropImage, PadImage, BlendImages,
         CompositeImages, PadForOutpaint, FillMaskedArea, ScaleToTotalPixels, InvertImage,
         EmptyImage)
