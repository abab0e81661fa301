"""Weights from users' files into modules, without building them twice: a module is
built on the meta device (no random initialisation, no memory), then each tensor read
from the file is cast once to the compute dtype and assigned in place.

`open_weights` gives a file's tensors as a lazy mapping (names and shapes from the header;
a tensor is read when asked for); `build` makes a module on the meta device; `assign`
moves a state dict into it, naming what is missing. Every loader (checkpoints, UNets and
transformers, VAEs, text encoders, ControlNets) goes through these three."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.errors import InputError

SAFETENSORS = (".safetensors", ".sft")
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class Weights(Mapping[str, Any]):
    """A safetensors file's tensors by name, read on demand. `shape(k)` and `dtype(k)`
    answer from the header without reading; `meta()` gives them all as meta tensors.
    Tensors are read with plain reads into fresh memory, never memory-mapped: a mapped
    file's pages would count against the process as long as the mapping lives."""

    def __init__(self, path: Path, header: dict[str, Any], metadata: dict[str, str],
                 data_start: int = 0, input_name: str | None = None):
        self.path, self._header, self.metadata = path, header, metadata
        self._start, self.input_name = data_start, input_name

    def __getitem__(self, key: str) -> Any:
        if key not in self._header:
            raise KeyError(key)
        return next(self.stream([key]))[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._header[key]["shape"])

    def dtype(self, key: str) -> str:
        """The torch dtype name the file stores `key` in (e.g. float16, float8_e4m3fn)."""
        return _DTYPES.get(self._header[key]["dtype"], self._header[key]["dtype"])

    def meta(self) -> dict[str, Any]:
        import torch

        return {k: torch.empty(self.shape(k), dtype=getattr(torch, self.dtype(k), None),
                               device="meta") for k in self._header}

    def stream(self, keys: Iterable[str] | None = None, dtype: Any = None,
               keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Any]]:
        """(key, tensor) for `keys` (all by default) in the file's order, one sequential
        pass. Floating tensors come cast to `dtype` unless `keep(key)`; a tensor that needs
        a cast is read into one reused scratch buffer, so the only new memory is the
        result."""
        import torch

        order = sorted(set(self._header if keys is None else keys),
                       key=lambda k: self._header[k]["data_offsets"][0])
        scratch = None
        with open(self.path, "rb", buffering=0) as f:
            for key in order:
                entry = self._header[key]
                start, end = entry["data_offsets"]
                stored = getattr(torch, self.dtype(key), None)
                if not isinstance(stored, torch.dtype) or end - start != \
                        math.prod(entry["shape"]) * stored.itemsize:
                    raise InputError(self.input_name, "a well-formed .safetensors file",
                                     self.path.name, hint=f"{key}: its dtype, shape and size "
                                     "do not agree")
                cast = dtype is not None and stored.is_floating_point and stored != dtype \
                    and not (keep and keep(key))
                if cast:
                    if scratch is None or scratch.numel() < end - start:
                        scratch = torch.empty(end - start, dtype=torch.uint8)
                    raw = scratch[:end - start]
                else:
                    raw = torch.empty(end - start, dtype=torch.uint8)
                f.seek(self._start + start)
                if end > start and f.readinto(memoryview(raw.numpy())) != end - start:
                    raise InputError(self.input_name, "a complete .safetensors file",
                                     self.path.name, hint=f"it ends inside {key}")
                t = raw.view(stored).reshape(entry["shape"])
                yield key, (t.to(dtype) if cast else t)

    def close(self) -> None:
        """Nothing stays open between reads; kept for callers that close what they open."""


def read_header(path: Path, input_name: str | None = None) -> tuple[dict[str, Any],
                                                                   dict[str, str]]:
    """A safetensors file's tensor entries and its metadata, read from the header alone."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > 100 << 20:
                raise ValueError("the header is implausibly large")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise InputError(input_name, "a readable .safetensors file", path.name,
                         hint=str(exc)) from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata


def header_size(path: Path) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


def check_model_file(path: Path, input_name: str | None = None) -> None:
    """Refuse a model path that is not a regular file: a FIFO or a device would hang or
    flood the read."""
    from engine.fsutil import check_user_file

    try:
        check_user_file(path, "model file")
    except OSError as exc:
        raise InputError(input_name, "a model file", str(path),
                         hint=exc.strerror or str(exc)) from None


def open_weights(path: Path, input_name: str | None = None) -> Weights:
    """The tensors of a .safetensors file, lazily (see `Weights`)."""
    check_model_file(path, input_name)
    header, metadata = read_header(path, input_name)
    return Weights(path, header, metadata, 8 + header_size(path), input_name)


def build(factory: Callable[[], Any]) -> Any:
    """`factory()` (a module constructor) with its parameters on the meta device: they have
    shapes and dtypes but no memory and no random values. Buffers stay real, since some
    are computed in the constructor and never saved (CLIP's position ids)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def assign(module: Any, state: Mapping[str, Any], dtype: Any, input_name: str | None,
           what: str, filename: str, keep: Callable[[str], bool] | None = None) -> list[str]:
    """Put each tensor of `state` into the meta-built `module` in place, cast to `dtype`
    one tensor at a time (floating tensors only; those `keep(name)` is true for keep the
    file's dtype, e.g. fp8 storage). Buffers the file lacks keep their built values.
    Parameters still on meta afterwards are missing weights: an error naming the input,
    the file and an example. Returns the keys of `state` the module has no place for."""
    part = Part(module, dtype, keep=keep)
    unexpected = [k for k in state if not part.has(k)]
    load(state, [part], input_name, what, filename)
    return unexpected


