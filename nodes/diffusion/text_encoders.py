"""Text encoders from their own files (ComfyUI's text_encoders/ and clip/): CLIP-L, CLIP-G
and the T5 v1.1 encoder, in Hugging Face layout (`text_model.*`, `encoder.block.*`) or
OpenCLIP's. The architecture is read from the tensor shapes; what shapes leave open
follows the released models: 64-wide attention heads, quick-GELU for OpenAI's CLIP-L and
GELU for OpenCLIP's wider encoders. fp8 files stay fp8 in memory and are widened to the
compute dtype one weight at a time when used (ComfyUI's scaled fp8: times its scale)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.spec import Choice, Node, Output, String
from engine.types import T

from .arch import Arch
from .loading import CONFIGS, quiet, tokenizer_from
from .weights import assign, build, open_weights

CLIP_L, CLIP_G, T5 = "clip_l", "clip_g", "t5"
CLIP = "clip"  # a CLIP file before its part is known
HEAD_DIM = 64  # CLIP's and T5 v1.1's released head width
T5_VOCAB = CONFIGS / "tokenizers" / "t5"
_CLIP_TOKEN = "text_model.embeddings.token_embedding.weight"
_T5_Q = "encoder.block.0.layer.0.SelfAttention.q.weight"
_IGNORED = re.compile(r"(text_model\.embeddings\.position_ids|logit_scale|scaled_fp8"
                      r"|.*\.scale_input)$")  # carried by some files, used by none here
_OPEN_CLIP = "transformer.resblocks.0.attn.in_proj_weight"


@dataclass(frozen=True)
class Header:
    """What a text-encoder file is, from its header alone."""

    kind: str  # CLIP or T5
    width: int


def read_kind(path: Path, input_name: str) -> Header:
    w = open_weights(path, input_name)
    keys = set(w)
    if _OPEN_CLIP in keys:
        return Header(CLIP, w.shape("token_embedding.weight")[1])
    if _CLIP_TOKEN in keys:
        return Header(CLIP, w.shape(_CLIP_TOKEN)[1])
    if _T5_Q in keys:
        return Header(T5, w.shape(_T5_Q)[1])
    raise InputError(input_name, "a CLIP-L, CLIP-G or T5 text encoder file", path.name,
                     hint="its tensor names match none of these layouts")


def describe(path: Path) -> str:
    """What `loom models` says of a text encoder file: its part, width and storage."""
    w = open_weights(path)
    head = read_kind(path, "clip_name")
    role = roles([head], ["clip_name"], [path.name])[0]
    sample = next(k for k in (_T5_Q, "text_model.encoder.layers.0.mlp.fc1.weight",
                              "transformer.resblocks.0.mlp.c_fc.weight") if k in w)
    scaled = " scaled" if "scaled_fp8" in w else ""
    return f"{role} {head.width} {w.dtype(sample)}{scaled}"


def _count(keys: Any, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def from_open_clip(state: dict[str, Any]) -> dict[str, Any]:
    """OpenCLIP's text tower names (and fused q/k/v) as Hugging Face's."""
    out: dict[str, Any] = {}
    ren = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
           "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
    for key, t in state.items():
        if key.startswith("transformer.resblocks."):
            n, rest = key[len("transformer.resblocks."):].split(".", 1)
            base = f"text_model.encoder.layers.{n}."
            if rest.startswith("attn.in_proj_"):
                for part, chunk in zip("qkv", t.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{part}_proj.{rest.rsplit('_', 1)[1]}"] = chunk
                continue
            head, _, leaf = rest.rpartition(".")
            out[base + ren.get(head, head) + "." + leaf] = t
        elif key == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = t
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = t
        elif key.startswith("ln_final."):
            out["text_model.final_layer_norm." + key.split(".", 1)[1]] = t
        elif key == "text_projection":
            out["text_projection.weight"] = t.T.contiguous()
        else:
            out[key] = t
    return out


def clip_config(shapes: dict[str, tuple[int, ...]], role: str) -> Any:
    from transformers import CLIPTextConfig

    vocab, width = shapes[_CLIP_TOKEN]
    proj = shapes.get("text_projection.weight")
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=width,
        intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=_count(shapes, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(width // HEAD_DIM, 1),
        max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
        hidden_act="quick_gelu" if role == CLIP_L else "gelu",
        projection_dim=proj[0] if proj else width, bos_token_id=49406, eos_token_id=49407)


def t5_config(shapes: dict[str, tuple[int, ...]]) -> Any:
    from transformers import T5Config

    vocab, width = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    ff = "encoder.block.0.layer.1.DenseReluDense."
    gated = ff + "wi_0.weight" in shapes
    return T5Config(
        vocab_size=vocab, d_model=width, d_kv=HEAD_DIM,
        d_ff=shapes[ff + ("wi_0.weight" if gated else "wi.weight")][0],
        num_layers=_count(shapes, r"encoder\.block\.(\d+)\."),
        num_heads=max(shapes[_T5_Q][0] // HEAD_DIM, 1),
        relative_attention_num_buckets=shapes[
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0],
        feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
        use_cache=False)


def load_encoder(path: Path, role: str, dtype: Any, input_name: str, plain: bool = False
                 ) -> Any:
    """One text encoder file as a module on the CPU, with no weight missing or left over:
    T5EncoderModel, or CLIPTextModelWithProjection (its projection the identity where the
    file has none); `plain`: a CLIPTextModel, as the SD families' code reads it (a CLIP-L
    file's projection is then not used)."""
    import torch

    quiet()
    w = open_weights(path, input_name)
    what = f"a complete {role} text encoder"
    if _OPEN_CLIP in w:  # q, k and v are fused: converted in memory
        tensors = from_open_clip({k: w[k] for k in w})
        source = _Source(tensors, lambda k: tuple(tensors[k].shape),
                         lambda k: str(tensors[k].dtype).removeprefix("torch."))
    else:  # read one tensor at a time, as assign casts and places it
        source = _Source(w, w.shape, w.dtype)
    names = {k: k for k in source.data if not _IGNORED.match(k)}  # module name -> file's
    scales = {k[:-len(".scale_weight")]: source.data[names.pop(k)] for k in list(names)
              if k.endswith(".scale_weight")}
    shapes = {k: source.shape(v) for k, v in names.items()}
    try:
        if role == T5:
            from transformers import T5EncoderModel

            config = t5_config(shapes)
            model = build(lambda: T5EncoderModel(config))
            model.encoder.embed_tokens = model.shared  # one embedding, however it is saved
            alias = names.pop("encoder.embed_tokens.weight", None)
            names.setdefault("shared.weight", alias)
        else:
            from transformers import CLIPTextModel, CLIPTextModelWithProjection

            config = clip_config(shapes, role)
            if "text_projection.weight" not in names and role == CLIP_G:
                raise InputError(input_name, what, path.name,
                                 hint="a CLIP-G without its text_projection")
            if plain:  # transformers' CLIPTextModel has no text_model level of its own
                names.pop("text_projection.weight", None)
                names = {k.removeprefix("text_model."): v for k, v in names.items()}
                model = build(lambda: CLIPTextModel(config))
            else:
                model = build(lambda: CLIPTextModelWithProjection(config))
                if "text_projection.weight" not in names:
                    model.text_projection = torch.nn.Identity()
    except KeyError as exc:
        raise InputError(input_name, what, path.name,
                         hint=f"{exc.args[0]} is missing") from None
    state = _View(source.data, names)
    fp8 = {k for k, v in names.items() if source.dtype(v).startswith("float8")}
    unexpected = assign(model, state, dtype, input_name, what, path.name,
                        keep=fp8.__contains__)
    if unexpected:
        raise InputError(input_name, what, path.name,
                         hint=f"{len(unexpected)} tensors fit no {role} weight, e.g. "
                         f"{unexpected[0]}")
    if dtype == torch.float16 and role == T5:  # as transformers keeps T5's wo: fp16 overflows
        for name, mod in model.named_modules():
            if name.endswith(".wo") and name + ".weight" not in fp8:
                mod.float()
    widen_fp8(model, dtype, scales)
    return model


