"""Hair transfer (Stable-Hair) on tiny random-weight models in the released file layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Executor, Graph
from engine import workflow as wf
from engine.modelpaths import ModelFolders
from engine.runtime.models import ModelManager

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hair_root(tiny_models, tmp_path_factory):
    from testing.hair import build_stable_hair

    root = tmp_path_factory.mktemp("hair-models")
    unet = tiny_models / "diffusers" / "tiny-sd15" / "unet"
    build_stable_hair(root, unet, "tiny-hair", seed=0, fmt="bin")
    build_stable_hair(root, unet, "tiny-hair-st", seed=0, fmt="safetensors")
    rng = np.random.default_rng(0)
    for name in ("face", "hair_a", "hair_b"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / f"{name}.png")
    return root


@pytest.fixture
def executor(tiny_models, hair_root):
    return Executor(models=ModelManager(paths=ModelFolders(
        [tiny_models, hair_root], use_env=False, use_config=False)))


def hair_graph(root: Path, reference="hair_a.png", hair="tiny-hair", **stage2) -> Graph:
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15.safetensors")
    hm = g.add("load_hair_models", "hm", hair_name=hair)
    face = g.add("load_image", "face", path=str(root / "face.png"))
    ref = g.add("load_image", "ref", path=str(root / reference))
    common = dict(model=ck["model"], clip=ck["clip"], vae=ck["vae"],
                  hair_model=hm["hair_model"], steps=4)
    bald = g.add("remove_hair", "bald", image=face["image"], seed=1, **common)
    g.add("transfer_hair", "hair", bald=bald["image"], reference=ref["image"],
          **{"seed": 2, **common, **stage2})
    return g


def plain_graph(seed: int, steps: int = 4) -> Graph:
    """The Sampler with what the hair stages use: empty prompt, diffusers' UniPC, cfg 1.5."""
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15.safetensors")
    c = g.add("text_encode", "c", clip=ck["clip"], text="")
    lat = g.add("empty_latent", "lat", width=64, height=64)
    s = g.add("sampler", "s", model=ck["model"], positive=c["conditioning"],
              negative=c["conditioning"], latent=lat["latent"], seed=seed, steps=steps, cfg=1.5,
              sampler="uni_pc", scheduler="diffusers")
    g.add("vae_decode", "img", vae=ck["vae"], latent=s["latent"])
    return g


def image_of(executor, g, node):
    r = executor.run(g, [node])
    assert r.ok, r.failures
    return r[node]["image"]


def test_released_layout_loads_as_bin_and_safetensors_with_no_missing_keys(hair_root):
    from nodes.hair.model import PARTS, load_hair_models

    for name in ("tiny-hair", "tiny-hair-st"):
        models = load_hair_models(hair_root / "hair" / name)
        assert set(models) == set(PARTS)
        assert all(not r["missing"] and not r["unexpected"] for r in models.report.values())
    keys = list(torch.load(hair_root / "hair" / "tiny-hair" / "stage2" / "pytorch_model_1.bin",
                           weights_only=True))
    assert keys[:2] == ["0.to_k_SSR.weight", "0.to_v_SSR.weight"]
    assert not any(k.startswith("1.") for k in keys)  # cross-attention entries hold nothing
    cn = torch.load(hair_root / "hair" / "tiny-hair" / "stage1" / "pytorch_model.bin",
                    weights_only=True)
    assert "conv_in_2.weight" in cn and not any("cond_embedding" in k for k in cn)


def test_an_incomplete_folder_says_what_is_missing(executor, hair_root, tmp_path):
    broken = hair_root / "hair" / "broken"
    shutil.copytree(hair_root / "hair" / "tiny-hair", broken, dirs_exist_ok=True)
    (broken / "stage2" / "pytorch_model_2.bin").unlink()
    g = Graph()
    g.add("load_hair_models", "hm", hair_name="broken")
    r = executor.run(g, ["hm"])
    f = r.failures["hm"]
    assert f.input == "hair_name" and "stage2/pytorch_model_2.safetensors (or .bin)" in f.hint
    assert "IdentityNet" in f.hint


