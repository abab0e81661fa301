"""Diffusion core with tiny random-weight models loaded through the user-facing code:
parity with diffusers' own pipelines, caching, cancellation, out-of-memory handling."""

import threading

import pytest
import torch

from engine import CancelToken, Graph
from engine.runtime import generator_for

pytestmark = pytest.mark.slow

PROMPT = "a red circle on the left, grey background"


def txt2img(ckpt="tiny-sd15.safetensors", *, seed=42, steps=8, cfg=7.5, sampler="euler",
            scheduler="normal", batch=1, prompt=PROMPT, negative="", size=64):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name=ckpt)
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=prompt)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text=negative)
    lat = g.add("empty_latent", "lat", width=size, height=size, batch_size=batch)
    s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
              negative=neg["conditioning"], latent=lat["latent"], seed=seed, steps=steps,
              cfg=cfg, sampler=sampler, scheduler=scheduler)
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    return g


def pipeline(tiny_models, cls_name="StableDiffusionPipeline"):
    import diffusers

    from nodes.diffusion.loading import quiet

    quiet()
    cls = getattr(diffusers, cls_name)
    pipe = cls.from_pretrained(tiny_models / "diffusers" / "tiny-sd15", safety_checker=None,
                               requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def use_sampler(pipe, sampler):
    from nodes.diffusion.sampling import make_scheduler

    pipe.scheduler = make_scheduler(dict(pipe.scheduler.config), sampler)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "ddim", "uni_pc",
                                     "heun", "dpmpp_2m_sde", "lcm"])
def test_txt2img_matches_diffusers_pipeline(tiny_models, model_executor, sampler):
    """The `diffusers` scheduler samples as diffusers' pipelines do."""
    g = txt2img(sampler=sampler, scheduler="diffusers", batch=2)
    r = model_executor.run(g)
    assert r.ok, r.failures
    ours = r["out"]["ui"]["images"]
    pipe = pipeline(tiny_models)
    use_sampler(pipe, sampler)
    ref = pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=8,
               guidance_scale=7.5, num_images_per_prompt=2, output_type="pt",
               generator=[generator_for(42, i) for i in range(2)]).images
    assert ours.shape == ref.shape == (2, 3, 64, 64)
    assert (ours - ref).abs().max().item() < 1e-4
    assert not torch.equal(ours[0], ours[1])  # batch entries get their own noise


def test_img2img_matches_diffusers_pipeline(tiny_models, model_executor):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")  # the diffusers folder
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
    src = g.add("solid_mask", "m", value=0.7, width=64, height=64)
    img = g.add("mask_to_image", "img", mask=src["mask"])
    enc = g.add("vae_encode", "enc", vae=ck["vae"], image=img["image"])
    s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
              negative=neg["conditioning"], latent=enc["latent"], seed=7, steps=10, cfg=5.0,
              sampler="dpmpp_2m", scheduler="diffusers", denoise=0.6)
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    r = model_executor.run(g, ["out", "enc"])
    assert r.ok, r.failures
    pipe = pipeline(tiny_models, "StableDiffusionImg2ImgPipeline")
    use_sampler(pipe, "dpmpp_2m")
    latents = r["enc"]["latent"].samples
    ref = pipe(PROMPT, image=latents, negative_prompt="", strength=0.6, num_inference_steps=10,
               guidance_scale=5.0, output_type="pt", generator=[generator_for(7, 0)]).images
    assert (r["out"]["ui"]["images"] - ref).abs().max().item() < 1e-4


def test_single_file_and_folder_give_the_same_image(model_executor):
    a = model_executor.run(txt2img("tiny-sd15.safetensors"))["out"]["ui"]["images"]
    b = model_executor.run(txt2img("tiny-sd15"))["out"]["ui"]["images"]
    assert torch.equal(a, b)


def test_seed_reproduces_and_differs(model_executor):
    from engine import Executor

    a = model_executor.run(txt2img(seed=1))["out"]["ui"]["images"]
    fresh = Executor(models=model_executor.models)  # no output cache: recomputed
    b = fresh.run(txt2img(seed=1))["out"]["ui"]["images"]
    c = model_executor.run(txt2img(seed=2))["out"]["ui"]["images"]
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3


def test_rerun_after_seed_or_prompt_change_loads_no_model(model_executor):
    g = txt2img(seed=1)
    model_executor.run(g)
    loads = model_executor.models.loads
    g.set_param("s", "seed", 99)
    r = model_executor.run(g)
    assert set(r.computed) == {"s", "d", "out"}
    g.set_param("pos", "text", "a blue square at the top")
    r = model_executor.run(g)
    assert set(r.computed) == {"pos", "s", "d", "out"}
    assert model_executor.models.loads == loads


