"""Conversions between Pillow images and Loom's IMAGE / MASK tensors, and colour parsing."""

from __future__ import annotations

from typing import Any

from engine.errors import InputError


def pil_to_tensors(img: Any) -> tuple[Any, Any]:
    """A Pillow image -> (IMAGE [1,3,H,W], MASK [1,1,H,W]); mask = 1 - alpha (transparent
    pixels are the ones to change), zeros when there is no alpha."""
    import numpy as np
    import torch

    alpha = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32) / (65535.0 if img.mode.startswith("I;16") else
                                                   max(1.0, float(np.asarray(img).max())))
        image = torch.from_numpy(arr)[None, None].expand(1, 3, *arr.shape).contiguous()
    else:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa")
        # channels first while still 8-bit, then one float copy scaled in place
        u8 = np.asarray(img.convert("RGBA" if has_alpha else "RGB")).transpose(2, 0, 1)
        u8 = torch.from_numpy(np.ascontiguousarray(u8))
        image = u8[:3][None].float().div_(255.0)
        if has_alpha:
            alpha = u8[3][None, None].float().div_(255.0)
    h, w = image.shape[-2:]
    if alpha is None:
        mask = torch.zeros(1, 1, h, w)
    else:
        mask = alpha.neg_().add_(1.0)
    return image, mask


def to_uint8(image: Any, index: int = 0) -> Any:
    """One image of an IMAGE batch -> a contiguous H x W x C uint8 array (what OpenCV and
    Pillow take), channels as they are. Values are truncated, not rounded, as ComfyUI saves
    (`uint8(clip(255 * x))`), so the same image gives the same PNG; 8-bit values loaded
    from a file still come back exactly."""
    import numpy as np

    # one float copy (clamp), scaled in place; byte() truncates
    arr = image[index].detach().float().clamp(0, 1).mul_(255).byte().permute(1, 2, 0)
    return np.ascontiguousarray(arr.cpu().numpy())


def tensor_to_pil(image: Any, index: int = 0) -> Any:
    """One image of an IMAGE batch -> an RGB Pillow image (8 bits per channel)."""
    from PIL import Image

    arr = to_uint8(image, index)
    if arr.shape[2] == 1:
        return Image.fromarray(arr[..., 0], "L")
    return Image.fromarray(arr[..., :3], "RGB")


def parse_color(text: str, input_name: str = "color") -> tuple[float, float, float]:
    """'#rrggbb', '#rgb', 'r,g,b' (0-255) or a CSS colour name -> floats 0..1."""
    from PIL import ImageColor

    s = text.strip()
    try:
        if "," in s:
            parts = [float(p) for p in s.split(",")]
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError
            r, g, b = parts
        else:
            r, g, b = ImageColor.getrgb(s)[:3]
    except ValueError:
        raise InputError(input_name, "a colour such as '#ff8800', '255,136,0' or 'orange'",
                         text) from None
    return r / 255.0, g / 255.0, b / 255.0


def check_image(value: Any, name: str) -> Any:
    import torch

    if not (isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[1] in (1, 3, 4)):
        raise InputError(name, "an IMAGE tensor [batch, 3, height, width]", value)
    return value


def check_mask(value: Any, name: str) -> Any:
    import torch

    if not (isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[1] == 1):
        raise InputError(name, "a MASK tensor [batch, 1, height, width]", value)
    return value


def luminance(image: Any) -> Any:
    """Rec. 709 luma of an RGB batch, as [B, 1, H, W]."""
    return 0.2126 * image[:, 0:1] + 0.7152 * image[:, 1:2] + 0.0722 * image[:, 2:3]


def same_size(image: Any, other: Any, name: str) -> None:
    """Refuse an input whose size differs from the image's, naming both sizes."""
    if tuple(other.shape[-2:]) != tuple(image.shape[-2:]):
        raise InputError(name, f"the image's size ({size_of(image)})", size_of(other))


def size_of(t: Any) -> str:
    return f"{t.shape[-1]}x{t.shape[-2]}"


def match_batch(a: Any, b: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    """Broadcast a batch of one against a batch of n; refuse other mismatches clearly."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if a.shape[0] == 1:
        return a.expand(b.shape[0], *a.shape[1:]), b
    if b.shape[0] == 1:
        return a, b.expand(a.shape[0], *b.shape[1:])
    raise InputError(names[1], f"a batch of 1 or {a.shape[0]} (like {names[0]})",
                     f"a batch of {b.shape[0]}")
