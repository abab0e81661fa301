"""The loading path (issue 19): every model kind loads through weights.load with exactly the
weights today's diffusers-based loaders give, in little memory, once per process; the CPU
compute dtype follows the CPU's bf16 instructions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import Graph
from engine.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def same_weights(ours, theirs):
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys(), set(a) ^ set(b)
    bad = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def diffusers_pipeline(path, family, dtype):
    """Today's loader, kept here only: diffusers' from_single_file with Loom's configs."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from nodes.diffusion.loading import _dtype, config_folder_for, quiet, tokenizers_for

    quiet()
    config = config_folder_for(path, family)
    cls = StableDiffusionXLPipeline if family.is_sdxl_like else StableDiffusionPipeline
    kw = {} if family.is_sdxl_like else {"safety_checker": None,
                                         "requires_safety_checker": False}
    return cls.from_single_file(str(path), config=str(config), local_files_only=True,
                                **_dtype(dtype), **kw, **tokenizers_for(config))


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl", "tiny-sd15-inpaint"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_checkpoints_load_the_weights_diffusers_does(tiny_models, name, dtype):
    from nodes.diffusion.loading import load_components

    path = tiny_models / "checkpoints" / f"{name}.safetensors"
    ours = load_components(path, dtype)
    theirs = diffusers_pipeline(path, ours.family, dtype)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(theirs, part, None) is None:
            assert getattr(ours, part) is None
            continue
        same_weights(getattr(ours, part), getattr(theirs, part))
    assert ours.scheduler_config == dict(theirs.scheduler.config)
    assert ours.tokenizer("a red circle").input_ids == \
        theirs.tokenizer("a red circle").input_ids


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_diffusers_folders_load_the_weights_from_pretrained_does(tiny_models, name):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from nodes.diffusion.loading import load_components

    path = tiny_models / "diffusers" / name
    ours = load_components(path, torch.float32)
    cls = StableDiffusionXLPipeline if ours.family.is_sdxl_like else StableDiffusionPipeline
    theirs = cls.from_pretrained(path, local_files_only=True)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(theirs, part, None) is not None:
            same_weights(getattr(ours, part), getattr(theirs, part))
    assert ours.scheduler_config == dict(theirs.scheduler.config)
    assert ours.tokenizer_2 is None or ours.tokenizer_2("a red circle").input_ids == \
        theirs.tokenizer_2("a red circle").input_ids


def test_the_vae_is_cast_once_to_its_own_dtype(tiny_models):
    from nodes.diffusion.loading import load_components

    comps = load_components(tiny_models / "checkpoints" / "tiny-sd15.safetensors",
                            torch.bfloat16, torch.float32)
    assert comps.unet.dtype == torch.bfloat16 and comps.vae.dtype == torch.float32


def _part(path: Path, prefix: str, out: Path, strip: str = "") -> Path:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    save_file({strip + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)},
              str(out))
    return out


