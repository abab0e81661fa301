"""Reading users' model files: diffusers folders and single-file checkpoints (original
layout), offline. Single files get their architecture from the config folders shipped in
`resources/configs/<family>/`, or from a `NAME.config/` folder beside the file. The shipped
folders share one CLIP vocabulary (`configs/tokenizers/clip/`)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.resources import RESOURCES

from .arch import Arch, Prediction
from .weights import check_model_file

CONFIGS = RESOURCES / "configs"
CLIP_VOCAB = CONFIGS / "tokenizers" / "clip"

# diffusers' model type names -> Loom's families
FAMILY_OF = {"v1": Arch.sd15, "v2": Arch.sd2, "xl_base": Arch.sdxl,
             "xl_refiner": Arch.sdxl_refiner, "inpainting": Arch.sd15_inpaint,
             "inpainting_v2": Arch.sd2_inpaint, "xl_inpaint": Arch.sdxl_inpaint}
SUPPORTED = tuple(Arch)
# the width of the text context a ControlNet reads -> the family it is made for
FAMILY_BY_CONTEXT = {a.context_dim: a for a in Arch.bases()}


@dataclass
class Components:
    """What a checkpoint holds, as live modules (owned by the model manager)."""

    family: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    text_encoder_2: Any = None
    tokenizer_2: Any = None

    def items(self):
        return {k: v for k, v in self.__dict__.items() if hasattr(v, "parameters")}.items()

    def values(self):
        return [v for _, v in self.items()]


def quiet() -> None:
    """diffusers and transformers print progress bars and notes; Loom reports its own."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a .safetensors file, or of a pickled .ckpt/.pt/.bin loaded safely."""
    from .weights import SAFETENSORS, open_weights

    check_model_file(path)
    if path.suffix.lower() in SAFETENSORS:
        return dict(open_weights(path).stream())  # plain reads: no mapped pages linger
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code in them are refused, never run
        raise InputError(None, "a checkpoint that holds only tensors", str(path),
                         hint=f"it could not be read with weights_only=True ({exc}); "
                         "convert it to .safetensors") from None
    while isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    return data


