"""Memory estimates of the diffusion nodes (engine.estimates): a model's weights from its
files' headers (no tensor is read), activations from the architecture's config and the
requested latent size and batch.

The activation constants are measured, not derived: peak RSS above the weights while each
node ran on CPU in float32, on a mid-size SD 1.5-shaped model (testing/midsize.py) at 256²
to 768², batch 1 and 4, with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=1 MiB):
with its default dynamic threshold, freed heap kept by the allocator moved the same graph's
peak by +-25% from run to run, so the constants count the memory tensors hold and a real
run's RSS can sit up to a quarter above. tests/test_memory_estimates.py holds the estimates
to ±25% of measured peaks. In floats per pixel of the stage's resolution, per image in the
batch (the sampler's constants fitted to 256²..768² at batch 2 and 4 within 6%):"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from engine.estimates import Estimate, EstimateEnv
from engine.registry import Registry

from .arch import Arch
from .files import CHECKPOINTS, DIFFUSERS, DIFFUSION_MODELS, VAES
from .loading import CONFIGS
from .vae import TILE_PIXELS

UNET_ATTENTION = 26.0  # x channels, at a resolution level with attention (transformer blocks)
UNET_RESNET = 4.0  # x channels, at a level of resnets only (as in the VAE's decoder)
VAE_DECODE = 4.0  # x the widest of the decoder's two top levels' channels, at image size
VAE_ENCODE = 4.0  # x the encoder's first level's channels, at image size
TEXT = 16.0  # x the encoder's width, per token (77 tokens)
SAMPLER_FIXED = 8 << 20  # bytes a sampler holds whatever the size (noise, schedule, buffers)
TILE = 512  # pixels per side of a tiled decode's tile (diffusers' default for SD VAEs)

_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_VAE_PREFIXES = ("first_stage_model.", "vae.")


def header(path: Path) -> dict[str, Any]:
    """A safetensors file's tensor table (name -> dtype, shape), read without torch; kept
    while the file is unchanged (the editor estimates after every edit)."""
    st = os.stat(path)
    return _header(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _header(path: str, size: int, mtime: int) -> dict[str, Any]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > 100 << 20:
            raise ValueError(f"{path}: not a safetensors file")
        table: dict[str, Any] = json.loads(f.read(n))
    table.pop("__metadata__", None)
    return table


def weight_bytes(path: Path, env: EstimateEnv, vae: bool = False) -> int:
    """Bytes of a file's tensors once loaded: floating tensors at the compute dtype (the
    VAE's own for a VAE's tensors), others as stored."""
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return os.path.getsize(path)  # a pickle: its size is the best cheap guess
    total = 0
    for name, t in header(path).items():
        n = 1
        for d in t["shape"]:
            n *= d
        if t["dtype"].startswith(("F", "BF")):
            total += n * env.bytes_per("vae" if vae or name.startswith(_VAE_PREFIXES)
                                       else "model")
        else:
            total += n * _SIZES.get(t["dtype"], 4)
    return total


def _family(table: dict[str, Any]) -> Arch:
    """The family a checkpoint's keys say, by its text encoders (enough for the shapes)."""
    if any(k.startswith("conditioner.embedders.1") or "label_emb." in k or
           k.startswith("add_embedding.") for k in table):  # SDXL, or an SDXL UNet alone
        return Arch.sdxl
    if any(k.startswith("cond_stage_model.model.") for k in table):
        return Arch.sd2
    return Arch.sd15


def _config(path: Path, part: str) -> dict[str, Any]:
    """The diffusers config of a checkpoint's part: its folder's, a `NAME.config/` beside
    the file, or the shipped one of the family its keys say."""
    if path.is_dir():
        return dict(json.loads((path / part / "config.json").read_text()))
    side = path.with_suffix(".config") / part / "config.json"
    if side.is_file():
        return dict(json.loads(side.read_text()))
    family = _family(header(path)) if path.suffix.lower() in (".safetensors", ".sft") \
        else Arch.sd15
    return _shipped(family, part)


def _shipped(family: Arch, part: str) -> dict[str, Any]:
    return dict(json.loads((CONFIGS / family.config_folder() / part / "config.json")
                           .read_text()))


def _unet_facts(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"channels": list(cfg["block_out_channels"]), "layers": cfg["layers_per_block"],
            "attn": ["Attn" in t for t in cfg["down_block_types"]]}


def _vae_facts(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"channels": list(cfg["block_out_channels"]),
            "latent": int(cfg.get("latent_channels", 4))}


def _bytes(path: Path, env: EstimateEnv, vae: bool = False) -> int:
    """A model file's loaded bytes, or a folder's (a pipeline's vae/ part at the VAE dtype)."""
    if not path.is_dir():
        return weight_bytes(path, env, vae)
    return sum(weight_bytes(f, env, vae or f.parent.name == "vae")
               for f in path.rglob("*.safetensors"))


