"""ComfyUI's samplers over sigmas (k-diffusion's algorithms, which ComfyUI runs): every
KSampler name, each a function `(run, x) -> x` that walks `run.sigmas` from the first to the
last, calling `run.model(x, sigma)` for the denoised estimate.

The table `SAMPLERS` names them; `DISCARD_PENULTIMATE` the samplers whose schedule ComfyUI
computes one step longer and drops the second-to-last sigma of."""

from __future__ import annotations

import importlib

from .base import Run, Sampler

__all__ = ["DISCARD_PENULTIMATE", "NAMES", "SAMPLERS", "Run", "Sampler"]
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

# ComfyUI's KSampler.SAMPLERS order (the Sampler node's choice list)
NAMES = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "ddim", "uni_pc", "uni_pc_bh2")

# each module holds a SAMPLERS dict of its own: name -> sampler
_MODULES = ("basic", "singlestep", "multistep", "dpm_solver", "unipc", "ancestral", "sde",
            "sa_solver")


def _table() -> dict[str, Sampler]:
    found: dict[str, Sampler] = {}
    for name in _MODULES:
        found.update(importlib.import_module(f"{__name__}.{name}").SAMPLERS)
    return {n: found[n] for n in NAMES if n in found}


SAMPLERS: dict[str, Sampler] = _table()
