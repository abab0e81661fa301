#!/usr/bin/env python3
"""Write the config folders that single-file checkpoints load with, offline:
resources/configs/<family>/ in the diffusers layout (model_index.json, component configs,
tokenizers). CLIP's vocabulary and merges are stored once, in tokenizers/clip/; each family's
tokenizer folders hold only their settings (nodes/diffusion/loading.py joins the two). The
output is committed; run this only to change it.

    python3 tools/make_configs.py PATH/TO/bpe_simple_vocab_16e6.txt.gz

The BPE file is CLIP's (MIT licence), as shipped inside the open_clip_torch wheel. The
architecture numbers are those of the released SD 1.5, SD 2.x and SDXL models.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from engine.resources import RESOURCES  # noqa: E402
from testing.diffusion import bytes_to_unicode  # noqa: E402

OUT = RESOURCES / "configs"
VERSION = "0.30.0"


def clip_vocab(bpe: Path) -> tuple[dict[str, int], list[str]]:
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1: 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def shared_tokenizer(vocab, merges) -> None:
    folder = OUT / "tokenizers" / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def tokenizer(folder: Path, vocab, merges, pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": pad}
    write(folder / "special_tokens_map.json", special)
    write(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer",
                                             "model_max_length": 77, "do_lower_case": True,
                                             "clean_up_tokenization_spaces": True, **special})


SCHED = {"_diffusers_version": VERSION, "beta_start": 0.00085, "beta_end": 0.012,
         "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
         "set_alpha_to_one": False, "clip_sample": False, "skip_prk_steps": True,
         "timestep_spacing": "leading"}
VAE = {"_class_name": "AutoencoderKL", "_diffusers_version": VERSION, "act_fn": "silu",
       "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3,
       "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
       "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
CLIP_L = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
          "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
          "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
          "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
          "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
CLIP_H = {**CLIP_L, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
          "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}
CLIP_G = {**CLIP_L, "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
          "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
          "num_hidden_layers": 32, "projection_dim": 1280}
UNET = {"_class_name": "UNet2DConditionModel", "_diffusers_version": VERSION, "act_fn": "silu",
        "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
        "center_input_sample": False, "mid_block_scale_factor": 1}
UNET_SD1 = {**UNET, "sample_size": 64, "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "cross_attention_dim": 768, "attention_head_dim": 8}
UNET_SD2 = {**UNET_SD1, "sample_size": 96, "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
            "upcast_attention": True}
UNET_XL = {**UNET, "sample_size": 128, "block_out_channels": [320, 640, 1280],
           "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
           "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
           "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
           "cross_attention_dim": 2048, "use_linear_projection": True,
           "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
           "addition_embed_type_num_heads": 64, "projection_class_embeddings_input_dim": 2816}
UNET_XL_REFINER = {**UNET_XL, "block_out_channels": [384, 768, 1536, 1536],
                   "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D",
                                        "CrossAttnDownBlock2D", "DownBlock2D"],
                   "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                      "UpBlock2D"],
                   "transformer_layers_per_block": 4, "attention_head_dim": [6, 12, 24, 24],
                   "cross_attention_dim": 1280, "projection_class_embeddings_input_dim": 2560}


def sd(name: str, unet: dict, te: dict, pad: str, sched: dict, vae: dict, vocab, merges) -> None:
    folder = OUT / name
    write(folder / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": VERSION,
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False, "scheduler": ["diffusers", sched["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    write(folder / "unet" / "config.json", unet)
    write(folder / "vae" / "config.json", vae)
    write(folder / "text_encoder" / "config.json", te)
    write(folder / "scheduler" / "scheduler_config.json", sched)
    tokenizer(folder / "tokenizer", vocab, merges, pad)


def xl(name: str, unet: dict, vocab, merges, refiner: bool) -> None:
    folder = OUT / name
    index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": VERSION,
             "force_zeros_for_empty_prompt": not refiner, "add_watermarker": False,
             "scheduler": ["diffusers", "EulerDiscreteScheduler"],
             "text_encoder": [None, None] if refiner else ["transformers", "CLIPTextModel"],
             "tokenizer": [None, None] if refiner else ["transformers", "CLIPTokenizer"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer_2": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    if refiner:
        index["requires_aesthetics_score"] = True
    write(folder / "model_index.json", index)
    write(folder / "unet" / "config.json", unet)
    write(folder / "vae" / "config.json", {**VAE, "sample_size": 1024, "scaling_factor": 0.13025,
                                            "force_upcast": True})
    write(folder / "scheduler" / "scheduler_config.json",
          {**SCHED, "_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon",
           "interpolation_type": "linear", "use_karras_sigmas": False})
    if not refiner:
        write(folder / "text_encoder" / "config.json", CLIP_L)
        tokenizer(folder / "tokenizer", vocab, merges, "<|endoftext|>")
    write(folder / "text_encoder_2" / "config.json", CLIP_G)
    tokenizer(folder / "tokenizer_2", vocab, merges, "!")


CONTROLNET_KEYS = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types",
                   "block_out_channels", "layers_per_block", "downsample_padding",
                   "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
                   "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                   "upcast_attention", "transformer_layers_per_block", "addition_embed_type",
                   "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def controlnet(name: str, unet: dict) -> None:
    """A ControlNet is its model's UNet encoder plus a hint encoder and zero convolutions."""
    config = {k: v for k, v in unet.items() if k in CONTROLNET_KEYS}
    write(OUT / name / "config.json", {
        "_class_name": "ControlNetModel", "_diffusers_version": VERSION, **config,
        "conditioning_embedding_out_channels": [16, 32, 96, 256],
        "controlnet_conditioning_channel_order": "rgb", "conditioning_channels": 3})