@pytest.mark.parametrize("layout", ["original", "original-bare", "diffusers"])
def test_unet_files_load_the_weights_the_old_loader_did(tiny_models, tmp_path, layout):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from nodes.diffusion.loading import load_unet_only

    ckpt = tiny_models / "checkpoints" / "tiny-sd15.safetensors"
    folder = tiny_models / "diffusers" / "tiny-sd15" / "unet"
    config = json.loads((folder / "config.json").read_text())
    if layout == "diffusers":  # a context width of 768 tells the family (SD 1.x)
        from safetensors.torch import save_file

        from testing.diffusion import tiny_unet_config

        torch.manual_seed(0)
        config = tiny_unet_config(cross_attention_dim=768)
        sd = UNet2DConditionModel(**config).state_dict()
        path = tmp_path / "u.safetensors"
        save_file({"unet." + k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        prefix = "" if layout == "original-bare" else "model.diffusion_model."
        path = _part(ckpt, "model.diffusion_model.", tmp_path / "u.safetensors", prefix)
        sd = convert_ldm_unet_checkpoint(
            {"model.diffusion_model." + k[len(prefix):]: v
             for k, v in load_file(str(path)).items()}, config)
    if path.parent != tmp_path:
        path = Path(shutil.copy(path, tmp_path / "u.safetensors"))
    (tmp_path / "u.config" / "unet").mkdir(parents=True)
    (tmp_path / "u.config" / "unet" / "config.json").write_text(json.dumps(config))
    shutil.copytree(ROOT / "resources" / "configs" / "sd15" / "scheduler",
                    tmp_path / "u.config" / "scheduler")
    old = UNet2DConditionModel.from_config(config)
    old.load_state_dict(sd)
    same_weights(load_unet_only(path, torch.float32).unet, old)


def test_a_vae_file_loads_the_weights_the_old_loader_did(tiny_models, tmp_path):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    from engine.runtime.device import choose
    from nodes.diffusion.models import _load_vae

    ckpt = tiny_models / "checkpoints" / "tiny-sd15.safetensors"
    path = _part(ckpt, "first_stage_model.", tmp_path / "v.safetensors")
    config = json.loads((tiny_models / "diffusers" / "tiny-sd15" / "vae" /
                         "config.json").read_text())
    (tmp_path / "v.config").mkdir()
    (tmp_path / "v.config" / "config.json").write_text(json.dumps(config))
    old = AutoencoderKL.from_config(config)
    old.load_state_dict(convert_ldm_vae_checkpoint(load_file(str(path)), config))
    same_weights(_load_vae(path, "sd15", choose("cpu", "fp32")).vae, old)


def test_a_controlnet_file_loads_the_weights_diffusers_does(tiny_models):
    from diffusers import ControlNetModel

    from nodes.diffusion.controlnet import load_controlnet

    path = tiny_models / "controlnet" / "tiny-controlnet.safetensors"
    theirs = ControlNetModel.from_single_file(str(path), config=str(path.with_suffix(".config")),
                                              local_files_only=True)
    same_weights(load_controlnet(path, torch.float32), theirs)


def test_loras_and_upscalers_read_what_safetensors_reads(tiny_models):
    from safetensors.torch import load_file

    from nodes.diffusion.loading import read_state_dict

    for path in [*(tiny_models / "loras").glob("*.safetensors"),
                 *(tiny_models / "upscale_models").glob("*.safetensors")]:
        ours, theirs = read_state_dict(path), load_file(str(path))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), path.name


def test_a_truncated_file_names_itself(tiny_models, tmp_path):
    from nodes.diffusion.loading import load_components

    data = (tiny_models / "checkpoints" / "tiny-sd15.safetensors").read_bytes()
    bad = tmp_path / "checkpoints" / "cut.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) * 2 // 3])
    shutil.copytree(tiny_models / "checkpoints" / "tiny-sd15.config", bad.with_suffix(".config"))
    with pytest.raises(InputError) as e:
        load_components(bad, torch.float32)
    assert "cut.safetensors" in str(e.value)


def _graph_a():
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15.safetensors")
    lat = g.add("empty_latent", "lat", width=64, height=64)
    d = g.add("vae_decode", "d", vae=ck["vae"], latent=lat["latent"])
    g.add("preview_image", "out", images=d["image"])
    return g


def _graph_b():
    g = Graph()
    ck = g.add("load_checkpoint", "loader", ckpt_name="tiny-sd15.safetensors")
    pos = g.add("text_encode", "p", clip=ck["clip"], text="a blue square")
    lat = g.add("empty_latent", "lat", width=64, height=64)
    s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
              negative=pos["conditioning"], latent=lat["latent"], steps=2)
    d = g.add("vae_decode", "decode", vae=ck["vae"], latent=s["latent"])
    g.add("preview_image", "show", images=d["image"])
    return g


def test_a_second_graph_naming_the_same_file_shares_its_modules(model_executor):
    manager = model_executor.models
    before = manager.loads
    assert model_executor.run(_graph_a()).ok
    assert model_executor.run(_graph_b()).ok
    assert manager.loads - before == 1  # one read of the file for both graphs


def test_cpu_bf16_follows_the_cpus_instructions(monkeypatch):
    from engine.runtime import device

    monkeypatch.delenv("LOOM_DTYPE", raising=False)
    assert device.cpu_has_bf16("flags\t\t: fpu sse avx512f avx512_bf16 avx512_fp16\n")
    assert not device.cpu_has_bf16("flags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda cpuinfo=None: True)
    c = device.choose("cpu")
    assert (c.dtype, c.vae_dtype) == ("bfloat16", "float32")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert device.choose("cpu").dtype == "float32"
    assert device.choose("cpu", "fp32").dtype == "float32"
    monkeypatch.setenv("LOOM_DTYPE", "fp32")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda cpuinfo=None: True)
    assert device.choose("cpu").dtype == "float32"


_CHILD = r"""
import resource, sys, torch
from pathlib import Path
from nodes.diffusion.loading import load_components
import diffusers, transformers  # imported before measuring: the load is what is measured
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss()
comps = load_components(Path(sys.argv[1]), torch.float32)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model = sum(t.numel() * t.element_size() for m in comps.values()
            for t in m.state_dict().values())
print(peak - base, model)
"""


@pytest.mark.slow
def test_loading_a_mid_size_checkpoint_peaks_near_the_models_size(tmp_path):
    from testing.checkpoints import MID_SD15, write_random_checkpoint

    path = tmp_path / "mid.safetensors"
    size = write_random_checkpoint(path, **MID_SD15)
    assert 250 << 20 < size < 600 << 20
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    peak, model = map(int, r.stdout.split()[-2:])
    assert model > 1.8 * size  # fp16 file, fp32 model
    assert peak < 1.3 * model, (peak / 2**20, model / 2**20)


def test_a_header_that_lies_about_a_tensor_names_the_file(tmp_path):
    from nodes.diffusion.weights import open_weights

    header = json.dumps({"w": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 8]}})
    bad = tmp_path / "lies.safetensors"
    bad.write_bytes(len(header).to_bytes(8, "little") + header.encode() + bytes(8))
    with pytest.raises(InputError) as e:
        open_weights(bad, "lora_name")["w"]
    assert "lies.safetensors" in str(e.value) and "lora_name" in str(e.value)
