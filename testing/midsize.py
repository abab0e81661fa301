"""A mid-size random-weight SD 1.5-shaped checkpoint (about 230 MB in float32): big enough
that its weights and activations stand well above the interpreter's own memory, so memory
estimates can be checked against measured peaks; small enough to build in seconds. And
`model_chain`, a graph that comes back to models after others ran (memory planning)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .diffusion import SD15_SCHEDULER, write_byte_tokenizer, write_single_file

# SD 1.5's layout at a fifth of its UNet width and half its VAE width
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(64, 128, 256, 256),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=256, attention_head_dim=8, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(64, 128, 256, 256), norm_num_groups=32, sample_size=512,
           down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4)


def build_mid_sd15(root: str | Path, name: str = "mid-sd15", seed: int = 0) -> Path:
    """`root/checkpoints/NAME.safetensors` (+ `NAME.config/`); returns the file."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(root)
    folder = root / ".build" / name
    tok_dir = root / ".build" / "tokenizer"
    vocab = write_byte_tokenizer(tok_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=256, intermediate_size=1024,
                                        num_hidden_layers=4, num_attention_heads=4,
                                        max_position_embeddings=77, bos_token_id=512,
                                        eos_token_id=513, pad_token_id=513, projection_dim=256))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text,
                                   tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet,
                                   scheduler=PNDMScheduler(**SD15_SCHEDULER),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    single = write_single_file(folder, root / "checkpoints", name, unet, vae, text)
    shutil.rmtree(root / ".build")
    return single


def model_chain(names: list[str], steps: int = 2, size: int = 64) -> Any:
    """Text to image with the first checkpoint, then image to image with each next one:
    with names A X B A X a model is needed again after others ran."""
    from engine import Graph

    g = Graph()
    cks: dict[str, Any] = {}
    img = None
    for i, name in enumerate(names):
        ck = cks.get(name) or g.add("load_checkpoint", f"ck{len(cks)}", ckpt_name=name)
        cks[name] = ck
        pos = g.add("text_encode", f"pos{i}", clip=ck["clip"], text="a red circle")
        neg = g.add("text_encode", f"neg{i}", clip=ck["clip"], text="")
        if img is None:
            lat = g.add("empty_latent", "lat", width=size, height=size, batch_size=1)["latent"]
        else:
            lat = g.add("vae_encode", f"enc{i}", vae=ck["vae"], image=img)["latent"]
        s = g.add("sampler", f"s{i}", model=ck["model"], positive=pos["conditioning"],
                  negative=neg["conditioning"], latent=lat, seed=1, steps=steps, cfg=5.0,
                  denoise=1.0 if img is None else 0.6)
        img = g.add("vae_decode", f"d{i}", vae=ck["vae"], latent=s["latent"])["image"]
    g.add("preview_image", "out", images=img)
    return g