def test_cancel_mid_sampling_returns_within_a_step(model_executor, monkeypatch):
    from diffusers import UNet2DConditionModel

    g = txt2img(steps=200)
    model_executor.run(g, ["lat", "pos", "neg"])  # warm: only sampling remains
    token = CancelToken()
    real = UNet2DConditionModel.forward
    calls = []

    def counting(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            token.cancel()  # as if Stop were pressed during the third step
        return real(self, *a, **k)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    r = model_executor.run(g, cancel=token)
    assert r.status == "cancelled"
    assert len(calls) == 3  # the step in flight finished; no further step began


def test_progress_carries_latent_previews(model_executor, events):
    events.attach(model_executor)
    model_executor.run(txt2img(steps=4, seed=5))
    previews = [e.preview for e in events.named("progress") if e.node == "s" and
                e.preview is not None]
    assert previews and previews[0].shape == (1, 3, 8, 8)


def test_out_of_memory_retries_once_then_fails_clearly(model_executor, monkeypatch):
    from diffusers import UNet2DConditionModel

    real = UNet2DConditionModel.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *a, **k)

    from engine.runtime import models as runtime_models

    offloaded = []
    real_enter = runtime_models.sequential_offload.__enter__

    def spy(self):
        offloaded.append(self.module)
        return real_enter(self)

    monkeypatch.setattr(runtime_models.sequential_offload, "__enter__", spy)
    monkeypatch.setattr(UNet2DConditionModel, "forward", flaky)
    reference = model_executor.run(txt2img(seed=11, steps=3, cfg=7.0))
    assert reference.ok and calls["n"] == 4  # one failure, retried, then two more steps
    # the failed step and the two after it ran offloaded; the node's next run tries again
    assert len(offloaded) == 3 and isinstance(offloaded[0], UNet2DConditionModel)
    monkeypatch.setattr(UNet2DConditionModel, "forward", real)
    from engine import Executor

    plain = Executor(models=model_executor.models).run(txt2img(seed=11, steps=3, cfg=7.0))
    assert torch.allclose(plain["out"]["ui"]["images"], reference["out"]["ui"]["images"],
                          atol=1e-5)  # the offloaded step computed the same thing
    monkeypatch.setattr(UNet2DConditionModel, "forward", flaky)

    def always(self, *a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(UNet2DConditionModel, "forward", always)
    r = model_executor.run(txt2img(seed=12, steps=3))
    f = r.failures["s"]
    assert "ran out of memory" in f.message and "smaller width" in f.message


def test_prompt_weighting_and_long_prompts(model_executor):
    def embeds(text, weighting="comfyui"):
        g = Graph()
        ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
        g.add("text_encode", "t", clip=ck["clip"], text=text, weighting=weighting)
        return model_executor.run(g, ["t"])["t"]["conditioning"].embeds

    # ComfyUI's weighting: weighted tokens move away from the empty prompt's embedding
    plain, empty = embeds("a red circle"), embeds("")
    doubled = embeds("(a red circle:2)")
    n = 1 + 3  # start token + three word tokens (the tiny vocabulary spells words whole)
    if not torch.allclose(doubled[:, 1:n], (plain[:, 1:n] - empty[:, 1:n]) * 2 + empty[:, 1:n],
                          atol=1e-5):
        n = None  # words of several tokens: compare where the weights differ from 1
        diff = (doubled - plain).abs().amax(-1)[0]
        moved = torch.nonzero(diff > 1e-6).flatten()
        want = (plain - empty) * 2 + empty
        assert torch.allclose(doubled[:, moved], want[:, moved], atol=1e-5)
    assert not torch.allclose(embeds("[red]"), embeds("red"))  # literal brackets in ComfyUI
    assert not torch.allclose(embeds("a [red] circle", "a1111"), embeds("a red circle"))

    plain = embeds("a red circle")
    assert plain.shape == (1, 77, 32)
    assert torch.equal(embeds("a (red:1.0) circle"), plain)
    assert not torch.allclose(embeds("a (red:1.5) circle"), plain)
    long = embeds(" ".join(["word"] * 30))  # 30 words of 5 byte-tokens: 150 tokens
    assert long.shape == (1, 77 * 2, 32)


def test_empty_latent_needs_multiples_of_8(model_executor):
    g = Graph()
    g.add("empty_latent", "l", width=100, height=64)
    f = model_executor.run(g, ["l"]).failures["l"]
    assert f.input == "width" and f.expected == "a multiple of 8" and "96 or 104" in f.hint


def test_missing_and_unsupported_checkpoints_fail_clearly(tiny_models, model_executor):
    g = Graph()
    g.add("load_checkpoint", "ck", ckpt_name="nope.safetensors")
    f = model_executor.run(g, ["ck"]).failures["ck"]
    assert f.input == "ckpt_name" and "nope.safetensors" in f.got and "looked in" in f.hint
    from safetensors.torch import save_file

    save_file({"some.weight": torch.zeros(2)}, tiny_models / "checkpoints" / "odd.safetensors")
    g.set_param("ck", "ckpt_name", "odd.safetensors")
    f = model_executor.run(g, ["ck"]).failures["ck"]
    assert "Stable Diffusion 1.x, 2.x or SDXL" in f.message and "odd.safetensors" in f.message


def test_ckpt_files_load_only_with_weights_only(tiny_models, tmp_path):
    from safetensors.torch import load_file

    from nodes.diffusion.loading import read_state_dict

    state = load_file(tiny_models / "checkpoints" / "tiny-sd15.safetensors")
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": state}, good)
    assert read_state_dict(good).keys() == state.keys()

    class Evil:
        def __reduce__(self):
            return (exec, ("import os; os.environ['LOOM_PWNED'] = '1'",))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"x": Evil()}}, bad)
    from engine.errors import InputError

    with pytest.raises(InputError, match="weights_only=True"):
        read_state_dict(bad)
    import os

    assert "LOOM_PWNED" not in os.environ


