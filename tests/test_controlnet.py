"""ControlNet with tiny models: parity with diffusers' ControlNet pipelines, exact no-ops,
chaining, family checks, caching."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Graph
from engine.runtime import generator_for

pytestmark = pytest.mark.slow
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def control_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctl") / "edges.png"
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[16:48, 16:18] = 255
    arr[16:18, 16:48] = 255
    arr[30:34, 20:60] = 180
    Image.fromarray(arr).save(path)
    return path


def graph(control_png, nets=(), seed=5, both=True, cn_name="tiny-controlnet", steps=6):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
    img = g.add("load_image", "img", path=str(control_png))
    pos = g.add("text_encode", "pos", clip=ck["clip"], text=PROMPT)["conditioning"]
    neg = g.add("text_encode", "neg", clip=ck["clip"], text="")["conditioning"]
    for i, (name, strength, start, end, guess) in enumerate(nets):
        cn = g.add("load_controlnet", f"cn{i}", control_net_name=name)
        pos = g.add("apply_controlnet", f"ap{i}", conditioning=pos, control_net=cn["control_net"],
                    image=img["image"], strength=strength, start_percent=start,
                    end_percent=end, guess_mode=guess)["conditioning"]
        if both:
            neg = g.add("apply_controlnet", f"an{i}", conditioning=neg,
                        control_net=cn["control_net"], image=img["image"], strength=strength,
                        start_percent=start, end_percent=end,
                        guess_mode=guess)["conditioning"]
    lat = g.add("empty_latent", "lat", width=64, height=64)
    s = g.add("sampler", "s", model=ck["model"], positive=pos, negative=neg,
              latent=lat["latent"], seed=seed, steps=steps, cfg=7.0, sampler="euler",
              scheduler="diffusers")
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    return g


def image(ex, g):
    r = ex.run(g)
    assert r.ok, r.failures
    return r["out"]["ui"]["images"]


def pipeline(tiny_models, names):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from nodes.diffusion.loading import quiet
    from nodes.diffusion.sampling import make_scheduler

    quiet()
    nets = [ControlNetModel.from_pretrained(tiny_models / "controlnet" / n) for n in names]
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_models / "diffusers" / "tiny-sd15", controlnet=nets if len(nets) > 1 else nets[0],
        safety_checker=None, requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = make_scheduler(dict(pipe.scheduler.config), "euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def control_tensor(control_png):
    arr = np.asarray(Image.open(control_png).convert("RGB"), np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


@pytest.mark.parametrize("start,end,guess", [(0.0, 1.0, False), (0.2, 0.7, False),
                                             (0.0, 1.0, True)])
def test_matches_diffusers_controlnet_pipeline(tiny_models, model_executor, control_png,
                                               start, end, guess):
    ours = image(model_executor, graph(control_png, [("tiny-controlnet", 0.8, start, end,
                                                      guess)]))
    pipe = pipeline(tiny_models, ["tiny-controlnet"])
    ref = pipe(PROMPT, image=control_tensor(control_png), negative_prompt="", height=64,
               width=64, num_inference_steps=6, guidance_scale=7.0, output_type="pt",
               controlnet_conditioning_scale=0.8, control_guidance_start=start,
               control_guidance_end=end, guess_mode=guess,
               generator=[generator_for(5, 0)]).images
    assert (ours - ref).abs().max().item() < 1e-4


def test_two_chained_controlnets_equal_diffusers_multi_controlnet(tiny_models, model_executor,
                                                                   control_png):
    ours = image(model_executor, graph(control_png, [("tiny-controlnet", 0.6, 0.0, 1.0, False),
                                                     ("tiny-controlnet-b", 0.9, 0.0, 1.0,
                                                      False)]))
    pipe = pipeline(tiny_models, ["tiny-controlnet", "tiny-controlnet-b"])
    c = control_tensor(control_png)
    ref = pipe(PROMPT, image=[c, c], negative_prompt="", height=64, width=64,
               num_inference_steps=6, guidance_scale=7.0, output_type="pt",
               controlnet_conditioning_scale=[0.6, 0.9],
               generator=[generator_for(5, 0)]).images
    assert (ours - ref).abs().max().item() < 1e-4


def test_strength_zero_and_empty_range_are_exactly_no_control(model_executor, control_png):
    plain = image(model_executor, graph(control_png))
    assert torch.equal(image(model_executor, graph(control_png, [("tiny-controlnet", 0.0, 0.0,
                                                                   1.0, False)])), plain)
    assert torch.equal(image(model_executor, graph(control_png, [("tiny-controlnet", 1.0, 0.5,
                                                                   0.5, False)])), plain)
    controlled = image(model_executor, graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0,
                                                            False)]))
    assert (controlled - plain).abs().max() > 1e-3


def test_each_conditioning_is_controlled_independently(model_executor, control_png):
    both = image(model_executor, graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0, False)]))
    pos_only = image(model_executor, graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0,
                                                          False)], both=False))
    assert (both - pos_only).abs().max() > 1e-4
    r = model_executor.run(graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0, False)],
                                 both=False), ["ap0", "neg"])
    assert len(r["ap0"]["conditioning"].controls) == 1
    assert r["neg"]["conditioning"].controls == ()  # the input conditioning is untouched


def test_single_file_controlnet_equals_folder(model_executor, control_png):
    a = image(model_executor, graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0, False)]))
    b = image(model_executor, graph(control_png, [("tiny-controlnet.safetensors", 1.0, 0.0, 1.0,
                                                   False)]))
    assert torch.allclose(a, b, atol=1e-6)


def test_controlnet_for_another_family_is_refused(model_executor, control_png):
    g = graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0, False)])
    g.set_param("ck", "ckpt_name", "tiny-sdxl")
    f = model_executor.run(g).failures["s"]
    assert f.input == "positive" and "ControlNets for sdxl models" in f.message
    assert "tiny-controlnet was made for" in f.hint


def test_changing_strength_reruns_only_apply_sampler_and_after(model_executor, control_png):
    g = graph(control_png, [("tiny-controlnet", 1.0, 0.0, 1.0, False)])
    model_executor.run(g)
    loads = model_executor.models.loads
    g.set_param("ap0", "strength", 0.5)
    r = model_executor.run(g)
    assert set(r.computed) == {"ap0", "s", "d", "out"}
    assert model_executor.models.loads == loads


def test_sdxl_controlnet_matches_diffusers_pipeline(tiny_models, model_executor, control_png):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    from nodes.diffusion.loading import quiet
    from nodes.diffusion.sampling import make_scheduler
    from testing.diffusion import build_controlnet

    build_controlnet(tiny_models, tiny_models / "diffusers" / "tiny-sdxl", "tiny-controlnet-xl")
    g = graph(control_png, [("tiny-controlnet-xl.safetensors", 0.7, 0.0, 1.0, False)])
    g.set_param("ck", "ckpt_name", "tiny-sdxl")
    ours = image(model_executor, g)
    quiet()
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        tiny_models / "diffusers" / "tiny-sdxl", local_files_only=True,
        controlnet=ControlNetModel.from_pretrained(tiny_models / "controlnet" /
                                                   "tiny-controlnet-xl"))
    pipe.scheduler = make_scheduler(dict(pipe.scheduler.config), "euler")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPT, image=control_tensor(control_png), negative_prompt="", height=64,
               width=64, num_inference_steps=6, guidance_scale=7.0, output_type="pt",
               controlnet_conditioning_scale=0.7, generator=[generator_for(5, 0)]).images
    assert (ours - ref).abs().max().item() < 1e-4
    sd15 = graph(control_png, [("tiny-controlnet-xl", 0.7, 0.0, 1.0, False)])
    f = model_executor.run(sd15).failures["s"]
    assert "ControlNets for sd15 models" in f.message


def test_control_image_is_resized_to_the_generation_size(model_executor, tmp_path):
    small = tmp_path / "small.png"
    arr = np.zeros((24, 40, 3), np.uint8)
    arr[8:16, 8:32] = 255
    Image.fromarray(arr).save(small)
    r = model_executor.run(graph(small, [("tiny-controlnet", 1.0, 0.0, 1.0, False)]))
    assert r.ok, r.failures
    assert r["out"]["ui"]["images"].shape == (1, 3, 64, 64)
