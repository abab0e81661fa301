"""Values that cross node boundaries: the LATENT and CONDITIONING dataclasses, and the
helpers the cache needs (size in bytes, freezing, in-place change detection, and a
code-free serialisation for the disk tier). Torch is never imported here: tensors are
recognised only once some node has imported torch."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Latent:
    samples: Any  # tensor [B, C, h, w]
    noise_mask: Any = None  # tensor [B, 1, h, w] or None
    batch_index: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Conditioning:
    embeds: Any  # tensor [B, tokens, dim]
    pooled: Any = None  # a pooled text embedding, for models that read one
    controls: tuple[Any, ...] = ()  # control hints (their node package defines them)
    combined: tuple[Any, ...] = ()  # conditionings combined with this one (each on its own)
    extra: dict[str, Any] = field(default_factory=dict)


# Dataclasses the disk tier may rebuild, by name. Nothing else is ever instantiated from
# a cache file, so reading one never runs code. Node packages may add their own.
SERIALIZABLE: dict[str, type] = {c.__name__: c for c in (Latent, Conditioning)}


def _torch() -> Any:
    return sys.modules.get("torch")


def is_tensor(v: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(v, torch.Tensor)


def _children(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return list(v.values())
    if isinstance(v, (list, tuple)):
        return list(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return [getattr(v, f.name) for f in dataclasses.fields(v)]
    return []


def tensors_in(v: Any) -> list[Any]:
    """Every tensor and numpy array inside a value (containers and dataclasses walked)."""
    out: list[Any] = []
    stack = [v]
    while stack:
        x = stack.pop()
        if is_tensor(x) or type(x).__name__ == "ndarray":
            out.append(x)
        elif isinstance(x, (dict, list, tuple)) or dataclasses.is_dataclass(x):
            stack.extend(_children(x))
    return out


def nbytes(v: Any) -> int:
    """Bytes a value holds, for the cache budget. Handles owned by the model manager
    say `loom_cache_bytes = 0`: models are accounted there, not here."""
    own = getattr(v, "loom_cache_bytes", None)
    if own is not None and not isinstance(v, type):
        return int(own)
    if is_tensor(v):
        return int(v.numel() * v.element_size())
    if type(v).__name__ == "ndarray":
        return int(v.nbytes)
    if isinstance(v, (str, bytes)):
        return len(v) + 49
    kids = _children(v)
    return 64 + sum(nbytes(k) for k in kids)


def versions(v: Any) -> list[tuple[Any, int]]:
    """(tensor, version counter) pairs, to detect a node changing its inputs in place."""
    out = []
    for t in tensors_in(v):
        if is_tensor(t) and not t.is_inference():
            out.append((t, t._version))
    return out


def changed_in_place(recorded: list[tuple[Any, int]]) -> bool:
    return any(t._version != ver for t, ver in recorded)


def freeze(v: Any) -> None:
    """Make numpy arrays read-only; tensors are guarded by their version counters."""
    for t in tensors_in(v):
        if type(t).__name__ == "ndarray":
            t.flags.writeable = False


# ---- disk serialisation: a JSON tree plus named arrays, no pickle ----------------------

class NotSerializable(TypeError):
    pass


def encode(value: Any) -> tuple[Any, dict[str, Any]]:
    """Split a value into a JSON tree and a dict of tensors (numpy arrays become tensors)."""
    tensors: dict[str, Any] = {}

    def enc(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            finite = v == v and v not in (float("inf"), float("-inf"))
            return v if finite else {"__float__": repr(v)}
        if is_tensor(v) or type(v).__name__ == "ndarray":
            key = f"t{len(tensors)}"
            kind = "tensor"
            if type(v).__name__ == "ndarray":
                import numpy as np
                import torch  # only reached when arrays are cached
                with warnings.catch_warnings():  # cached arrays are read-only; no copy
                    warnings.simplefilter("ignore", UserWarning)
                    v = torch.from_numpy(np.ascontiguousarray(v))
                kind = "ndarray"
            tensors[key] = v.detach().contiguous().cpu()
            return {"__" + kind + "__": key}
        if isinstance(v, (list, tuple)):
            items = [enc(x) for x in v]
            return items if isinstance(v, list) else {"__tuple__": items}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise NotSerializable("dict with non-string keys")
            if any(k.startswith("__") for k in v):
                return {"__dict__": {k: enc(x) for k, x in v.items()}}
            return {k: enc(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v) and SERIALIZABLE.get(type(v).__name__) is type(v):
            return {"__dataclass__": type(v).__name__,
                    "fields": {f.name: enc(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        raise NotSerializable(f"{type(v).__name__} cannot be stored on disk")

    return enc(value), tensors


def decode(tree: Any, tensors: dict[str, Any]) -> Any:
    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__tensor__" in v:
            return tensors[v["__tensor__"]]
        if "__ndarray__" in v:
            return tensors[v["__ndarray__"]].numpy()
        if "__tuple__" in v:
            return tuple(dec(x) for x in v["__tuple__"])
        if "__float__" in v:
            return float(v["__float__"])
        if "__dict__" in v:
            return {k: dec(x) for k, x in v["__dict__"].items()}
        if "__dataclass__" in v:
            cls = SERIALIZABLE.get(v["__dataclass__"])
            if cls is None:
                raise NotSerializable(f"unknown value class {v['__dataclass__']!r}")
            return cls(**{k: dec(x) for k, x in v["fields"].items()})
        return {k: dec(x) for k, x in v.items()}

    return dec(tree)


# ---- what a value of each link type may be (for entries read back from disk) ----------

def _tensor(ranks: tuple[int, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not is_tensor(v):
            return f"expected a tensor, got {type(v).__name__}"
        if v.dim() not in ranks or not v.is_floating_point():
            return f"expected a float tensor of rank {' or '.join(map(str, ranks))}, " \
                   f"got {v.dtype} {list(v.shape)}"
        return None
    return check


def _instance(cls: type | tuple[type, ...], name: str, inner: Any = None
              ) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) != (cls is bool) or not isinstance(v, cls):
            return f"expected {name}, got {type(v).__name__}"
        return inner(v) if inner is not None else None
    return check


_image = _tensor((4,))
_KINDS: dict[str, Any] = {
    "IMAGE": _image, "MASK": _image, "SIGMAS": _tensor((1,)),
    "LATENT": _instance(Latent, "a LATENT", lambda v: _image(v.samples)),
    "CONDITIONING": _instance(Conditioning, "a CONDITIONING", lambda v: _tensor((3,))(v.embeds)),
    "INT": _instance(int, "an integer"), "SEED": _instance(int, "an integer"),
    "FLOAT": _instance((int, float), "a number"), "BOOL": _instance(bool, "true or false"),
    "STRING": _instance(str, "a string"), "CHOICE": _instance(str, "a string"),
    "SAMPLER": _instance(str, "a sampler name"),
}


def kind_problem(type_name: str, value: Any) -> str | None:
    """Why `value` cannot be a value of link type `type_name` (None if it can). Types
    with no rule here (models, guiders, plugin types) are not checked."""
    check = _KINDS.get(str(type_name))
    return check(value) if check is not None else None


FINITE_TYPES = frozenset({"IMAGE", "MASK", "LATENT", "CONDITIONING"})


def non_finite(value: Any) -> bool:
    """Whether a float tensor inside `value` holds NaN or inf. One float32 sum per tensor
    (a non-finite element makes the sum non-finite); the exact test only when it is."""
    for t in tensors_in(value):
        if is_tensor(t) and t.is_floating_point() and t.numel():
            torch = _torch()
            if not math.isfinite(float(t.sum(dtype=torch.float32))) and \
                    not bool(torch.isfinite(t).all()):
                return True
    return False


def to_json_safe(v: Any, limit: int = 20) -> Any:
    """A small JSON-able summary of a value, for events and `--events json`."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else repr(v)
    if is_tensor(v) or type(v).__name__ == "ndarray":
        return {"shape": list(v.shape), "dtype": str(v.dtype)}
    if isinstance(v, (list, tuple)):
        return [to_json_safe(x, limit) for x in list(v)[:limit]]
    if isinstance(v, dict):
        return {str(k): to_json_safe(x, limit) for k, x in list(v.items())[:limit]}
    return type(v).__name__


def json_dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=repr)
