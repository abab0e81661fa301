"""Tiny random-weight Stable Diffusion models, built offline, for tests and benchmarks.

Each is saved the two ways users' models come: a diffusers folder, and a single-file
checkpoint in the original (LDM) layout with a `NAME.config/` folder beside it holding
the diffusers configs and tokenizer that describe its (tiny) architecture. Everything
loads through the same code as a user's checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte -> printable character table (the base of its BPE vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_byte_tokenizer(folder: Path, max_length: int = 77, pad: str = "<|endoftext|>") -> int:
    """A CLIP tokenizer with a byte-level vocabulary and no merges: every word becomes its
    bytes. Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad, "do_lower_case": True}))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad}))
    return len(vocab)


def tiny_unet_config(cross_attention_dim: int = 32, in_channels: int = 4) -> dict[str, Any]:
    return dict(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D",
                                                               "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=8,
                norm_num_groups=32)


def tiny_vae_config() -> dict[str, Any]:
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                block_out_channels=(8, 16, 16, 16), norm_num_groups=8, sample_size=64,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)


SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, steps_offset=1, set_alpha_to_one=False,
                      skip_prk_steps=True, prediction_type="epsilon")


def build_sd15(root: str | Path, name: str = "tiny-sd15", seed: int = 0,
               in_channels: int = 4) -> dict[str, Path]:
    """A tiny SD 1.5-shaped model: `root/diffusers/NAME/` and
    `root/checkpoints/NAME.safetensors` (+ `NAME.config/`). in_channels=9 makes an
    inpainting model (latent, mask, masked-image latent). Returns the paths."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


    root = Path(root)
    folder = root / "diffusers" / name
    if folder.exists():
        shutil.rmtree(folder)
    tok_dir = root / ".tmp-tokenizer"
    vocab = write_byte_tokenizer(tok_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config(in_channels=in_channels))
    vae = AutoencoderKL(**tiny_vae_config())
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        max_position_embeddings=77, bos_token_id=512,
                                        eos_token_id=513, pad_token_id=513,
                                        projection_dim=32))
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD15_SCHEDULER),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tok_dir)

    single = write_single_file(folder, root / "checkpoints", name, unet, vae, text)
    return {"diffusers": folder, "single_file": single, "root": root}


def write_single_file(folder: Path, ckpt_dir: Path, name: str, unet, vae, text,
                      dtype: Any = None) -> Path:
    """An SD 1.x-layout checkpoint `ckpt_dir/NAME.safetensors` of these modules, with the
    diffusers folder's configs beside it in `NAME.config/`."""
    from safetensors.torch import save_file

    from nodes.diffusion.ldm import clip_to_ldm, unet_to_ldm, vae_to_ldm

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {}
    state.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    state.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    state.update(clip_to_ldm(text.state_dict()))
    single = ckpt_dir / f"{name}.safetensors"
    save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
               .contiguous() for k, v in state.items()}, single)
    write_config_folder(folder, ckpt_dir / f"{name}.config")
    return single


def write_config_folder(model_folder: Path, target: Path) -> None:
    """Copy a diffusers folder's configs and tokenizers, without weights."""
    if target.exists():
        shutil.rmtree(target)
    for f in model_folder.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            dest = target / f.relative_to(model_folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


def tiny_sdxl_unet_config() -> dict[str, Any]:
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64), down_block_types=("DownBlock2D",
                                                               "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32 + 48,
                attention_head_dim=(2, 4), use_linear_projection=True,
                transformer_layers_per_block=(1, 1), addition_embed_type="text_time",
                addition_time_embed_dim=8, projection_class_embeddings_input_dim=48 + 6 * 8,
                norm_num_groups=32)


SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                      prediction_type="epsilon", interpolation_type="linear")