def strip_prefix(sd: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The part of a state dict under the first of `prefixes` it has (with the prefix cut
    off); the state dict itself when it has none of them."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def header_shapes(path: Path) -> dict[str, Any]:
    """Tensor names and shapes of a checkpoint as meta tensors: enough to tell its family
    without reading gigabytes. Pickled files are read (safely) in full."""
    from .weights import SAFETENSORS, open_weights

    if path.suffix.lower() not in SAFETENSORS:
        return read_state_dict(path)
    return open_weights(path, "ckpt_name").meta()


def detect_family(state_dict: dict[str, Any]) -> Arch | None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    if "model.diffusion_model.input_blocks.0.0.weight" not in state_dict:
        return None  # diffusers' guess falls back to SD 1.x for anything at all
    try:
        kind = infer_diffusers_model_type(state_dict)
    except Exception:
        return None
    return FAMILY_OF.get(kind)


def family_of_folder(folder: Path) -> Arch | None:
    index = json.loads((folder / "model_index.json").read_text())
    cls = index.get("_class_name", "")
    in_ch = json.loads((folder / "unet" / "config.json").read_text()).get("in_channels", 4)
    if "XL" in cls:
        if in_ch == 9:
            return Arch.sdxl_inpaint
        return Arch.sdxl_refiner if index.get("text_encoder", [None, None])[0] is None \
            else Arch.sdxl
    cross = json.loads((folder / "unet" / "config.json").read_text()).get("cross_attention_dim")
    return _unet_family(cross if cross == Arch.sd2.context_dim else Arch.sd15.context_dim,
                        in_ch)


def config_folder_for(path: Path, family: str) -> Path:
    sidecar = path.with_suffix(".config")
    if sidecar.is_dir():
        return sidecar
    arch = Arch.of(family)
    if arch is not None and arch.info.other_configs:
        # e.g. SD 2 is 768-v by default; an A1111-style NAME.yaml can say otherwise
        yaml_file = path.with_suffix(".yaml")
        eps = yaml_file.is_file() and "parameterization" not in yaml_file.read_text()
        family = arch.config_folder(Prediction.epsilon if eps else None)
    shipped = CONFIGS / family
    if not (shipped / "model_index.json").is_file():
        known = sorted(p.parent.name for p in CONFIGS.glob("*/model_index.json"))
        raise InputError("ckpt_name", f"a checkpoint of a family Loom has configs for "
                         f"({', '.join(known)})",
                         f"{path.name} ({family})")
    return shipped


def has_vocabulary(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()


def tokenizer_from(folder: Path) -> Any:
    """A CLIP tokenizer from a folder of its settings; the vocabulary and merges are the
    folder's own if it has them, else the shared CLIP ones."""
    from transformers import CLIPTokenizer

    if has_vocabulary(folder):
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True,
                                         vocab_file=str(CLIP_VOCAB / "vocab.json"),
                                         merges_file=str(CLIP_VOCAB / "merges.txt"))


def tokenizers_for(config: Path) -> dict[str, Any]:
    """The tokenizers a config folder names whose vocabulary is shared, built here (diffusers
    would look for the vocabulary in the folder itself)."""
    index = json.loads((config / "model_index.json").read_text())
    return {name: tokenizer_from(config / name) for name in ("tokenizer", "tokenizer_2")
            if (index.get(name) or [None])[0] is not None
            and not has_vocabulary(config / name)}


def require_weights(module: Any, input_name: str, what: str, filename: str) -> None:
    """diffusers loads leniently and leaves parameters it found no weights for on the meta
    device; for Loom a part without weights is an error that names it."""
    missing = [k for k, v in module.state_dict().items() if v.is_meta]
    if missing:
        raise InputError(input_name, what, filename,
                         hint=f"{len(missing)} weights missing, e.g. {missing[0]}")


def _dtype(torch_dtype: Any) -> dict[str, Any]:
    """diffusers renamed torch_dtype to dtype; pass whichever this version takes."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": torch_dtype}
    return {"dtype": torch_dtype}


def load_components(path: Path, torch_dtype: Any = None, vae_dtype: Any = None
                    ) -> Components:
    """Load every part of a checkpoint file or diffusers folder onto the CPU, the VAE in
    `vae_dtype` (default: `torch_dtype`)."""
    quiet()
    if not path.exists():
        raise InputError("ckpt_name", "an existing checkpoint file or diffusers folder",
                         str(path))
    if path.is_dir():
        comps = _load_folder(path, torch_dtype, vae_dtype or torch_dtype)
    else:
        comps = _load_single_file(path, torch_dtype, vae_dtype or torch_dtype)
    if vae_dtype is not None and comps.vae.dtype != vae_dtype:
        comps.vae.to(vae_dtype)
    return comps


def _load_folder(path: Path, torch_dtype: Any, vae_dtype: Any) -> Components:
    """A diffusers folder: through weights.load where each part is one .safetensors file
    (the usual layout), else through diffusers' from_pretrained (shards, .bin, variants)."""
    if not (path / "model_index.json").is_file():
        raise InputError("ckpt_name", "a diffusers folder (with model_index.json)", str(path))
    family = family_of_folder(path)
    names = [n for n in ("unet", "vae", "text_encoder", "text_encoder_2")
             if _component_class(path, n) is not None]
    files = {n: list((path / n).glob("*.safetensors")) for n in names}
    if all(len(f) == 1 for f in files.values()):
        return _load_folder_parts(path, family, {n: f[0] for n, f in files.items()},
                                  torch_dtype, vae_dtype)
    return _load_pipeline(path, family, torch_dtype)


def _load_folder_parts(path: Path, family: Arch, files: dict[str, Path], torch_dtype: Any,
                       vae_dtype: Any) -> Components:
    import torch

    from .weights import Part, load, open_weights

    torch_dtype = torch_dtype or torch.float32
    modules = {"unet": build_unet(read_config(path / "unet")),
               "vae": build_vae(read_config(path / "vae"))}
    for name in files.keys() - modules.keys():
        modules[name] = build_text_encoder(path, name)
    for name, f in files.items():
        part = Part(modules[name], vae_dtype if name == "vae" else torch_dtype,
                    _names_of(modules[name]), what=f"a diffusers folder with every {name} weight")
        load(open_weights(f, "ckpt_name"), [part], "ckpt_name", "", path.name)
    tok = {n: cached_tokenizer(path / n) for n in ("tokenizer", "tokenizer_2")
           if _component_class(path, n) is not None}
    return Components(family, modules["unet"], modules["vae"], modules.get("text_encoder"),
                      tok.get("tokenizer"), scheduler_config(path),
                      modules.get("text_encoder_2"), tok.get("tokenizer_2"))


def _names_of(module: Any) -> Any:
    """A saved part's names -> the module's: transformers saves CLIP text models with or
    without the `text_model.` level depending on its version."""
    own = set(module.state_dict().keys())

    def convert(sd):
        out = {}
        for k, v in sd.items():
            for name in (k, k.removeprefix("text_model."), "text_model." + k):
                if name in own:
                    out[name] = v
                    break
        return out

    return convert


def _load_pipeline(path: Path, family: Arch, torch_dtype: Any) -> Components:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family.is_sdxl_like else StableDiffusionPipeline
    kwargs = {} if family.is_sdxl_like else {"safety_checker": None,
                                             "requires_safety_checker": False}
    pipe = cls.from_pretrained(path, local_files_only=True, **_dtype(torch_dtype), **kwargs)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        m = getattr(pipe, name, None)
        if m is None:
            continue
        require_weights(m, "ckpt_name", f"a checkpoint with every {name} weight", path.name)
        m.requires_grad_(False)
        m.eval()
    return Components(family, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                      dict(pipe.scheduler.config), getattr(pipe, "text_encoder_2", None),
                      getattr(pipe, "tokenizer_2", None))


def open_checkpoint(path: Path, input_name: str) -> Any:
    """A checkpoint's tensors: lazily (`Weights`) for safetensors, in full for pickles."""
    from .weights import SAFETENSORS, open_weights

    if path.suffix.lower() in SAFETENSORS:
        return open_weights(path, input_name)
    return read_state_dict(path)


def meta_of(state: Any) -> dict[str, Any]:
    from .weights import Weights

    return state.meta() if isinstance(state, Weights) else state


def _load_single_file(path: Path, torch_dtype: Any, vae_dtype: Any) -> Components:
    """The new path: modules built on meta, each tensor read once in file order, cast once
    and put in place (see weights.load); diffusers' key conversions learnt on meta."""
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    from .weights import Part, load

    torch_dtype = torch_dtype or torch.float32
    state = open_checkpoint(path, "ckpt_name")
    family = detect_family(meta_of(state))
    if family is None or family not in SUPPORTED:
        raise InputError("ckpt_name", "a Stable Diffusion 1.x, 2.x or SDXL checkpoint",
                         path.name, hint="its layout matched none of these families")
    config = config_folder_for(path, family)
    unet_cfg, vae_cfg = read_config(config / "unet"), read_config(config / "vae")
    unet, vae = build_unet(unet_cfg), build_vae(vae_cfg)
    parts = [Part(unet, torch_dtype, lambda sd: convert_ldm_unet_checkpoint(sd, unet_cfg),
                  what="a checkpoint with every unet weight"),
             Part(vae, vae_dtype, lambda sd: convert_ldm_vae_checkpoint(sd, vae_cfg),
                  what="a checkpoint with every vae weight")]
    encoders = {}
    for name in ("text_encoder", "text_encoder_2"):
        if _component_class(config, name) is None:
            continue
        te = build_text_encoder(config, name)
        encoders[name] = te
        parts.append(Part(te, torch_dtype, _clip_conversion(te, name, family),
                          what=f"a checkpoint with every {name} weight"))
    load(state, parts, "ckpt_name", "a complete checkpoint", path.name)
    tok = {n: cached_tokenizer(config / n) for n in ("tokenizer", "tokenizer_2")
           if _component_class(config, n) is not None}
    return Components(family, unet, vae, encoders.get("text_encoder"), tok.get("tokenizer"),
                      scheduler_config(config), encoders.get("text_encoder_2"),
                      tok.get("tokenizer_2"))


def _clip_conversion(model: Any, name: str, family: Arch) -> Any:
    """diffusers' conversion of a checkpoint's text encoder `name`, chosen as its
    create_diffusers_clip_model_from_ldm chooses (by the keys the file has)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_open_clip_checkpoint,
    )

    flat = not hasattr(model, "text_model")  # transformers >= 5.6 flattened CLIPTextModel

    def convert(sd):
        if "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" \
                in sd or (name == "text_encoder" and family.is_sdxl_like
                          and "conditioner.embedders.0.transformer.text_model.embeddings."
                          "position_embedding.weight" in sd):
            out = convert_ldm_clip_checkpoint(sd)
        elif "cond_stage_model.model.token_embedding.weight" in sd:
            out = convert_open_clip_checkpoint(model, sd, prefix="cond_stage_model.model.")
        elif "conditioner.embedders.1.model.positional_embedding" in sd:
            out = convert_open_clip_checkpoint(model, sd,
                                               prefix="conditioner.embedders.1.model.")
        else:  # the refiner's only encoder
            out = convert_open_clip_checkpoint(model, sd,
                                               prefix="conditioner.embedders.0.model.")
        return {k.removeprefix("text_model."): v for k, v in out.items()} if flat else out

    return convert


@functools.lru_cache(maxsize=64)
def _read_json(path: str, mtime: float) -> str:
    return Path(path).read_text()


def read_config(folder: Path) -> dict[str, Any]:
    """A component's config.json (cached: every load of a family reads the same one)."""
    f = folder / "config.json"
    return json.loads(_read_json(str(f), f.stat().st_mtime))


def _component_class(config: Path, name: str) -> str | None:
    f = config / "model_index.json"
    entry = json.loads(_read_json(str(f), f.stat().st_mtime)).get(name) or [None, None]
    return entry[1] if entry[0] is not None else None


def build_unet(config: dict[str, Any]) -> Any:
    from diffusers import UNet2DConditionModel

    from .weights import build

    return build(lambda: UNet2DConditionModel.from_config(config))


def build_vae(config: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKL

    from .weights import build

    return build(lambda: AutoencoderKL.from_config(config))


def build_text_encoder(config: Path, name: str) -> Any:
    import transformers

    from .weights import build

    cls = getattr(transformers, _component_class(config, name))
    cfg = cls.config_class.from_dict(read_config(config / name))
    return build(lambda: cls(cfg))


def scheduler_config(config: Path) -> dict[str, Any]:
    import diffusers

    cls = getattr(diffusers, _component_class(config, "scheduler"))
    folder = config / "scheduler"
    f = folder / "scheduler_config.json"
    return dict(cls.from_config(json.loads(_read_json(str(f), f.stat().st_mtime))).config)


@functools.lru_cache(maxsize=16)
def _tokenizer(folder: str, mtime: float) -> Any:
    return tokenizer_from(Path(folder))


def cached_tokenizer(folder: Path) -> Any:
    """Tokenizers are read-only once built and slow to build: one per folder."""
    return _tokenizer(str(folder), (folder / "tokenizer_config.json").stat().st_mtime)


UNET_PREFIXES = ("model.diffusion_model.", "unet.")


def load_unet_only(path: Path, torch_dtype: Any = None) -> Components:
    """A UNet without text encoders or VAE (ComfyUI's diffusion_models/): a diffusers unet
    folder, or a single file in the original layout (with or without the
    `model.diffusion_model.` prefix) or in diffusers' layout."""
    import torch
    from diffusers import UNet2DConditionModel

    from .weights import Part, load

    quiet()
    if path.is_dir():
        folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise InputError("unet_name", "a diffusers UNet folder (with config.json)",
                             path.name)
        unet = UNet2DConditionModel.from_pretrained(folder, local_files_only=True,
                                                    **_dtype(torch_dtype))
        family = _unet_family(unet.config.cross_attention_dim, unet.config.in_channels,
                              unknown=Arch.sd15)
    else:
        state = open_checkpoint(path, "unet_name")
        meta = meta_of(state)
        prefix = next((p for p in UNET_PREFIXES if any(k.startswith(p) for k in meta)), "")
        ldm = prefix + "input_blocks.0.0.weight" in meta
        if ldm:
            family = detect_family({"model.diffusion_model." + k[len(prefix):]: v
                                    for k, v in meta.items() if k.startswith(prefix)})
        elif prefix + "conv_in.weight" in meta:
            cross = meta[next(k for k in meta if k.endswith("attn2.to_k.weight"))].shape[1]
            family = _unet_family(cross, meta[prefix + "conv_in.weight"].shape[1])
        else:
            family = None
        if family is None or family not in SUPPORTED:
            raise InputError("unet_name", "the UNet of a Stable Diffusion 1.x, 2.x or SDXL "
                             "model", path.name,
                             hint="Loom does not run other architectures (Flux, SD3, ...)")
        config = read_config(_unet_config(path, family).parent)
        unet = build_unet(config)
        load(state, [Part(unet, torch_dtype or torch.float32,
                          _unet_conversion(prefix, ldm, config))],
             "unet_name", f"a complete {family} UNet", path.name)
    unet.requires_grad_(False).eval()
    sched = json.loads((config_folder_for(path, family) / "scheduler" /
                        "scheduler_config.json").read_text())
    return Components(family, unet, None, None, None, sched)


def _unet_conversion(prefix: str, ldm: bool, config: dict[str, Any]) -> Any:
    """A UNet file's names -> diffusers' (renames only: the plan reads them on meta)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    def convert(sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not ldm:
            return sd
        return convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v
                                            for k, v in sd.items()}, config)

    return convert


def _unet_family(cross_attention_dim: int, in_channels: int, unknown: Arch | None = None
                 ) -> Arch | None:
    """A UNet's family from its text-context width and input channels (9: inpainting)."""
    channels = 9 if in_channels == 9 else 4
    if Arch.from_denoiser(cross_attention_dim) is None and unknown is not None:
        cross_attention_dim = unknown.context_dim
    return Arch.from_denoiser(cross_attention_dim, channels)


def _unet_config(path: Path, family: str) -> Path:
    return config_folder_for(path, family) / "unet" / "config.json"
