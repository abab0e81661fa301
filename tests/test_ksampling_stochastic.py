"""The stochastic samplers (ancestral, SDE, SA-Solver, DDPM, LCM) give ComfyUI 0.33's final
latents on its own step noise for seed 42 (every reference kind, scheduler, txt2img and
img2img); their noise samplers draw what ComfyUI draws on the CPU; the CFG++ variants step
along the unconditional estimate when guided and take the plain step when not."""

from __future__ import annotations

import functools

import comfyref
import pytest
import torch

from nodes.diffusion.ksampling import SAMPLERS, Run, ancestral, sde
from nodes.diffusion.ksampling import noise as ksnoise
from nodes.diffusion.ksampling.basic import euler

STEP_NOISE = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm", "lcm",
              "res_multistep_ancestral", "er_sde", "seeds_2", "seeds_3", "exp_heun_2_x0_sde",
              "sa_solver", "sa_solver_pece")
BROWNIAN = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde")
GPU_NAMES = tuple(f"{name}_gpu" for name in BROWNIAN)
CFG_PP = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp",
          "res_multistep_ancestral_cfg_pp")

def _cases(names):
    for name in names:
        for key in comfyref.keys_for(name):
            yield pytest.param(key, id=key)


@comfyref.needs_reference
@pytest.mark.parametrize("key", list(_cases(STEP_NOISE)))
def test_step_noise_samplers_match_comfyui(key):
    ours, theirs = comfyref.run_reference(key)
    assert (ours - theirs).abs().max().item() <= 1e-5, key


@comfyref.needs_reference
@pytest.mark.parametrize("key", list(_cases(BROWNIAN)))
def test_brownian_tree_samplers_match_comfyui(key):
    ours, theirs = comfyref.run_reference(key)
    assert (ours - theirs).abs().max().item() <= 1e-4, key


@comfyref.needs_reference
def test_the_gpu_names_are_the_cpu_tree_samplers():
    """ComfyUI's _gpu samplers only keep the tree on the latent's device: on the CPU (where
    Loom's tree always is) they gave the same latents, so they are the same samplers."""
    tensors = comfyref.tensors()
    for name in GPU_NAMES:
        base = name.removesuffix("_gpu")
        assert SAMPLERS[name] is SAMPLERS[base]
        for key in comfyref.keys_for(name):
            assert torch.equal(tensors[key], tensors[key.replace(name, base, 1)]), key


def test_every_stochastic_name_is_in_the_table():
    assert set(STEP_NOISE + BROWNIAN + GPU_NAMES + CFG_PP) <= set(SAMPLERS)


# ---- CFG++ ---------------------------------------------------------------------------

# each CFG++ sampler and the plain sampler it becomes without guidance (uncond None), on
# the kinds where the two are one update: Euler ancestral CFG++ splits its step in sigma /
# alpha space, which only for discrete models is the plain ancestral split
PLAIN = {
    "euler_cfg_pp": ("euler", ("sd_eps", "sd3_shift3", "flux_1024")),
    "euler_ancestral_cfg_pp": ("euler_ancestral", ("sd_eps",)),
    "dpmpp_2s_ancestral_cfg_pp": ("dpmpp_2s_ancestral", ("sd_eps", "sd3_shift3", "flux_1024")),
    "res_multistep_ancestral_cfg_pp": ("res_multistep_ancestral",
                                       ("sd_eps", "sd3_shift3", "flux_1024")),
}


@comfyref.needs_reference
@pytest.mark.parametrize("name", CFG_PP)
def test_cfg_pp_without_guidance_is_the_plain_sampler(name):
    plain, kinds = PLAIN[name]
    keys = [k for k in comfyref.keys_for(plain) if k.split("/")[0] in kinds]
    assert keys
    for key in keys:
        ours, theirs = comfyref.run_reference(key, SAMPLERS[name])
        assert (ours - theirs).abs().max().item() <= 1e-5, key


def _guided_run(sigmas, uncond_prompt=True):
    """A toy guided model: the ideal denoiser as the conditional estimate, a damped one as
    the unconditional (or the conditional again: an unconditional prompt equal to the
    prompt), mixed with CFG 3 and the unconditional left on the run; uncond_prompt None:
    not guiding."""
    cond = comfyref.ideal_denoiser(False)
    run = Run(None, sigmas, comfyref.model_sampling("sd_eps"), seed=42)

    def model(x, sigma):
        c = cond(x, sigma)
        u = 0.7 * c + 0.1 if uncond_prompt else c
        run.uncond = None if uncond_prompt is None else u
        return u + 3.0 * (c - u)

    run.model = model
    return run