@dataclass
class _Source:
    """A file's tensors (lazily, or converted in memory), with their shapes and dtypes."""

    data: Any
    shape: Any
    dtype: Any


class _View(Mapping[str, Any]):
    """The source's tensors under the module's names (read when asked for)."""

    def __init__(self, data: Any, names: dict[str, str]):
        self.data, self.names = data, names

    def __getitem__(self, key: str) -> Any:
        return self.data[self.names[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def widen_fp8(model: Any, dtype: Any, scales: dict[str, Any]) -> None:
    """Keep fp8 weights fp8 and give each module its weight in `dtype` (times its scale)
    as it is read: a parametrization computes it on access, so a layer's wider copy lives
    only while that layer runs, and code that reads `.weight.dtype` sees the compute dtype."""
    import torch
    from torch.nn.utils import parametrize

    for name, mod in list(model.named_modules()):
        weight = mod._parameters.get("weight")
        if weight is None or weight.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            continue
        scale = scales.get(name)
        target = torch.float32 if name.endswith(".wo") and dtype == torch.float16 else dtype
        parametrize.register_parametrization(mod, "weight", _widen()(target, scale),
                                             unsafe=True)


@lru_cache(maxsize=1)
def _widen() -> Any:
    import torch

    class Widen(torch.nn.Module):
        """An fp8 weight in the compute dtype, scaled (ComfyUI's scale_weight)."""

        def __init__(self, dtype: Any, scale: Any = None):
            super().__init__()
            self.dtype = dtype
            self.register_buffer("scale", None if scale is None else scale.float())

        def forward(self, weight: Any) -> Any:
            w = weight.to(self.dtype)
            return w if self.scale is None else w * self.scale.to(self.dtype)

    return Widen


def roles(headers: list[Header], input_names: list[str], names: list[str]) -> list[str]:
    """Each file's part: T5, or CLIP-L / CLIP-G: of two CLIPs the wider is G; one alone is
    G when it is wider than the released CLIP-L (768)."""
    clips = [h.width for h in headers if h.kind == CLIP]
    out = []
    for h in headers:
        if h.kind == T5:
            out.append(T5)
        elif len(clips) > 1:
            out.append(CLIP_G if h.width == max(clips) and h.width != min(clips) else CLIP_L)
        else:
            out.append(CLIP_G if h.width > Arch.sd15.context_dim else CLIP_L)
    for role in (CLIP_L, CLIP_G, T5):
        if out.count(role) > 1:
            dup = [n for n, r in zip(names, out, strict=True) if r == role]
            raise InputError(input_names[out.index(role)], f"one {role} file at most",
                             ", ".join(dup))
    return out


@cache
def tokenizer(role: str) -> Any:
    """The role's tokenizer: CLIP's shared vocabulary (CLIP-G pads with "!", CLIP-L with
    its end token, as SDXL's and SD3's releases do) or T5's."""
    if role == T5:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(T5_VOCAB), local_files_only=True)
    folder = CONFIGS / Arch.sdxl.config_folder() / ("tokenizer_2" if role == CLIP_G
                                                    else "tokenizer")
    return tokenizer_from(folder)


# ---- the loaders ----------------------------------------------------------------------------

FLUX, SD3 = "flux", "sd3"
SD_ONE = "stable_diffusion"  # ComfyUI's name for a CLIP-L alone (SD 1.x)
ONE_TYPES = (SD_ONE, SD3)
DUAL_TYPES = (Arch.sdxl.value, SD3, FLUX)
# a type -> (its family, the parts it needs; None: any of CLIP-L, CLIP-G and T5)
TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    SD_ONE: (Arch.sd15.value, frozenset({CLIP_L})),
    Arch.sdxl.value: (Arch.sdxl.value, frozenset({CLIP_L, CLIP_G})),
    FLUX: (FLUX, frozenset({CLIP_L, T5})),
    SD3: (SD3, None),
}
SD_FAMILIES = frozenset({Arch.sd15.value, Arch.sdxl.value})  # read by the SD families' code
KEY = "tenc:"
_NAMES = {CLIP_L: "CLIP-L", CLIP_G: "CLIP-G", T5: "T5"}