def build_sdxl(root: str | Path, name: str = "tiny-sdxl", seed: int = 0) -> dict[str, Path]:
    """A tiny SDXL-shaped model (two text encoders, pooled embeddings, size conditioning),
    saved like `build_sd15`. The second encoder has 10 layers (checkpoints are recognised
    as SDXL by a key of its tenth layer) and a width other than the first's (single-file
    loading tells the two apart by it, as with the real 768 and 1280)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from nodes.diffusion.ldm import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm

    root = Path(root)
    folder = root / "diffusers" / name
    if folder.exists():
        shutil.rmtree(folder)
    tok1, tok2 = root / ".tmp-tok1", root / ".tmp-tok2"
    vocab = write_byte_tokenizer(tok1)
    write_byte_tokenizer(tok2, pad="!")
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, num_attention_heads=4, max_position_embeddings=77,
                  bos_token_id=512, eos_token_id=513, pad_token_id=513)
    te1 = CLIPTextModel(CLIPTextConfig(num_hidden_layers=2, hidden_size=32,
                                       intermediate_size=64, projection_dim=32, **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(
        num_hidden_layers=10, hidden_size=48, intermediate_size=96, projection_dim=48,
        hidden_act="gelu", **common))
    unet = UNet2DConditionModel(**tiny_sdxl_unet_config())
    vae = AutoencoderKL(**{**tiny_vae_config(), "scaling_factor": 0.13025})
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=CLIPTokenizer.from_pretrained(tok1),
                                     tokenizer_2=CLIPTokenizer.from_pretrained(tok2), unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                     add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tok1)
    shutil.rmtree(tok2)

    ckpt_dir = root / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {}
    state.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    state.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    state.update(clip_to_ldm(te1.state_dict(), "conditioner.embedders.0.transformer."))
    state.update(open_clip_to_ldm(te2.state_dict()))
    single = ckpt_dir / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, single)
    write_config_folder(folder, ckpt_dir / f"{name}.config")
    return {"diffusers": folder, "single_file": single, "root": root}


def build_lora(root: str | Path, model_folder: Path, name: str = "tiny-lora", rank: int = 4,
               seed: int = 1, scale: float = 0.5) -> dict[str, Path]:
    """A random LoRA over a tiny model's attention and text-encoder layers, written in the
    kohya layout (loras/NAME.safetensors) and the diffusers/PEFT layout
    (loras/NAME-diffusers.safetensors): the same weights, two spellings."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    te = CLIPTextModel.from_pretrained(model_folder / "text_encoder")
    g = torch.Generator().manual_seed(seed)
    kohya, peft = {}, {}

    def add(kname: str, pname: str, mod: Any) -> None:
        down = torch.randn(rank, mod.in_features, generator=g) * scale
        up = torch.randn(mod.out_features, rank, generator=g) * scale
        kohya[kname + ".lora_down.weight"], kohya[kname + ".lora_up.weight"] = down, up
        kohya[kname + ".alpha"] = torch.tensor(float(rank) / 2)
        peft[pname + ".lora_A.weight"] = down
        peft[pname + ".lora_B.weight"] = up * 0.5  # alpha / rank folded in
    for path, mod in unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".attn" in path:
            add(f"lora_unet_{path.replace('.', '_')}", f"unet.{path}", mod)
    for path, mod in te.named_modules():
        if isinstance(mod, torch.nn.Linear) and "self_attn" in path:
            full = path if path.startswith("text_model.") else f"text_model.{path}"
            add(f"lora_te_{full.replace('.', '_')}", f"text_encoder.{full}", mod)
    folder = Path(root) / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in kohya.items()}, folder / f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in peft.items()},
              folder / f"{name}-diffusers.safetensors")
    return {"kohya": folder / f"{name}.safetensors",
            "diffusers": folder / f"{name}-diffusers.safetensors"}


def build_controlnet(root: str | Path, model_folder: Path, name: str = "tiny-controlnet",
                     seed: int = 3) -> dict[str, Path]:
    """A tiny ControlNet for a tiny model: its encoder copied from the model's UNet, the
    zero convolutions given random weights (zeros would make it do nothing), saved as a
    diffusers folder (controlnet/NAME/) and a single file (controlnet/NAME.safetensors +
    NAME.config/): in the original layout for SD 1.x, in diffusers' own key names for SDXL,
    as those are released."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from nodes.diffusion.ldm import controlnet_to_ldm

    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        for m in [*cn.controlnet_down_blocks, cn.controlnet_mid_block,
                  cn.controlnet_cond_embedding.conv_out]:
            m.weight.normal_(0, 0.3)
            m.bias.normal_(0, 0.1)
    folder = Path(root) / "controlnet"
    if (folder / name).exists():
        shutil.rmtree(folder / name)
    cn.save_pretrained(folder / name, safe_serialization=True)
    single = folder / f"{name}.safetensors"
    state = cn.state_dict()
    if cn.config.addition_embed_type is None:
        state = controlnet_to_ldm(state, dict(cn.config))
    save_file({k: v.contiguous() for k, v in state.items()}, single)
    write_config_folder(folder / name, folder / f"{name}.config")
    return {"diffusers": folder / name, "single_file": single}


def build_upscalers(root: str | Path, seed: int = 7) -> dict[str, Path]:
    """Tiny random-weight upscalers in upscale_models/, as users have them: an ESRGAN
    (RRDB) x2 as .safetensors, an ESRGAN x4 as a pickled .pth state dict, and a SwinIR x2."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    folder = Path(root) / "upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    x2 = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    x4 = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    swin = SwinIR(img_size=16, embed_dim=12, depths=[1, 1], num_heads=[2, 2], window_size=4,
                  upscale=2, upsampler="pixelshuffle", mlp_ratio=2.0)
    paths = {"esrgan_x2": folder / "tiny-esrgan-x2.safetensors",
             "esrgan_x4": folder / "tiny-esrgan-x4.pth",
             "swinir_x2": folder / "tiny-swinir-x2.safetensors"}
    save_file({k: v.contiguous() for k, v in x2.state_dict().items()}, paths["esrgan_x2"])
    torch.save(x4.state_dict(), paths["esrgan_x4"])
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, paths["swinir_x2"])
    return paths
