"""ComfyUI's schedules: every scheduler, sampler rule, step count and denoise of the
reference, for SD eps/v, SD3, AuraFlow-style and Flux model sampling, equal to 1e-6."""

from __future__ import annotations

import math

import pytest
import torch
from comfyref import model_sampling, needs_reference, schedules

from nodes.diffusion.ksampling.schedules import SCHEDULERS, ksampler_sigmas

KINDS = ("sd_eps", "sd_v", "sd3_shift3", "auraflow_shift3.1", "flux_1024")


@needs_reference
@pytest.mark.parametrize("kind", KINDS)
def test_model_sigma_range_is_comfyui_s(kind):
    ms = model_sampling(kind)
    lo, hi = schedules()[f"{kind}/_model_sigma_min_max"]
    assert float(ms.sigma_min) == pytest.approx(lo, rel=1e-6)
    assert float(ms.sigma_max) == pytest.approx(hi, rel=1e-6)


@needs_reference
@pytest.mark.parametrize("kind", KINDS)
def test_every_schedule_is_comfyui_s(kind):
    table = {k: v for k, v in schedules().items() if k.startswith(kind + "/")
             and "_model" not in k}
    names = {k.split("/")[1] for k in table}
    assert names == set(SCHEDULERS)
    ms = model_sampling(kind)
    for key, ref in table.items():
        _, scheduler, rule, steps, denoise = key.split("/")
        got = ksampler_sigmas(ms, scheduler, int(steps), float(denoise), rule == "discard")
        want = torch.tensor(ref, dtype=torch.float32)
        if want.isnan().any():  # kl_optimal at 1 step: ComfyUI's 0/0, ours the top sigma
            assert scheduler == "kl_optimal" and steps == "1"
            assert torch.isfinite(got).all() and got[0] == pytest.approx(float(ms.sigma_max))
            continue
        assert got.shape == want.shape, key
        assert torch.allclose(got, want, rtol=1e-6, atol=0), key


def test_denoise_counts_steps_as_comfyui():
    """img2img at denoise 0.6 and 4 steps: int(4 / 0.6) = 6 schedule steps, the last 4 run."""
    from nodes.diffusion.ksampling.modelsampling import discrete

    ms = discrete()
    full = ksampler_sigmas(ms, "normal", 6)
    part = ksampler_sigmas(ms, "normal", 4, 0.6)
    assert len(part) == 5 and torch.equal(part, full[-5:])
    assert len(ksampler_sigmas(ms, "normal", 4, 0.0)) == 0


def test_discrete_start_scale_and_nearest_timestep():
    from nodes.diffusion.ksampling.modelsampling import discrete

    ms = discrete()
    sig = ksampler_sigmas(ms, "normal", 4)
    assert [round(float(s), 3) for s in sig] == [14.615, 2.918, 0.932, 0.029, 0.0]
    assert ms.max_denoise(sig)
    noise, zero = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    x = ms.noise_scaling(sig[0], noise, zero, True)
    assert float(x) == pytest.approx(math.sqrt(1 + float(sig[0]) ** 2))
    assert ms.timestep(sig[:4]).tolist() == [999, 666, 333, 0]
    karras = ksampler_sigmas(ms, "karras", 6)
    assert ms.timestep(karras[2]).dtype == torch.int64


@needs_reference
def test_batch_noise_is_comfyui_s_draw():
    from comfyref import tensors

    from nodes.diffusion.walk import prepare_noise

    assert torch.equal(prepare_noise((2, 4, 8, 8), 42), tensors()["noise"])


def test_8_bit_output_truncates_as_comfyui_saves():
    import numpy as np

    from nodes._tensors import to_uint8

    x = torch.tensor([0.0, 0.999, 0.5, 1 / 255, 1.0, 1.5, -0.2]).view(1, 1, 1, 7)
    comfy = np.clip(255.0 * x[0].permute(1, 2, 0).numpy(), 0, 255).astype(np.uint8)
    assert to_uint8(x).tolist() == comfy.tolist()
    assert to_uint8(x)[0, :, 0].tolist() == [0, 254, 127, 1, 255, 255, 0]