def find_encoder(ctx, name: str, input_name: str) -> Path:
    from .files import CLIP_FILES, TEXT_ENCODERS, find

    try:
        return find(ctx, TEXT_ENCODERS, name, input_name)
    except InputError:
        try:
            return ctx.models.paths.find(CLIP_FILES, name)
        except LookupError:
            pass
        raise


def load_clip(ctx, named: list[tuple[str, str]], type_: str) -> Any:
    """A CLIP ref for text encoder files (input name, file name) of a ComfyUI type."""
    from engine.runtime.models import ModelRef

    from .files import model_key

    if type_ not in TYPES:
        raise InputError("clip_type", f"one of {', '.join(TYPES)}", type_)
    family, needs = TYPES[type_]
    paths = [find_encoder(ctx, name, inp) for inp, name in named]
    got = roles([read_kind(p, inp) for p, (inp, _) in zip(paths, named, strict=True)],
                [inp for inp, _ in named], [n for _, n in named])
    if needs is not None and set(got) != needs:
        want = " + ".join(_NAMES[r] for r in (CLIP_L, CLIP_G, T5) if r in needs)
        have = ", ".join(f"{n}: {_NAMES[r]}" for (_, n), r in zip(named, got, strict=True))
        raise InputError(named[0][0], f"{want} files for type {type_}", have)
    parts = tuple(sorted(((r, str(p), inp) for r, p, (inp, _) in zip(got, paths, named,
                                                                       strict=True)),
                         key=lambda part: (CLIP_L, CLIP_G, T5).index(part[0])))
    dtype = ctx.models.device.dtype
    key = KEY + family + "|" + "|".join(model_key(r, Path(p), dtype) for r, p, _ in parts)
    ref = ModelRef("CLIP", family, parts[0][1], key, extra=(("parts", parts),))
    components(ctx, ref)  # load now: a bad file fails this node
    return ref


