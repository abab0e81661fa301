"""The model manager: owns every loaded model, keeps them resident across runs while they
fit a memory budget, moves the least recently used to CPU and then drops them, and
retries once with offloading when the device runs out of memory.

Nodes never hold modules across runs. They hold a `ModelRef` (what to load, and the
patches applied to it) and ask the manager for the live module each time; the manager
loads it at most once and counts how many loads it did, which tests read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocols import ModelPaths
from .device import DeviceChoice

log = logging.getLogger("loom.models")


@dataclass(frozen=True)
class ModelRef:
    """A handle on a model the manager owns: hashable, small, safe to cache and pickle."""

    kind: str  # "MODEL", "CLIP", "VAE", ...
    family: str  # the architecture, as the node package that loaded it names it
    source: str  # the file or folder it came from
    key: str  # the manager's key for the loaded object
    patches: tuple[Any, ...] = ()  # weight patches (kind, ...), applied in order
    extra: tuple[tuple[str, Any], ...] = ()

    loom_cache_bytes = 0  # accounted by the model manager, not the output cache

    def with_patch(self, patch: Any) -> ModelRef:
        return ModelRef(self.kind, self.family, self.source, self.key,
                        self.patches + (patch,), self.extra)

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.extra).get(name, default)


@dataclass
class _Loaded:
    obj: Any
    nbytes: int
    on_device: bool
    last_used: float = field(default_factory=time.monotonic)


class OutOfMemory(RuntimeError):
    pass


def module_bytes(obj: Any) -> int:
    import torch

    total = 0
    mods = obj.values() if isinstance(obj, dict) else [obj]
    for m in mods:
        if isinstance(m, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
            total += sum(b.numel() * b.element_size() for b in m.buffers())
    return total


def _to(obj: Any, device: Any) -> None:
    import torch

    mods = obj.values() if isinstance(obj, dict) else [obj]
    for m in mods:
        if isinstance(m, torch.nn.Module):
            m.to(device)


class ModelManager:
    def __init__(self, device: DeviceChoice | None = None, budget_bytes: int | None = None,
                 paths: ModelPaths | None = None):
        self._device = device
        self.budget = budget_bytes
        self.paths = paths
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many times a model was read from disk
        self.load_log: list[str] = []
        self._sequential: set[int] = set()  # modules that ran out of memory: stay offloaded

    @property
    def device(self) -> DeviceChoice:
        if self._device is None:
            from .device import choose

            self._device = choose()
        return self._device

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        """The live object for `key`, loading it (once) with `loader` if needed, and moved
        to the compute device within the budget."""
        with self._lock:
            self._sequential.clear()  # a new node tries the whole model on the device again
            entry = self._loaded.get(key)
            if entry is None:
                obj = loader()
                self.loads += 1
                self.load_log.append(key)
                entry = _Loaded(obj, module_bytes(obj), on_device=False)
                self._loaded[key] = entry
            self._loaded.move_to_end(key)
            entry.last_used = time.monotonic()
            if self.device.device == "cpu":  # memory is the device: drop what does not fit
                entry.on_device = True
                self._drop_over_budget(keep=key)
            elif not entry.on_device:
                self._make_room(entry.nbytes, keep=key)
                _to(entry.obj, self.device.torch_device())
                entry.on_device = True
            return entry.obj

    def _drop_over_budget(self, keep: str) -> None:
        if self.budget is None:
            return
        total = sum(e.nbytes for e in self._loaded.values())
        for k in list(self._loaded):
            if total <= self.budget:
                break
            if k != keep:
                total -= self._loaded.pop(k).nbytes

    def _make_room(self, need: int, keep: str) -> None:
        if self.budget is None:
            return
        used = sum(e.nbytes for k, e in self._loaded.items() if e.on_device and k != keep)
        for k, e in list(self._loaded.items()):
            if used + need <= self.budget:
                break
            if k == keep or not e.on_device:
                continue
            _to(e.obj, "cpu")  # least recently used first: to CPU ...
            e.on_device = False
            used -= e.nbytes
        # ... and out entirely when CPU copies pile up beyond twice the budget
        cpu = sum(e.nbytes for e in self._loaded.values() if not e.on_device)
        for k, e in list(self._loaded.items()):
            if cpu <= 2 * self.budget:
                break
            if not e.on_device and k != keep:
                del self._loaded[k]
                cpu -= e.nbytes

    def offload_all(self) -> None:
        with self._lock:
            for e in self._loaded.values():
                if e.on_device and self.device.device != "cpu":
                    _to(e.obj, "cpu")
                    e.on_device = False

    def unload(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._loaded.clear()
            else:
                self._loaded.pop(key, None)
        free_device_memory()

    def summary(self) -> dict[str, Any]:
        return {"loaded": {k: {"bytes": e.nbytes, "on_device": e.on_device}
                           for k, e in self._loaded.items()},
                "loads": self.loads, "device": self.device.device, "dtype": self.device.dtype}

    def retry_on_oom(self, fn: Callable[[], Any], what: str, module: Any = None) -> Any:
        """Run fn; on out-of-memory free cached memory, move every model to CPU, and try
        once more with `module` offloaded sequentially (each layer's weights go to the
        device only while that layer runs). Later calls for that module in the same node
        stay offloaded."""
        if module is not None and id(module) in self._sequential:
            with sequential_offload(module, self.device.torch_device()):
                return fn()
        try:
            return fn()
        except Exception as exc:
            if not is_oom(exc):
                raise
            log.warning("%s ran out of memory; retrying once with sequential offload", what)
        self.offload_all()
        free_device_memory()
        try:
            if module is None:
                return fn()
            self._sequential.add(id(module))
            with sequential_offload(module, self.device.torch_device()):
                return fn()
        except Exception as exc:
            if not is_oom(exc):
                raise
            raise OutOfMemory(
                f"{what} ran out of memory on {self.device.device} even after offloading "
                "other models: use a smaller width, height or batch, enable tiling, or "
                "pick a lower-precision dtype") from exc


class sequential_offload:
    """Keep a module's weights on the CPU and move each leaf layer to the device only for
    its own forward pass. Slow, but runs models far larger than the free memory."""

    def __init__(self, module: Any, device: Any):
        self.module, self.device = module, device
        self.handles: list[Any] = []  # torch RemovableHandle

    def __enter__(self) -> Any:
        self.module.to("cpu")
        for leaf in self.module.modules():
            if next(leaf.children(), None) is not None:
                continue
            if not any(True for _ in leaf.parameters(recurse=False)):
                continue
            self.handles.append(leaf.register_forward_pre_hook(self._load))
            self.handles.append(leaf.register_forward_hook(self._unload))
        self.calls = 0
        return self

    def _load(self, leaf: Any, args: Any) -> None:
        self.calls += 1
        leaf.to(self.device)

    def _unload(self, leaf: Any, args: Any, output: Any) -> None:
        leaf.to("cpu")

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    backend = getattr(torch.backends, "mps", None)
    if mps is not None and backend is not None and backend.is_available():
        mps.empty_cache()