def test_latent_controlnet_is_a_controlnet_with_a_second_input_conv(tiny_models):
    """With conv_in_2 zeroed it gives diffusers' ControlNetModel residuals for a zero
    conditioning embedding (the same weights otherwise)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from nodes.hair.model import classes, controlnet_config

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "diffusers" / "tiny-sd15" / "unet")
    config = controlnet_config(dict(unet.config))
    ours = classes()[0].build(config)
    ref = ControlNetModel.from_config(config)
    sd = {k: v for k, v in ref.state_dict().items() if "controlnet_cond_embedding" not in k}
    torch.manual_seed(0)
    for v in sd.values():
        v.normal_(0, 0.1)
    ours.load_state_dict({**sd, "conv_in_2.weight": torch.zeros_like(ours.conv_in_2.weight),
                          "conv_in_2.bias": torch.zeros_like(ours.conv_in_2.bias)})
    ref.load_state_dict(sd, strict=False)
    for p in ref.controlnet_cond_embedding.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 8, 8)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim)
    t = torch.tensor(500)
    d1, m1 = ours(x, t, emb, controlnet_cond=torch.randn(1, 4, 8, 8), return_dict=False)
    d2, m2 = ref(x, t, emb, controlnet_cond=torch.randn(1, 3, 64, 64), return_dict=False)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(d1, d2))
    assert torch.allclose(m1, m2, atol=1e-5)
    # and the condition latent does enter through conv_in_2
    torch.nn.init.normal_(ours.conv_in_2.weight, 0, 0.1)
    d3, _ = ours(x, t, emb, controlnet_cond=torch.randn(1, 4, 8, 8), return_dict=False)
    assert not torch.allclose(d3[0], d1[0])


def test_zero_strengths_give_the_plain_samplers_image(executor, hair_root):
    g = hair_graph(hair_root, hair_scale=0.0, identity_strength=0.0)
    g.set_param("bald", "strength", 0.0)
    plain1 = image_of(executor, plain_graph(1), "img")
    plain2 = image_of(executor, plain_graph(2), "img")
    assert torch.allclose(image_of(executor, g, "bald"), plain1, atol=1e-5)
    assert torch.allclose(image_of(executor, g, "hair"), plain2, atol=1e-5)
    # the hair attention path with scale 0 is the plain attention too
    g.set_param("hair", "hair_scale", 1e-12)
    assert torch.allclose(image_of(executor, g, "hair"), plain2, atol=1e-4)


def test_each_part_changes_the_result(executor, hair_root):
    g = hair_graph(hair_root)
    bald = image_of(executor, g, "bald")
    g0 = hair_graph(hair_root)
    g0.set_param("bald", "strength", 0.0)
    assert not torch.allclose(bald, image_of(executor, g0, "bald"), atol=1e-3)
    full = image_of(executor, g, "hair")
    for param, value in (("hair_scale", 0.0), ("identity_strength", 0.0)):
        g2 = hair_graph(hair_root)
        g2.set_param("hair", param, value)
        assert not torch.allclose(full, image_of(executor, g2, "hair"), atol=1e-3), param


def test_a_new_hairstyle_or_seed_reruns_stage_two_only(executor, hair_root):
    g = hair_graph(hair_root)
    first = image_of(executor, g, "hair")
    g.set_param("ref", "path", str(hair_root / "hair_b.png"))
    r = executor.run(g, ["hair"])
    assert r.ok and "bald" in r.plan.cached and "bald" not in r.computed
    assert "hair" in r.computed and not torch.allclose(r["hair"]["image"], first, atol=1e-3)
    g.set_param("hair", "seed", 99)
    r = executor.run(g, ["hair"])
    assert r.ok and "bald" not in r.computed and "hair" in r.computed


def test_hair_patches_come_off_the_model(executor, hair_root):
    """A plain run on the same MODEL gives exactly the image it gave before a hair run."""
    before = image_of(executor, plain_graph(5), "img")
    image_of(executor, hair_graph(hair_root), "hair")
    after = image_of(executor, plain_graph(5), "img")
    assert torch.equal(before, after)


def test_example_workflow_runs(tiny_models, hair_root, tmp_path):
    g = wf.load(ROOT / "resources" / "workflows" / "hair_transfer.json")
    types = sorted(n.type for n in g)
    assert types == sorted(["load_checkpoint", "load_hair_models", "load_image", "load_image",
                            "remove_hair", "transfer_hair", "save_image"])
    for n in g:
        if n.type == "load_checkpoint":
            n.params["ckpt_name"] = "tiny-sd15.safetensors"
        elif n.type == "load_hair_models":
            n.params["hair_name"] = "tiny-hair-st"
        elif n.type == "load_image":
            n.params["path"] = str(hair_root / "face.png")
        elif n.type in ("remove_hair", "transfer_hair"):
            n.params["steps"] = 3
    executor = Executor(output_dir=tmp_path, models=ModelManager(paths=ModelFolders(
        [tiny_models, hair_root], use_env=False, use_config=False)))
    r = executor.run(g)
    assert r.ok, r.failures
    assert len(r.files) == 1 and Image.open(r.files[0]).size == (64, 64)
    assert json.loads(json.dumps(wf.to_dict(g)))  # still a plain workflow


def test_transfer_reports_each_step_with_a_preview_and_stops_when_cancelled(
        executor, hair_root, events):
    from engine import CancelToken

    events.attach(executor)
    g = hair_graph(hair_root)
    g.set_param("hair", "steps", 6)
    assert executor.run(g, ["hair"]).ok
    steps = [e for e in events.named("progress") if e.node == "hair" and e.total == 6]
    # progress is coalesced for busy listeners: steps rise to the last; previews come along
    assert len(steps) >= 2 and steps[-1].step == 6
    assert [e.step for e in steps] == sorted({e.step for e in steps})
    assert any(e.preview is not None for e in steps)
    token = CancelToken()
    events.clear()
    executor.events.subscribe(
        lambda e: token.cancel() if e.event == "progress" and e.node == "hair"
        and e.total == 6 else None)
    g.set_param("hair", "seed", 123)
    r = executor.run(g, ["hair"], cancel=token)
    assert r.status == "cancelled"
    assert max(e.step for e in events.named("progress")
               if e.node == "hair" and e.total == 6) < 6
