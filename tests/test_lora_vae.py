"""LoRA (kohya and diffusers layouts, stacking, clean removal) and Load VAE."""

import shutil

import pytest
import torch

from engine import Graph

pytestmark = pytest.mark.slow


def graph(loras=(), ckpt="tiny-sd15", seed=3, vae=None):
    g = Graph()
    ck = g.add("load_checkpoint", "ck", ckpt_name=ckpt)
    model, clip = ck["model"], ck["clip"]
    for i, (name, sm, sc) in enumerate(loras):
        lo = g.add("load_lora", f"lora{i}", model=model, clip=clip, lora_name=name,
                   strength_model=sm, strength_clip=sc)
        model, clip = lo["model"], lo["clip"]
    pos = g.add("text_encode", "pos", clip=clip, text="a red circle")
    neg = g.add("text_encode", "neg", clip=clip, text="")
    lat = g.add("empty_latent", "lat", width=64, height=64)
    s = g.add("sampler", "s", model=model, positive=pos["conditioning"],
              negative=neg["conditioning"], latent=lat["latent"], seed=seed, steps=4, cfg=6.0)
    vae_out = ck["vae"]
    if vae is not None:
        vae_out = g.add("load_vae", "vae", vae_name=vae, family="sd15")["vae"]
    d = g.add("vae_decode", "d", vae=vae_out, latent=s["latent"])
    g.add("preview_image", "out", images=d["image"])
    return g


def image(ex, g):
    r = ex.run(g)
    assert r.ok, r.failures
    return r["out"]["ui"]["images"]


def test_lora_strength_zero_is_the_plain_model(model_executor):
    plain = image(model_executor, graph())
    zero = image(model_executor, graph([("tiny-lora.safetensors", 0.0, 0.0)]))
    assert torch.equal(plain, zero)


def test_lora_changes_the_image_and_both_layouts_agree(model_executor):
    plain = image(model_executor, graph())
    kohya = image(model_executor, graph([("tiny-lora.safetensors", 1.0, 1.0)]))
    peft = image(model_executor, graph([("tiny-lora-diffusers.safetensors", 1.0, 1.0)]))
    assert (kohya - plain).abs().max() > 1e-3
    assert torch.allclose(kohya, peft, atol=1e-4)


def test_lora_is_removed_bit_for_bit(model_executor):
    from engine import Executor

    before = image(model_executor, graph(seed=8))
    image(model_executor, graph([("tiny-lora.safetensors", 0.8, 0.5)], seed=8))
    fresh = Executor(models=model_executor.models)  # no output cache: really recomputed
    assert torch.equal(image(fresh, graph(seed=8)), before)


def test_stacked_loras_commute(model_executor):
    ab = image(model_executor, graph([("tiny-lora.safetensors", 0.7, 1.0),
                                      ("tiny-lora-b.safetensors", 0.4, 1.0)]))
    ba = image(model_executor, graph([("tiny-lora-b.safetensors", 0.4, 1.0),
                                      ("tiny-lora.safetensors", 0.7, 1.0)]))
    a = image(model_executor, graph([("tiny-lora.safetensors", 0.7, 1.0)]))
    assert torch.allclose(ab, ba, atol=1e-4) and (ab - a).abs().max() > 1e-4


def test_patched_weight_is_base_plus_scaled_low_rank_product(tiny_models, model_executor):
    from safetensors.torch import load_file

    from nodes.diffusion.models import components

    image(model_executor, graph([("tiny-lora.safetensors", 0.5, 1.0)]))
    sd = load_file(tiny_models / "loras" / "tiny-lora.safetensors")
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    down, up, alpha = sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"], sd[key + ".alpha"]

    class Ctx:
        models = model_executor.models

    base_ref = None
    for entry in model_executor.cache.memory._entries.values():
        for v in entry.outputs.values():
            if getattr(v, "kind", None) == "MODEL" and v.patches:
                base_ref = v
    comps = components(Ctx(), base_ref)
    attn = comps.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    original = comps._lora_backup[("unet", "down_blocks.0.attentions.0.transformer_blocks.0"
                                           ".attn2.to_k")]
    expected = original + (up @ down) * (float(alpha) / down.shape[0]) * 0.5
    assert torch.allclose(attn.weight, expected, atol=1e-6)


def test_lora_for_another_family_fails_clearly(model_executor):
    g = graph([("tiny-lora.safetensors", 1.0, 1.0)], ckpt="tiny-sdxl")
    f = model_executor.run(g).failures["lora0"]
    assert f.input == "lora_name" and "another model family" in f.hint


def test_load_vae_from_a_folder_and_a_single_file(tiny_models, model_executor):
    from safetensors import safe_open
    from safetensors.torch import save_file

    vae_dir = tiny_models / "vae"
    vae_dir.mkdir(exist_ok=True)
    shutil.copytree(tiny_models / "diffusers" / "tiny-sd15" / "vae", vae_dir / "tiny-vae",
                    dirs_exist_ok=True)
    with safe_open(tiny_models / "checkpoints" / "tiny-sd15.safetensors", "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith("first_stage_model.")}
    save_file(state, vae_dir / "tiny-vae-file.safetensors")
    shutil.copytree(tiny_models / "diffusers" / "tiny-sd15" / "vae",
                    vae_dir / "tiny-vae-file.config", dirs_exist_ok=True)
    plain = image(model_executor, graph(seed=5))
    assert torch.equal(image(model_executor, graph(seed=5, vae="tiny-vae")), plain)
    assert torch.equal(image(model_executor, graph(seed=5, vae="tiny-vae-file.safetensors")),
                       plain)
