"""Finding model files and naming them for the model manager: below every loader, so
each imports these without importing another loader."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import InputError
from engine.modelpaths import Layout, ModelKind

CHECKPOINTS = ModelKind("checkpoints", comfyui_keys=("checkpoints",), with_kinds=("diffusers",),
                        description="single-file checkpoints (a picker also lists diffusers/)")
DIFFUSERS = ModelKind("diffusers", layout=Layout.top, markers=("model_index.json", "unet"),
                      comfyui_keys=("diffusers",), description="diffusers pipeline folders")
LORAS = ModelKind("loras", comfyui_keys=("loras",))
VAES = ModelKind("vae", comfyui_keys=("vae",))
DIFFUSION_MODELS = ModelKind("diffusion_models", comfyui_keys=("unet", "diffusion_models"),
                             description="a denoising model alone (UNet)")
TEXT_ENCODERS = ModelKind("text_encoders", comfyui_keys=("text_encoders", "clip"),
                          with_kinds=("clip",),
                          description="text encoders alone: CLIP-L, CLIP-G, T5 (a picker "
                          "also lists clip/)")
CLIP_FILES = ModelKind("clip", comfyui_keys=("clip",),
                       description="text encoders alone (ComfyUI's older folder name)")


def find(ctx, kind: ModelKind, name: str, input_name: str) -> Path:
    if not name:
        raise InputError(input_name, f"the name of a model in your {kind} folder", name)
    try:
        return ctx.models.paths.find(kind, name)
    except LookupError as exc:
        raise InputError(input_name, f"a model in your {kind} folder", name,
                         hint=str(exc)) from None


def model_key(prefix: str, path: Path, *extra: str) -> str:
    """The model manager's key for a file: kind, path and modification time (a changed
    file loads anew), plus whatever else changes what is loaded (the dtype)."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = 0
    return ":".join([prefix, str(path), str(stamp), *extra])