class Part:
    """One meta-built module to fill from a file: `convert(state)` maps the file's names
    (a dict of its tensors) to the module's, as diffusers' single-file conversions do;
    None takes the names as they are."""

    def __init__(self, module: Any, dtype: Any, convert: Callable[[dict], dict] | None = None,
                 keep: Callable[[str], bool] | None = None, what: str | None = None):
        self.module, self.dtype, self.convert, self.keep, self.what = \
            module, dtype, convert, keep, what
        self.params = dict(module.named_parameters())
        skip = {f"{name}.{b}" if name else b for name, m in module.named_modules()
                for b in m._non_persistent_buffers_set}
        self.buffers = {k: b for k, b in module.named_buffers() if k not in skip}

    def has(self, key: str) -> bool:
        return key in self.params or key in self.buffers

    def put(self, key: str, tensor: Any, input_name: str | None, filename: str) -> None:
        target = self.params.get(key)
        if target is None:
            target = self.buffers.get(key)
        if target is None:
            return
        if tuple(tensor.shape) != tuple(target.shape):
            raise InputError(input_name, self.what or "a matching model file", filename,
                             hint=f"{key} has shape {tuple(tensor.shape)}, the model "
                             f"expects {tuple(target.shape)}")
        if tensor.is_floating_point() and tensor.dtype != self.dtype \
                and not (self.keep and self.keep(key)):
            tensor = tensor.to(self.dtype)
        _set(self.module, key, tensor, key in self.params)


class _Recorder(dict):
    """A state dict that notes which keys a conversion reads."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            self.read.add(key)
        return super().get(key, default)

    def items(self):
        self.read.update(self)
        return super().items()

    def values(self):
        self.read.update(self)
        return super().values()


def _plan(state: Mapping[str, Any], meta: dict[str, Any], part: Part
          ) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Which file tensor lands under which of `part`'s names, learnt by running its
    conversion on meta tensors: an output that is one of the inputs is a rename. The few
    outputs computed from inputs (OpenCLIP's fused q/k/v split, VAE attention reshapes) are
    computed for real, from just the inputs the conversion read and did not rename."""
    if part.convert is None:
        return {k: [k] for k in meta if part.has(k)}, {}
    rec = _Recorder(meta)
    out = part.convert(rec)
    source = {id(t): k for k, t in meta.items()}
    renames: dict[str, list[str]] = {}
    derived = []
    for name, t in out.items():
        if not part.has(name):
            continue
        if id(t) in source:
            renames.setdefault(source[id(t)], []).append(name)
        else:
            derived.append(name)
    if not derived:
        return renames, {}
    real = dict(meta)
    for k in rec.read - renames.keys():
        real[k] = state[k]
    out = part.convert(real)
    if any(out[n].is_meta for n in derived):  # computed from renamed inputs too: read all
        out = part.convert({k: state[k] if k in rec.read else t for k, t in meta.items()})
    return renames, {n: out[n] for n in derived}


def load(state: Mapping[str, Any], parts: list[Part], input_name: str | None, what: str,
         filename: str) -> None:
    """Fill every part from `state` (a `Weights` file or a dict of tensors) in one pass over
    the file, each tensor read once, cast once to its part's dtype, and put in place. A
    part left with parameters on meta is missing weights: an error naming the input, the
    file and an example."""
    meta = state.meta() if isinstance(state, Weights) else dict(state)
    where: dict[str, list[tuple[Part, str]]] = {}
    for part in parts:
        renames, derived = _plan(state, meta, part)
        for key, names in renames.items():
            where.setdefault(key, []).extend((part, n) for n in names)
        for name, t in derived.items():
            part.put(name, t, input_name, filename)
    if isinstance(state, Weights):
        # cast while reading when every destination wants the same dtype
        dtypes = {p.dtype for p in parts}
        one = dtypes.pop() if len(dtypes) == 1 and not any(p.keep for p in parts) else None
        tensors: Iterable[tuple[str, Any]] = state.stream(where, one)
    else:
        tensors = ((k, state[k]) for k in where)
    for key, t in tensors:
        for part, name in where[key]:
            part.put(name, t, input_name, filename)
    for part in parts:
        missing = [k for k, p in part.module.named_parameters() if p.is_meta]
        if missing:
            raise InputError(input_name, part.what or what, filename,
                             hint=f"{len(missing)} weights missing, e.g. {missing[0]}")
        part.module.requires_grad_(False)
        part.module.eval()


def _set(module: Any, key: str, tensor: Any, is_param: bool) -> None:
    import torch

    owner_name, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if is_param:
        owner._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[name] = tensor
