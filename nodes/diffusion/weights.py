"""Weights from users' files into modules, without building them twice: a module is
built on the meta device (no random initialisation, no memory), then each tensor read
from the file is cast once to the compute dtype and assigned in place.

`open_weights` gives a file's tensors as a lazy mapping (names and shapes from the header;
a tensor is read when asked for); `build` makes a module on the meta device; `assign`
moves a state dict into it, naming what is missing. Every loader (checkpoints, UNets and
transformers, VAEs, text encoders, ControlNets) goes through these three."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.errors import InputError

SAFETENSORS = (".safetensors", ".sft")
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class Weights(Mapping[str, Any]):
    """A safetensors file's tensors by name, read on demand. `shape(k)` and `dtype(k)`
    answer from the header without reading; `meta()` gives them all as meta tensors."""

    def __init__(self, path: Path, header: dict[str, Any], metadata: dict[str, str]):
        self.path, self._header, self.metadata = path, header, metadata
        self._file: Any = None

    def __getitem__(self, key: str) -> Any:
        if key not in self._header:
            raise KeyError(key)
        from safetensors import safe_open

        if self._file is None:
            self._file = safe_open(str(self.path), framework="pt")
        return self._file.get_tensor(key)

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

    def close(self) -> None:
        self._file = None


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


def open_weights(path: Path, input_name: str | None = None) -> Weights:
    """The tensors of a .safetensors file, lazily (see `Weights`)."""
    from .loading import check_model_file

    check_model_file(path, input_name)
    header, metadata = read_header(path, input_name)
    return Weights(path, header, metadata)


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
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    unexpected = []
    for key in state:
        target = params.get(key)
        if target is None:
            target = buffers.get(key)
        if target is None:
            unexpected.append(key)
            continue
        t = state[key]
        if tuple(t.shape) != tuple(target.shape):
            raise InputError(input_name, what, filename,
                             hint=f"{key} has shape {tuple(t.shape)}, the model expects "
                             f"{tuple(target.shape)}")
        if t.is_floating_point() and not (keep and keep(key)):
            t = t.to(dtype)
        _set(module, key, t, key in params)
    missing = [k for k, p in module.named_parameters() if p.is_meta]
    if missing:
        raise InputError(input_name, what, filename,
                         hint=f"{len(missing)} weights missing, e.g. {missing[0]}")
    module.requires_grad_(False)
    module.eval()
    return unexpected


def _set(module: Any, key: str, tensor: Any, is_param: bool) -> None:
    import torch

    owner_name, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if is_param:
        owner._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[name] = tensor
