"""The Sampler on a real (tiny, random-weight) SD1.5 checkpoint gives what ComfyUI's
KSampler computes: checked against ComfyUI's loop written out by hand from its rules
(schedule over the model's sigmas, one seeded noise draw per batch, start scaled by
sqrt(1 + sigma0^2), the UNet at the nearest integer timestep, CFG, Euler steps)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine import Graph

pytestmark = pytest.mark.slow

PROMPT = "a red circle on the left, grey background"


def graph(*, seed=1, steps=4, cfg=7.0, sampler="euler", scheduler="normal", batch=2,
          denoise=1.0, cut=None):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15.safetensors")
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
    lat = g.add("empty_latent", "lat", width=64, height=64, batch_size=batch)["latent"]
    if cut is not None:
        lat = g.add("latent_from_batch", "cut", latent=lat, batch_index=cut, length=1)["latent"]
    g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
          negative=neg["conditioning"], latent=lat, seed=seed, steps=steps, cfg=cfg,
          sampler=sampler, scheduler=scheduler, denoise=denoise)
    return g


def comfy_normal_sigmas(steps: int) -> list[float]:
    """ComfyUI's `normal` schedule for SD's betas, from its definition (float64 here)."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    log_sigmas = np.log(((1 - ac) / ac) ** 0.5)
    out = []
    for t in np.linspace(999, 0, steps):
        lo, hi = int(np.floor(t)), int(np.ceil(t))
        w = t - lo
        out.append(float(np.exp((1 - w) * log_sigmas[lo] + w * log_sigmas[hi])))
    return out + [0.0], log_sigmas


def test_euler_normal_is_comfyui_s_loop(model_executor):
    from nodes.diffusion.models import components

    r = model_executor.run(graph(), ["s", "pos", "neg", "ck"])
    assert r.ok, r.failures
    ours = r["s"]["latent"].samples
    comps = components(SimpleNamespace(models=model_executor.models), r["ck"]["model"])
    sigmas, log_sigmas = comfy_normal_sigmas(4)
    emb = torch.cat([r["neg"]["conditioning"].embeds.repeat(2, 1, 1),
                     r["pos"]["conditioning"].embeds.repeat(2, 1, 1)])
    noise = torch.randn([2, 4, 8, 8], generator=torch.manual_seed(1))  # one draw, batch 2
    x = noise * math.sqrt(1 + sigmas[0] ** 2)
    with torch.no_grad():
        for s, s_next in zip(sigmas, sigmas[1:], strict=False):
            t = int(np.abs(math.log(s) - log_sigmas).argmin())  # nearest integer timestep
            xin = torch.cat([x, x]) / math.sqrt(s * s + 1)
            eps = comps.unet(xin, torch.tensor(float(t)), encoder_hidden_states=emb).sample
            uncond, cond = eps.chunk(2)
            den = x - (uncond + 7.0 * (cond - uncond)) * s
            x = x + (x - den) / s * (s_next - s)
    assert [round(v, 3) for v in sigmas[:4]] == [14.615, 2.918, 0.932, 0.029]
    assert (ours - x).abs().max().item() < 1e-4
    assert not torch.equal(ours[0], ours[1])


def test_image_k_of_a_batch_comes_out_the_same_alone(model_executor):
    # an ancestral sampler's step noise must follow the image too
    sampler = "euler_ancestral" if "euler_ancestral" in _samplers() else "euler"
    whole = model_executor.run(graph(batch=3, sampler=sampler), ["s"])
    alone = model_executor.run(graph(batch=3, cut=2, sampler=sampler), ["s"])
    assert whole.ok and alone.ok, (whole.failures, alone.failures)
    a, b = whole["s"]["latent"].samples, alone["s"]["latent"].samples
    scale = a.abs().max().item()  # the UNet's batch-size rounding is relative
    assert b.shape[0] == 1 and (a[2:3] - b).abs().max().item() < 1e-5 * scale
    assert (a[1:2] - b).abs().max().item() > 1e-2 * scale


def test_batch_noise_is_one_draw_as_comfyui():
    from nodes.diffusion.walk import prepare_noise

    whole = prepare_noise((4, 4, 8, 8), 42)
    assert torch.equal(whole, torch.randn([4, 4, 8, 8], generator=torch.manual_seed(42)))
    assert torch.equal(prepare_noise((2, 4, 8, 8), 42, (1, 3)), whole[[1, 3]])


def _samplers():
    from nodes.diffusion.ksampling import SAMPLERS

    return SAMPLERS


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde"])
def test_step_noise_of_a_cut_latent_is_its_rows_of_the_batch_s(sampler):
    """Step noise (ComfyUI's seed + 1 draws and Brownian trees) follows batch_index."""
    from nodes.diffusion.ksampling import SAMPLERS, Run
    from nodes.diffusion.ksampling.modelsampling import discrete
    from nodes.diffusion.ksampling.schedules import ksampler_sigmas

    ms = discrete()
    sigmas = ksampler_sigmas(ms, "karras", 5)

    def ideal(x, s):
        s = s.reshape(-1, 1, 1, 1)
        return x * 0.25 / (0.25 + s * s)

    start = torch.randn([3, 4, 8, 8], generator=torch.manual_seed(3)) * float(sigmas[0])
    whole = SAMPLERS[sampler](Run(ideal, sigmas, ms, seed=5), start)
    indexed = SAMPLERS[sampler](Run(ideal, sigmas, ms, seed=5, batch_index=(0, 1, 2)), start)
    cut = SAMPLERS[sampler](Run(ideal, sigmas, ms, seed=5, batch_index=(2,)), start[2:])
    assert torch.equal(whole, indexed)
    assert torch.allclose(cut, whole[2:], atol=1e-6)
    alone = SAMPLERS[sampler](Run(ideal, sigmas, ms, seed=5), start[2:])
    assert not torch.allclose(alone, whole[2:], atol=1e-3)  # ComfyUI's fresh draw