def load_checkpoint(values: dict[str, Any], inputs: dict[str, Any],
                    env: EstimateEnv) -> Estimate:
    name = values.get("ckpt_name") or ""
    path = env.find_model and (env.find_model(CHECKPOINTS, name) or
                               env.find_model(DIFFUSERS, name))
    if not path:
        return Estimate()
    models = {str(path): _bytes(path, env)}
    unet, vae = _unet_facts(_config(path, "unet")), _vae_facts(_config(path, "vae"))
    return Estimate(weights=models, outputs={
        "model": {"models": models, "unet": unet}, "clip": {"models": models},
        "vae": {"models": models, "vae": vae}})


def load_vae(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    path = env.find_model and env.find_model(VAES, values.get("vae_name") or "")
    if not path:
        return Estimate()
    models = {str(path): _bytes(path, env, vae=True)}
    cfg = json.loads((path / "config.json").read_text()) if path.is_dir() else \
        _shipped(Arch.of(str(values.get("family", ""))) or Arch.sd15, "vae")
    return Estimate(weights=models, outputs={"vae": {"models": models, "vae": _vae_facts(cfg)}})


def load_diffusion_model(values: dict[str, Any], inputs: dict[str, Any],
                         env: EstimateEnv) -> Estimate:
    path = env.find_model and env.find_model(DIFFUSION_MODELS, values.get("unet_name") or "")
    if not path:
        return Estimate()
    models = {str(path): _bytes(path, env)}
    cfg = json.loads((path / "config.json").read_text()) if path.is_dir() else \
        _config(path, "unet")
    return Estimate(weights=models, outputs={"model": {"models": models,
                                                       "unet": _unet_facts(cfg)}})


def empty_latent(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    b, w, h = (int(values.get(k, d)) for k, d in (("batch_size", 1), ("width", 512),
                                                   ("height", 512)))
    return Estimate(outputs={"latent": {"shape": [b, 4, h // 8, w // 8]}})


def text_encode(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    clip = inputs.get("clip", {})
    return Estimate(weights=dict(clip.get("models", {})),
                    activations=int(77 * 1280 * TEXT * env.bytes_per()))


def unet_activations(unet: dict[str, Any], shape: list[int], batch: int, nbytes: int) -> int:
    """Skip connections kept for the up path, plus the largest level's working memory."""
    pixels = shape[-1] * shape[-2]
    channels, attn, layers = unet["channels"], unet["attn"], unet["layers"]
    kept = channels[0] * pixels  # conv_in
    work = 0.0
    for level, (c, a) in enumerate(zip(channels, attn)):
        p = pixels / 4 ** level
        kept += (layers + (level < len(channels) - 1)) * c * p
        work = max(work, (UNET_ATTENTION if a else UNET_RESNET) * c * p)
    return int(batch * nbytes * (kept + work))


def sampler(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    model, latent = inputs.get("model", {}), inputs.get("latent", {})
    est = Estimate(weights=dict(model.get("models", {})), outputs={"latent": dict(latent)},
                   advice="use a smaller size or batch_size")
    shape, unet = latent.get("shape"), model.get("unet")
    if shape and unet:
        guided = float(values.get("cfg", 7.0)) > 1.0 and "negative" in inputs
        est.activations = unet_activations(unet, shape, shape[0] * (2 if guided else 1),
                                           env.bytes_per()) + SAMPLER_FIXED
    return est


def vae_decode(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    vae, shape = inputs.get("vae", {}), inputs.get("latent", {}).get("shape")
    est = Estimate(weights=dict(vae.get("models", {})),
                   advice="turn on `tiled` on the VAE Decode, or use a smaller size")
    if shape:
        b, h, w = shape[0], shape[2] * 8, shape[3] * 8
        est.outputs["image"] = {"shape": [b, h, w, 3]}
        facts = vae.get("vae")
        if facts:
            pixels = h * w
            if values.get("tiled") or pixels > TILE_PIXELS.get(env.device.split(":")[0],
                                                                2048 * 2048):
                pixels = min(pixels, TILE * TILE)  # VAE Decode tiles large images itself
            c = max(facts["channels"][:2])
            est.activations = int(VAE_DECODE * c * pixels * env.bytes_per("vae")
                                  + b * h * w * 3 * 4)  # and the float32 images it returns
    return est


def vae_encode(values: dict[str, Any], inputs: dict[str, Any], env: EstimateEnv) -> Estimate:
    vae, shape = inputs.get("vae", {}), inputs.get("image", {}).get("shape")
    est = Estimate(weights=dict(vae.get("models", {})),
                   advice="turn on `tiled` on the VAE Encode, or use a smaller image")
    facts = vae.get("vae")
    if shape and facts:
        b, h, w = shape[0], shape[1], shape[2]
        est.outputs["latent"] = {"shape": [b, facts["latent"], h // 8, w // 8]}
        pixels = min(h * w, TILE * TILE) if values.get("tiled") else h * w
        est.activations = int(VAE_ENCODE * facts["channels"][0] * pixels
                              * env.bytes_per("vae"))
    return est


ESTIMATORS = {"load_checkpoint": load_checkpoint, "load_vae": load_vae,
              "load_diffusion_model": load_diffusion_model, "empty_latent": empty_latent,
              "text_encode": text_encode, "sampler": sampler, "vae_decode": vae_decode,
              "vae_encode": vae_encode}


def register(registry: Registry) -> None:
    for type_id, fn in ESTIMATORS.items():
        registry.add_estimator(type_id, fn)
