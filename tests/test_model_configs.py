"""The config folders shipped for offline single-file loading describe the released
architectures: parameter counts of every component, built on the meta device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.resources import RESOURCES

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = RESOURCES / "configs"

# family: (UNet, VAE, text encoder, text encoder 2) parameters of the released models
EXPECTED = {
    "sd15": (859_520_964, 83_653_863, 123_060_480, None),
    "sd15_inpaint": (859_535_364, 83_653_863, 123_060_480, None),
    "sd2": (865_910_724, 83_653_863, 340_387_840, None),
    "sd2_eps": (865_910_724, 83_653_863, 340_387_840, None),
    "sdxl": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_shipped_config_matches_the_released_architecture(family):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / family

    def count(m):
        return sum(p.numel() for p in m.parameters())

    def config(name):
        return json.loads((folder / name / "config.json").read_text())

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config("unet"))
        vae = AutoencoderKL.from_config(config("vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        te2 = None
        if (folder / "text_encoder_2").is_dir():
            te2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    got = (count(unet), count(vae), count(te), count(te2) if te2 is not None else None)
    assert got == EXPECTED[family]


def test_shipped_tokenizer_is_clips():
    from nodes.diffusion.loading import tokenizer_from

    tok = tokenizer_from(CONFIGS / "sd15" / "tokenizer")
    assert len(tok) == 49408
    assert tok("a photograph of an astronaut riding a horse").input_ids == [
        49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert tokenizer_from(CONFIGS / "sdxl" / "tokenizer_2").pad_token_id == 0


def test_loom_models_lists_models_with_their_family(tiny_models):
    env = dict(os.environ, LOOM_MODELS="")
    r = subprocess.run([sys.executable, "-m", "app.cli", "models", "--models", str(tiny_models),
                        "--json"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    rows = json.loads(r.stdout)
    got = {(x["kind"], x["name"], x["family"]) for x in rows}
    assert ("checkpoints", "tiny-sd15.safetensors", "sd15") in got
    assert ("diffusers", "tiny-sd15", "sd15") in got
    assert not any(x["name"].endswith(".config") for x in rows)


def test_model_folders_from_env_config_and_comfyui_yaml(tmp_path, monkeypatch):
    from engine.modelpaths import ModelFolders

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "comfy"
    for d in (a / "loras", b / "loras", c / "models" / "lora_stuff"):
        d.mkdir(parents=True)
    (a / "loras" / "x.safetensors").write_bytes(b"")
    (b / "loras" / "y.safetensors").write_bytes(b"")
    (c / "models" / "lora_stuff" / "z.safetensors").write_bytes(b"")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"comfyui:\n  base_path: {c}\n  loras: |\n    models/lora_stuff\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'models = ["{b}"]\ncomfyui_extra_model_paths = "{yaml_file}"\n')
    monkeypatch.setenv("LOOM_MODELS", str(a))
    monkeypatch.setattr("engine.modelpaths.config_file", lambda: cfg)
    folders = ModelFolders()
    assert [e.name for e in folders.list("loras")] == ["x.safetensors", "y.safetensors",
                                                       "z.safetensors"]
    assert folders.find("loras", "z.safetensors").parent.name == "lora_stuff"
    with pytest.raises(LookupError, match="no loras model named 'w'"):
        folders.find("loras", "w")


@pytest.mark.parametrize("family,context", [("sd15", 768), ("sd2", 1024), ("sdxl", 2048)])
def test_shipped_controlnet_configs_build_and_name_their_family(family, context, tmp_path):
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    from nodes.diffusion.controlnet import family_of_controlnet

    folder = CONFIGS / f"controlnet_{family}"
    with init_empty_weights():
        cn = ControlNetModel.from_config(json.loads((folder / "config.json").read_text()))
    assert cn.config.cross_attention_dim == context
    assert family_of_controlnet(folder) == family


def test_shipped_configs_hold_clip_s_vocabulary_once():
    from nodes.diffusion.loading import CLIP_VOCAB, tokenizers_for

    assert sorted(p.parent for p in CONFIGS.rglob("vocab.json")) == [CLIP_VOCAB]
    assert sum(p.stat().st_size for p in CONFIGS.rglob("*") if p.is_file()) < 4_000_000
    pads = {fam: {name: tok.pad_token_id for name, tok in tokenizers_for(CONFIGS / fam).items()}
            for fam in ("sd15", "sd2", "sdxl", "sdxl_refiner")}
    assert pads == {"sd15": {"tokenizer": 49407}, "sd2": {"tokenizer": 0},
                    "sdxl": {"tokenizer": 49407, "tokenizer_2": 0},
                    "sdxl_refiner": {"tokenizer_2": 0}}


def test_single_file_loads_with_the_shared_vocabulary(tiny_models, tmp_path):
    """A config folder without a vocabulary of its own (as the shipped ones are) gets the
    shared CLIP tokenizer passed to diffusers' single-file loader."""
    import shutil

    from nodes.diffusion.loading import load_components

    ckpt = tiny_models / "checkpoints" / "tiny-sd15.safetensors"
    shutil.copy2(ckpt, tmp_path / ckpt.name)
    config = shutil.copytree(ckpt.with_suffix(".config"), tmp_path / "tiny-sd15.config")
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (config / "tokenizer" / name).unlink(missing_ok=True)
    comps = load_components(tmp_path / ckpt.name)
    assert len(comps.tokenizer) == 49408
    assert comps.tokenizer("a photograph of an astronaut").input_ids[:3] == [49406, 320, 8853]