def test_every_sampler_runs_on_every_comfyui_schedule_and_diffusers_names_its_own(
        model_executor):
    """Pairs that diffusers' schedulers refused (karras with ddim, exponential with lcm)
    run; the `diffusers` scheduler refuses, by name, a sampler it has no scheduler for."""
    from nodes.diffusion.sampling import DIFFUSERS_SAMPLERS, SAMPLERS

    for sampler, scheduler in (("ddim", "karras"), ("euler_ancestral", "exponential"),
                               ("lcm", "karras")):
        if sampler in SAMPLERS:
            r = model_executor.run(txt2img(sampler=sampler, scheduler=scheduler, steps=2))
            assert r.ok, (sampler, scheduler, r.failures)
    other = next((n for n in SAMPLERS if n not in DIFFUSERS_SAMPLERS), None)
    if other is not None:
        f = model_executor.run(txt2img(sampler=other, scheduler="diffusers")).failures["s"]
        assert f.input == "sampler" and other in f.got


def test_models_stay_loaded_across_threads(model_executor):
    out = {}

    def work():
        out["r"] = model_executor.run(txt2img(seed=3, steps=2))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["r"].ok and model_executor.models.loads <= 2


def test_model_manager_keeps_models_within_a_budget():
    import torch

    from engine.runtime.device import choose
    from engine.runtime.models import ModelManager, module_bytes

    def model():
        return torch.nn.Linear(100, 100)  # 40 400 bytes

    size = module_bytes(model())
    mm = ModelManager(device=choose("cpu"), budget_bytes=int(size * 2.5))
    a = mm.get("a", model)
    assert mm.get("a", model) is a and mm.loads == 1  # loaded once, then resident
    mm.get("b", model)
    mm.get("a", model)  # a is now the most recently used
    mm.get("c", model)  # over budget: b, the least recently used, goes
    assert mm.is_loaded("a") and mm.is_loaded("c") and not mm.is_loaded("b")
    mm.get("b", model)
    assert mm.loads == 4 and mm.summary()["loads"] == 4


@pytest.mark.parametrize("ckpt", ["tiny-sdxl", "tiny-sdxl.safetensors"])
def test_sdxl_txt2img_matches_diffusers_pipeline(tiny_models, model_executor, ckpt):
    from diffusers import StableDiffusionXLPipeline

    from nodes.diffusion.loading import quiet

    g = txt2img(ckpt, sampler="dpmpp_2m", scheduler="diffusers", batch=2, cfg=5.0,
                prompt="a (blue:1.0) square at the top")
    r = model_executor.run(g)
    assert r.ok, r.failures
    quiet()
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_models / "diffusers" / "tiny-sdxl",
                                                     local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    use_sampler(pipe, "dpmpp_2m")
    ref = pipe("a blue square at the top", negative_prompt="", height=64, width=64,
               num_inference_steps=8, guidance_scale=5.0, num_images_per_prompt=2,
               output_type="pt", generator=[generator_for(42, i) for i in range(2)]).images
    assert (r["out"]["ui"]["images"] - ref).abs().max().item() < 1e-4


def test_sdxl_conditioning_has_both_encoders_and_pooled(model_executor):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sdxl")
    g.add("text_encode", "t", clip=ck["clip"], text="a cat")
    c = model_executor.run(g, ["t"])["t"]["conditioning"]
    assert c.embeds.shape == (1, 77, 32 + 48) and c.pooled.shape == (1, 48)


