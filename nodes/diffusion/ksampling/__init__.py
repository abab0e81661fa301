"""ComfyUI's samplers over sigmas (k-diffusion's algorithms, which ComfyUI runs): every
KSampler name, each a function `(run, x) -> x` that walks `run.sigmas` from the first to the
last, calling `run.model(x, sigma)` for the denoised estimate.

The table `SAMPLERS` names them; `DISCARD_PENULTIMATE` the samplers whose schedule ComfyUI
computes one step longer and drops the second-to-last sigma of."""

from __future__ import annotations

import importlib

from engine.comfyui.table import COMFY_SAMPLERS

from .base import Run, Sampler

__all__ = ["DISCARD_PENULTIMATE", "NAMES", "SAMPLERS", "Run", "Sampler"]
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

# ComfyUI's KSampler.SAMPLERS order (the Sampler node's choice list)
NAMES = COMFY_SAMPLERS

# each module holds a SAMPLERS dict of its own: name -> sampler
_MODULES = ("basic", "singlestep", "multistep", "dpm_solver", "unipc", "ancestral", "sde",
            "sa_solver")


def _table() -> dict[str, Sampler]:
    found: dict[str, Sampler] = {}
    for name in _MODULES:
        found.update(importlib.import_module(f"{__name__}.{name}").SAMPLERS)
    return {n: found[n] for n in NAMES if n in found}


SAMPLERS: dict[str, Sampler] = _table()