@dataclass
class Encoders:
    """The encoders behind a CLIP ref from the loaders, by part, each asked of the model
    manager when used (so it is on the device then); the SD families' code reads them under
    the names a checkpoint's components have."""

    family: str
    getters: dict[str, Any]

    def part(self, role: str) -> Any:
        return self.getters[role]()

    @property
    def parts(self) -> dict[str, Any]:
        return {role: get() for role, get in self.getters.items()}

    def values(self) -> list[Any]:
        return list(self.parts.values())

    @property
    def text_encoder(self) -> Any:
        return self.part(CLIP_L) if CLIP_L in self.getters else None

    @property
    def tokenizer(self) -> Any:
        return tokenizer(CLIP_L)

    @property
    def text_encoder_2(self) -> Any:
        return self.part(CLIP_G) if CLIP_G in self.getters and self.family in SD_FAMILIES \
            else None

    @property
    def tokenizer_2(self) -> Any:
        return tokenizer(CLIP_G)


def components(ctx, ref: Any) -> Encoders:
    """Each part of a loader's CLIP ref, loaded now and once by the model manager (a file
    several loaders use is one model)."""
    import torch

    from .files import model_key

    manager = ctx.models
    dtype_name = manager.device.dtype
    if ref.patches:
        ctx.log.warning("LoRA on text encoders loaded from their own files is not applied")
    getters = {}
    for role, source, input_name in ref.get("parts", ()):
        path = Path(source)
        plain = ref.family in SD_FAMILIES and role == CLIP_L
        key = model_key(KEY + role + (":plain" if plain else ""), path, dtype_name)

        def get(key=key, p=path, r=role, i=input_name, b=plain):
            return manager.get(key, lambda: load_encoder(p, r, getattr(torch, dtype_name), i,
                                                         plain=b))

        get()
        getters[role] = get
    return Encoders(ref.family, getters)