def _start(sigma0=14.6146):
    return torch.randn([1, 4, 8, 8], generator=torch.manual_seed(3)) * (1 + sigma0 ** 2) ** 0.5


@pytest.mark.parametrize("name", CFG_PP)
def test_cfg_pp_steps_along_the_unconditional_estimate(name):
    sigmas = torch.tensor([14.6146, 5.0924, 1.1629, 0.2, 0.0])
    guided = SAMPLERS[name](_guided_run(sigmas), _start())
    same = SAMPLERS[name](_guided_run(sigmas, uncond_prompt=False), _start())
    unguided = SAMPLERS[name](_guided_run(sigmas, uncond_prompt=None), _start())
    assert torch.allclose(same, unguided, atol=1e-5)
    assert (guided - same).abs().max() > 1e-2


def test_euler_cfg_pp_renoises_along_the_unconditional_direction():
    sigmas = torch.tensor([5.0, 2.0])
    x = _start(5.0)
    run = _guided_run(sigmas)
    out = SAMPLERS["euler_cfg_pp"](run, x)
    denoised = run.model(x, sigmas[:1])
    uncond = run.uncond
    assert torch.allclose(out, denoised + (x - uncond) * 2.0 / 5.0, atol=1e-5)
    assert not torch.allclose(out, euler(_guided_run(sigmas), x), atol=1e-3)


# ---- noise samplers ------------------------------------------------------------------

def test_default_noise_is_comfyuis_cpu_generator_seeded_with_seed_plus_one():
    x = torch.zeros([2, 4, 8, 8])
    draw = ksnoise.default_noise_sampler(x, seed=42)
    g = torch.Generator().manual_seed(43)
    first, second = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    assert torch.equal(draw(1.0, 0.5), first) and torch.equal(draw(0.5, 0.1), second)


def test_brownian_tree_increments_are_one_path():
    x = torch.zeros([2, 4, 8, 8])
    tree = ksnoise.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=42)
    a, b, c = torch.tensor(9.0), torch.tensor(2.0), torch.tensor(0.5)
    whole = tree(a, c) * (a - c).sqrt()
    parts = tree(a, b) * (a - b).sqrt() + tree(b, c) * (b - c).sqrt()
    assert torch.allclose(whole, parts, atol=1e-5)
    again = ksnoise.BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=42)
    assert torch.equal(again(b, c), tree(b, c))
    assert 0.8 < tree(a, b).std().item() < 1.2


@pytest.mark.parametrize("name", ("euler_ancestral", "dpmpp_2m_sde", "seeds_3", "sa_solver"))
def test_a_runs_noise_sampler_replaces_the_default(name):
    sigmas = torch.tensor([14.6146, 5.0924, 1.1629, 0.2, 0.0])
    calls = []

    def zeros(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.zeros([1, 4, 8, 8])

    run = Run(comfyref.ideal_denoiser(False), sigmas, comfyref.model_sampling("sd_eps"),
              seed=42, noise_sampler=zeros)
    quiet = SAMPLERS[name](run, _start())
    loud = SAMPLERS[name](Run(run.model, sigmas, run.ms, seed=42), _start())
    assert calls and (quiet - loud).abs().max() > 1e-3


def test_eta_zero_samplers_are_deterministic():
    sigmas = torch.tensor([14.6146, 5.0924, 1.1629, 0.2, 0.0])
    ms = comfyref.model_sampling("sd_eps")
    for fn in (functools.partial(ancestral.euler_ancestral, eta=0.0),
               functools.partial(sde.dpmpp_sde, eta=0.0),
               functools.partial(sde.seeds_2, eta=0.0)):
        a = fn(Run(comfyref.ideal_denoiser(False), sigmas, ms, seed=1), _start())
        b = fn(Run(comfyref.ideal_denoiser(False), sigmas, ms, seed=2), _start())
        assert torch.equal(a, b)
    assert not torch.equal(
        ancestral.euler_ancestral(Run(comfyref.ideal_denoiser(False), sigmas, ms, seed=1),
                                  _start()),
        ancestral.euler_ancestral(Run(comfyref.ideal_denoiser(False), sigmas, ms, seed=2),
                                  _start()))