def test_tiled_vae_decode_has_no_seams(model_executor):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
    lat = g.add("solid_mask", "m", value=0.5, width=256, height=256)
    img = g.add("mask_to_image", "i", mask=lat["mask"])
    enc = g.add("vae_encode", "e", vae=ck["vae"], image=img["image"])
    plain = g.add("vae_decode", "plain", vae=ck["vae"], latent=enc["latent"])
    tiled = g.add("vae_decode", "tiled", vae=ck["vae"], latent=enc["latent"], tiled=True)
    r = model_executor.run(g, [plain.id, tiled.id])
    a, b = r["plain"]["image"], r["tiled"]["image"]
    assert a.shape == b.shape == (1, 3, 256, 256)
    assert not torch.equal(a, b)  # it really was decoded in tiles
    # diffusers' tiles are 64 px here, placed every 48 px and blended: the step across a
    # tile border must look like any other step in the image, not like an edge
    cols = (b[..., 1:] - b[..., :-1]).abs().mean(dim=(0, 1, 2))
    borders = cols[[47, 95, 143, 191]]
    assert borders.max() < 2 * cols.median()


def test_channels_last_setting_gives_the_same_image(tiny_models, model_executor):
    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.device import choose
    from engine.runtime.models import ModelManager

    plain = model_executor.run(txt2img(seed=21))["out"]["ui"]["images"]
    mm = ModelManager(device=choose("cpu", channels_last=True),
                      paths=ModelFolders([tiny_models], use_env=False, use_config=False))
    cl = Executor(models=mm).run(txt2img(seed=21))["out"]["ui"]["images"]
    assert torch.allclose(plain, cl, atol=1e-4)


def test_loom_run_text_to_image_and_rerun_in_a_new_process(tiny_models, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, LOOM_MODELS="")
    args = [sys.executable, "-m", "app.cli", "run", str(root / "resources/workflows/txt2img.json"),
            "--models", str(tiny_models), "--set", "ckpt.ckpt_name=tiny-sd15.safetensors",
            "--set", "latent.width=64", "--set", "latent.height=64", "--set", "sampler.steps=3",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--events", "json"]
    first = subprocess.run(args, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert any(e["event"] == "progress" and e["node"] == "sampler" for e in events)
    [png] = events[-1]["files"]
    from PIL import Image

    assert Image.open(png).size == (64, 64)
    second = subprocess.run(args, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    plan = json.loads(second.stdout.splitlines()[0])["plan"]
    assert plan == {"run": [], "cached": ["save"]}  # nothing computed, no model loaded


@pytest.mark.parametrize("name", ["txt2img", "controlnet_canny", "inpaint", "outpaint"])
def test_example_workflows_run_with_tiny_models(model_executor, tmp_path, name):
    from pathlib import Path

    from engine import load

    root = Path(__file__).resolve().parent.parent
    g = load(root / "resources" / "workflows" / f"{name}.json")
    g.set_param("ckpt", "ckpt_name", "tiny-sd15.safetensors")
    g.set_param("sampler", "steps", 2)
    if "cn" in g.nodes:
        g.set_param("cn", "control_net_name", "tiny-controlnet")
    r = model_executor.run(g, output_dir=tmp_path)
    assert r.ok, r.failures
    [png] = r.files
    from PIL import Image

    size = Image.open(png).size
    assert size == ((768, 320) if name == "outpaint" else (512, 320) if name != "txt2img"
                    else (512, 512))


def test_sdxl_img2img_matches_diffusers_pipeline(tiny_models, model_executor):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from nodes.diffusion.loading import quiet

    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sdxl")
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
    src = g.add("solid_mask", "m", value=0.3, width=64, height=64)
    img = g.add("mask_to_image", "img", mask=src["mask"])
    enc = g.add("vae_encode", "enc", vae=ck["vae"], image=img["image"])
    s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
              negative=neg["conditioning"], latent=enc["latent"], seed=3, steps=10, cfg=5.0,
              sampler="euler_ancestral", scheduler="diffusers", denoise=0.5)
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    r = model_executor.run(g, ["out", "enc"])
    assert r.ok, r.failures
    quiet()
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        tiny_models / "diffusers" / "tiny-sdxl", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    use_sampler(pipe, "euler_ancestral")
    ref = pipe(PROMPT, image=r["enc"]["latent"].samples, negative_prompt="", strength=0.5,
               num_inference_steps=10, guidance_scale=5.0, output_type="pt",
               generator=[generator_for(3, 0)]).images
    assert (r["out"]["ui"]["images"] - ref).abs().max().item() < 1e-4