def main(bpe: str) -> None:
    vocab, merges = clip_vocab(Path(bpe))
    assert len(vocab) == 49408, len(vocab)
    if OUT.exists():
        shutil.rmtree(OUT)
    shared_tokenizer(vocab, merges)
    vae1 = {**VAE, "sample_size": 512, "scaling_factor": 0.18215}
    pndm = {**SCHED, "_class_name": "PNDMScheduler", "prediction_type": "epsilon"}
    ddim_v = {**SCHED, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
    ddim_e = {**ddim_v, "prediction_type": "epsilon"}
    sd("sd15", UNET_SD1, CLIP_L, "<|endoftext|>", pndm, vae1, vocab, merges)
    sd("sd15_inpaint", {**UNET_SD1, "in_channels": 9}, CLIP_L, "<|endoftext|>", pndm, vae1,
       vocab, merges)
    sd("sd2", {**UNET_SD2, "sample_size": 96}, CLIP_H, "!", ddim_v, {**vae1, "sample_size": 768},
       vocab, merges)
    sd("sd2_eps", {**UNET_SD2, "sample_size": 64, "upcast_attention": False}, CLIP_H, "!",
       ddim_e, vae1, vocab, merges)
    sd("sd2_inpaint", {**UNET_SD2, "in_channels": 9, "sample_size": 64,
                       "upcast_attention": False}, CLIP_H, "!", ddim_e, vae1, vocab, merges)
    xl("sdxl", UNET_XL, vocab, merges, refiner=False)
    xl("sdxl_refiner", UNET_XL_REFINER, vocab, merges, refiner=True)
    xl("sdxl_inpaint", {**UNET_XL, "in_channels": 9}, vocab, merges, refiner=False)
    controlnet("controlnet_sd15", UNET_SD1)
    controlnet("controlnet_sd2", UNET_SD2)
    controlnet("controlnet_sdxl", UNET_XL)
    print("wrote", ", ".join(sorted(p.name for p in OUT.iterdir())))


if __name__ == "__main__":
    main(sys.argv[1])