def _fingerprint(values: dict[str, Any], env: Any, names: tuple[str, ...]) -> Any:
    from engine.spec import _stat_print

    from .files import CLIP_FILES, TEXT_ENCODERS

    out = {}
    for name in names:
        value = values.get(name) or ""
        path = None
        if env.find_model and value:
            path = env.find_model(TEXT_ENCODERS, value) or env.find_model(CLIP_FILES, value)
        out[name] = _stat_print(path)
    return out


def _file(name: str) -> Any:
    from .files import TEXT_ENCODERS

    return String(name, "", file=TEXT_ENCODERS, description="a file in text_encoders/ or clip/")


class LoadTextEncoder(Node):
    type = "load_text_encoder"
    title = "Load Text Encoder"
    category = "loaders"
    description = ("One text encoder file (CLIP-L, CLIP-G or T5; fp16, fp8 or ComfyUI's scaled "
                   "fp8). clip_type stable_diffusion: a CLIP-L for SD 1.x; sd3: any one of SD3.5's "
                   "three (the others are left out, as zeros).")
    inputs = (_file("clip_name"), Choice("clip_type", ONE_TYPES, SD_ONE))
    outputs = (Output("clip", T.clip),)

    def run(self, ctx, clip_name, clip_type=SD_ONE):
        return {"clip": load_clip(ctx, [("clip_name", clip_name)], clip_type)}

    @classmethod
    def fingerprint(cls, values, env):
        return _fingerprint(values, env, ("clip_name",))


class LoadDualTextEncoders(Node):
    type = "load_dual_text_encoders"
    title = "Load Dual Text Encoders"
    category = "loaders"
    description = ("Two text encoder files, in either order: flux takes CLIP-L and T5, sdxl "
                   "CLIP-L and CLIP-G, sd3 any two of CLIP-L, CLIP-G and T5.")
    inputs = (_file("clip_name1"), _file("clip_name2"), Choice("clip_type", DUAL_TYPES, FLUX))
    outputs = (Output("clip", T.clip),)

    def run(self, ctx, clip_name1, clip_name2, clip_type=FLUX):
        return {"clip": load_clip(ctx, [("clip_name1", clip_name1),
                                        ("clip_name2", clip_name2)], clip_type)}

    @classmethod
    def fingerprint(cls, values, env):
        return _fingerprint(values, env, ("clip_name1", "clip_name2"))


class LoadTripleTextEncoders(Node):
    type = "load_triple_text_encoders"
    title = "Load Triple Text Encoders"
    category = "loaders"
    description = "SD3.5's three text encoders: CLIP-L, CLIP-G and T5, in any order."
    inputs = (_file("clip_name1"), _file("clip_name2"), _file("clip_name3"))
    outputs = (Output("clip", T.clip),)

    def run(self, ctx, clip_name1, clip_name2, clip_name3):
        named = [("clip_name1", clip_name1), ("clip_name2", clip_name2),
                 ("clip_name3", clip_name3)]
        return {"clip": load_clip(ctx, named, SD3)}

    @classmethod
    def fingerprint(cls, values, env):
        return _fingerprint(values, env, ("clip_name1", "clip_name2", "clip_name3"))


NODES = (LoadTextEncoder, LoadDualTextEncoders, LoadTripleTextEncoders)
