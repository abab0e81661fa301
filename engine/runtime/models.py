"""The model manager: owns every loaded model, keeps them resident across runs while they
fit a memory budget, moves the one needed furthest ahead (without a plan: the least
recently used) to CPU and then drops them, and retries once with offloading when the
device runs out of memory.

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
from .plan import Uses, next_use

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


def _modules(obj: Any) -> list[Any]:
    """A loaded object's modules: itself, or the values of a dict or of a holder with
    `values()` (a checkpoint's components)."""
    if callable(getattr(type(obj), "values", None)):  # not via __getattr__ (configs)
        return list(obj.values())
    return [obj]


def module_bytes(obj: Any) -> int:
    import torch

    total = 0
    for m in _modules(obj):
        if isinstance(m, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
            total += sum(b.numel() * b.element_size() for b in m.buffers())
    return total


def _to(obj: Any, device: Any) -> None:
    import torch

    for m in _modules(obj):
        if isinstance(m, torch.nn.Module):
            m.to(device)


class ModelManager:
    """With a plan (`set_plan`: the keys each step of a run uses) it evicts the model
    needed furthest ahead and, at each step (`at_step`), loads the next model it lacks in
    a background thread when the budget allows; without one it evicts the least recently
    used. The counters are for tests and benchmarks."""

    def __init__(self, device: DeviceChoice | None = None, budget_bytes: int | None = None,
                 paths: ModelPaths | None = None, lookahead: bool = True,
                 prefetch: bool = True):
        self._device = device
        self.budget = budget_bytes
        self.paths = paths
        self.lookahead = lookahead  # False: ignore plans, least recently used (benchmarks)
        self.prefetch = prefetch
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.RLock()
        # one load at a time: loaders patch process-wide state (weight-init switches)
        self._load_lock = threading.Lock()
        self.loads = 0  # how many times a model was read from disk
        self.load_log: list[str] = []
        self.prefetched: list[str] = []  # keys a background load brought in before use
        self.evicted: list[str] = []  # keys dropped or moved off the device to make room
        self.oom_retries = 0  # how often the out-of-memory safety net had to run
        self.timeline: list[tuple[float, str, str]] = []  # (monotonic, what, key)
        self._sequential: set[int] = set()  # modules that ran out of memory: stay offloaded
        self._loaders: dict[str, Callable[[], Any]] = {}  # how to load each key again
        self._sizes: dict[str, int] = {}  # its bytes when last loaded
        self._uses: Uses | None = None
        self._step = 0
        self._pending: dict[str, threading.Event] = {}  # background loads in flight
        self._failed: dict[str, BaseException] = {}  # their errors, for the node that asks

    @property
    def device(self) -> DeviceChoice:
        if self._device is None:
            from .device import choose

            self._device = choose()
        return self._device

    @property
    def _on_cpu(self) -> bool:
        return self.device.device == "cpu"  # memory is the device: evicting drops

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    # ---- the plan ---------------------------------------------------------------------
    def set_plan(self, uses: Uses | None, step: int = 0) -> None:
        """The keys each step of the run uses (None: no plan, least recently used)."""
        with self._lock:
            self._uses, self._step = (uses if self.lookahead else None), step

    def at_step(self, step: int) -> None:
        """A run is at `step` of its plan: start loading the next model it lacks."""
        with self._lock:
            self._step = step
            if self._uses is not None and self.prefetch:
                self._start_prefetch()

    def _next_use(self, key: str) -> int:
        return next_use(self._uses, key, self._step) if self._uses is not None else 0

    def _victims(self, keep: str) -> list[str]:
        """Resident keys in eviction order: needed furthest ahead (or never) first, the
        least recently used first among equals; LRU alone without a plan."""
        keys = [k for k in self._loaded if k != keep and k not in self._pending]
        if self._uses is None:
            return keys
        return sorted(keys, key=lambda k: -self._next_use(k))  # stable: LRU among equals

    # ---- getting models -----------------------------------------------------------------
    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        """The live object for `key`, loading it (once) with `loader` if needed, and moved
        to the compute device within the budget."""
        while True:
            with self._lock:
                pending = self._pending.get(key)
                if pending is None:
                    failed = self._failed.pop(key, None)
                    if failed is not None and not is_oom(failed):
                        raise failed  # the background load's error, reported by its user
                    return self._get(key, loader)
            pending.wait()

    def _get(self, key: str, loader: Callable[[], Any]) -> Any:
        self._sequential.clear()  # a new node tries the whole model on the device again
        self._loaders[key] = loader
        entry = self._loaded.get(key)
        if entry is None:
            with self._load_lock:
                obj = loader()
            entry = self._insert(key, obj, on_device=False)
        self._loaded.move_to_end(key)
        entry.last_used = time.monotonic()
        if self._on_cpu:
            entry.on_device = True
            self._drop_over_budget(keep=key)
        elif not entry.on_device:
            self._make_room(entry.nbytes, keep=key)
            _to(entry.obj, self.device.torch_device())
            entry.on_device = True
        return entry.obj

    def _insert(self, key: str, obj: Any, on_device: bool, how: str = "load") -> _Loaded:
        self.loads += 1
        self.load_log.append(key)
        self.timeline.append((time.monotonic(), how, key))
        entry = _Loaded(obj, module_bytes(obj), on_device=on_device)
        self._sizes[key] = entry.nbytes
        self._loaded[key] = entry
        return entry

    def _resident_bytes(self, but: str | None = None) -> int:
        """Bytes on the device, counting background loads in flight."""
        return sum(e.nbytes for k, e in self._loaded.items()
                   if k != but and (e.on_device or self._on_cpu)) + sum(
            self._sizes.get(k, 0) for k in self._pending if k != but)

    def _evict(self, key: str) -> None:
        self.evicted.append(key)
        self.timeline.append((time.monotonic(), "evict", key))
        if self._on_cpu:
            del self._loaded[key]
        else:
            _to(self._loaded[key].obj, "cpu")
            self._loaded[key].on_device = False

    def _drop_over_budget(self, keep: str) -> None:
        if self.budget is None:
            return
        total = self._resident_bytes()
        for k in self._victims(keep):
            if total <= self.budget:
                break
            total -= self._loaded[k].nbytes
            self._evict(k)

    def _make_room(self, need: int, keep: str) -> None:
        if self.budget is None:
            return
        used = self._resident_bytes(but=keep)
        for k in self._victims(keep):  # to CPU ...
            if used + need <= self.budget:
                break
            if self._loaded[k].on_device:
                used -= self._loaded[k].nbytes
                self._evict(k)
        # ... and out entirely when CPU copies pile up beyond twice the budget
        cpu = sum(e.nbytes for e in self._loaded.values() if not e.on_device)
        for k in self._victims(keep):
            if cpu <= 2 * self.budget:
                break
            if not self._loaded[k].on_device:
                cpu -= self._loaded.pop(k).nbytes

    # ---- prefetch -----------------------------------------------------------------------
    def _start_prefetch(self) -> None:
        """Load (or move to the device) the next model a later step needs, if room can be
        made by evicting only models needed after it. Called with the lock held."""
        assert self._uses is not None
        now = self._uses[self._step] if self._step < len(self._uses) else frozenset()
        for step in range(self._step + 1, len(self._uses)):
            for key in sorted(self._uses[step] - now):
                entry = self._loaded.get(key)
                if key in self._pending or key not in self._loaders or (
                        entry is not None and (entry.on_device or self._on_cpu)):
                    continue
                if self._room_for(key, step, now):
                    self._launch(key)
                return  # only the next model: a later one waits for its turn

    def _room_for(self, key: str, step: int, now: frozenset[str]) -> bool:
        """Make room for `key` (needed at `step`) by evicting what demand-time eviction
        would: the furthest-needed models first, only while each is needed after `step`
        and not by the node running now (else wait, and let its own request decide)."""
        if self.budget is None:
            return True
        need = self._sizes.get(key, 0)
        free = self.budget - self._resident_bytes()
        chosen: list[str] = []
        assert self._uses is not None
        uses = self._uses
        order = sorted(self._victims(key), key=lambda k: -next_use(uses, k, step))
        for k in order:
            if free >= need:
                break
            if not (self._loaded[k].on_device or self._on_cpu):
                continue
            if k in now or self._next_use(k) <= step:
                return False
            chosen.append(k)
            free += self._loaded[k].nbytes
        if free < need:
            return False
        for k in chosen:
            self._evict(k)
        return True

    def _launch(self, key: str) -> None:
        done = threading.Event()
        self._pending[key] = done
        entry = self._loaded.get(key)
        loader = self._loaders[key]
        log.info("prefetching %s", key)
        self.timeline.append((time.monotonic(), "prefetch-start", key))
        threading.Thread(target=self._prefetch, args=(key, entry, loader, done),
                         name="loom-prefetch", daemon=True).start()

    def _prefetch(self, key: str, entry: _Loaded | None, loader: Callable[[], Any],
                  done: threading.Event) -> None:
        try:
            if entry is None:
                with self._load_lock:
                    obj = loader()
            else:
                obj = entry.obj
            if not self._on_cpu:
                _to(obj, self.device.torch_device())
        except BaseException as exc:  # kept for the node that needs the model
            log.warning("prefetching %s failed: %s", key, exc)
            with self._lock:
                self._failed[key] = exc
        else:
            with self._lock:
                if entry is None:
                    self._insert(key, obj, on_device=True, how="prefetch")
                else:
                    entry.on_device = True
                    self.timeline.append((time.monotonic(), "prefetch", key))
                self.prefetched.append(key)
        finally:
            with self._lock:
                del self._pending[key]
            done.set()

    def offload_all(self) -> None:
        with self._lock:
            for e in self._loaded.values():
                if e.on_device and self.device.device != "cpu":
                    _to(e.obj, "cpu")
                    e.on_device = False

    def unload(self, key: str | None = None) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for done in pending:  # a background load finishing later would bring it back
            done.wait()
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
            self.oom_retries += 1
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
