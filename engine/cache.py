"""The output cache: signature -> a node's outputs.

Two tiers. `MemoryCache` holds outputs across runs and workflows in one process, LRU by
bytes. `DiskCache` (optional) keeps image, mask, latent, conditioning and plain values
across processes in a folder, byte-bounded too, so an unchanged workflow re-run in a new
process computes nothing. Models are not cached here: the model manager accounts them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import values as V
from .fsutil import atomic_write

log = logging.getLogger("loom.cache")

GiB = 1 << 30


@dataclass
class Entry:
    outputs: dict[str, Any]
    nbytes: int
    node_type: str


class MemoryCache:
    def __init__(self, budget_bytes: int = 4 * GiB):
        self.budget = int(budget_bytes)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def __contains__(self, sig: object) -> bool:
        return sig in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sig: str) -> Entry | None:
        entry = self._entries.get(sig)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(sig)
        self.hits += 1
        return entry

    def put(self, sig: str, outputs: dict[str, Any], node_type: str,
            size: int | None = None) -> bool:
        size = V.nbytes(outputs) if size is None else size
        if size > self.budget:
            return False
        self.discard(sig)
        self._entries[sig] = Entry(outputs, size, node_type)
        self.bytes += size
        while self.bytes > self.budget:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes
        return True

    def discard(self, sig: str) -> None:
        old = self._entries.pop(sig, None)
        if old is not None:
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def summary(self) -> dict[str, Any]:
        by_type: dict[str, dict[str, int]] = {}
        for e in self._entries.values():
            t = by_type.setdefault(e.node_type, {"entries": 0, "bytes": 0})
            t["entries"] += 1
            t["bytes"] += e.nbytes
        return {"entries": len(self._entries), "bytes": self.bytes, "budget": self.budget,
                "hits": self.hits, "misses": self.misses, "by_type": by_type}


class DiskCache:
    """One safetensors file per entry: tensors plus a JSON tree in its metadata.

    Files are written atomically; a reader never sees half an entry, and several Loom
    processes may share the folder. Least-recently-used entries go first (reads touch
    the file's mtime).
    """

    SUFFIX = ".loomcache"

    def __init__(self, root: str | os.PathLike[str], budget_bytes: int = 4 * GiB):
        self.root = Path(root)
        self.budget = int(budget_bytes)
        self._index: dict[str, tuple[int, float]] | None = None  # sig -> (size, atime)

    def _path(self, sig: str) -> Path:
        return self.root / sig[:2] / (sig + self.SUFFIX)

    def _scan(self) -> dict[str, tuple[int, float]]:
        if self._index is None:
            index: dict[str, tuple[int, float]] = {}
            if self.root.is_dir():
                for sub in os.scandir(self.root):
                    if not sub.is_dir():
                        continue
                    for f in os.scandir(sub.path):
                        if f.name.endswith(self.SUFFIX):
                            st = f.stat()
                            index[f.name[: -len(self.SUFFIX)]] = (st.st_size, st.st_mtime)
            self._index = index
        return self._index

    @property
    def bytes(self) -> int:
        return sum(s for s, _ in self._scan().values())

    def __contains__(self, sig: object) -> bool:
        return isinstance(sig, str) and self._path(sig).is_file()

    def get(self, sig: str) -> Entry | None:
        path = self._path(sig)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            header = _read_header(data)
            if len(header) > 1 or "__metadata__" not in header:
                from safetensors.torch import load as st_load  # torch only when needed

                tensors = st_load(data)
            else:
                tensors = {}
            tree = json.loads(header["__metadata__"]["loom"])
            outputs = V.decode(tree["outputs"], tensors)
        except Exception as exc:  # a damaged entry is a miss, and goes away
            log.warning("dropping unreadable cache entry %s: %s", path, exc)
            self.discard(sig)
            return None
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
        self._scan()[sig] = (len(data), now)
        return Entry(outputs, V.nbytes(outputs), tree.get("node_type", ""))

    def put(self, sig: str, outputs: dict[str, Any], node_type: str) -> bool:
        """Store outputs if every part can be stored without pickle; else return False."""
        try:
            tree, tensors = V.encode(outputs)
        except V.NotSerializable:
            return False
        meta = {"loom": json.dumps({"outputs": tree, "node_type": node_type})}
        if tensors:
            from safetensors.torch import save as st_save

            data = st_save(tensors, metadata=meta)
        else:  # plain values: write the safetensors header directly, no torch needed
            header = json.dumps({"__metadata__": meta}).encode()
            header += b" " * (-len(header) % 8)
            data = len(header).to_bytes(8, "little") + header
        if len(data) > self.budget:
            return False
        atomic_write(self._path(sig), data)
        self._scan()[sig] = (len(data), time.time())
        self._evict()
        return True

    def discard(self, sig: str) -> None:
        try:
            self._path(sig).unlink()
        except OSError:
            pass
        self._scan().pop(sig, None)

    def _evict(self) -> None:
        index = self._scan()
        total = sum(s for s, _ in index.values())
        if total <= self.budget:
            return
        for sig, (size, _) in sorted(index.items(), key=lambda kv: kv[1][1]):
            self.discard(sig)
            total -= size
            if total <= self.budget:
                break

    def clear(self) -> None:
        for sig in list(self._scan()):
            self.discard(sig)

    def summary(self) -> dict[str, Any]:
        index = self._scan()
        return {"root": str(self.root), "entries": len(index),
                "bytes": sum(s for s, _ in index.values()), "budget": self.budget}


def _read_header(data: bytes) -> dict[str, Any]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8: 8 + n])


class Cache:
    """Memory first, then disk (a disk hit is promoted into memory)."""

    def __init__(self, memory: MemoryCache | None = None, disk: DiskCache | None = None):
        self.memory = memory if memory is not None else MemoryCache()
        self.disk = disk

    def __contains__(self, sig: object) -> bool:
        return sig in self.memory or (self.disk is not None and sig in self.disk)

    def get(self, sig: str) -> Entry | None:
        entry = self.memory.get(sig)
        if entry is None and self.disk is not None:
            entry = self.disk.get(sig)
            if entry is not None:
                self.memory.put(sig, entry.outputs, entry.node_type, entry.nbytes)
        return entry

    def put(self, sig: str, outputs: dict[str, Any], node_type: str, persist: bool = True) -> None:
        self.memory.put(sig, outputs, node_type)
        if persist and self.disk is not None:
            try:
                self.disk.put(sig, outputs, node_type)
            except OSError as exc:  # a full or read-only disk must not fail the run
                log.warning("disk cache write failed: %s", exc)

    def discard(self, sig: str) -> None:
        self.memory.discard(sig)
        if self.disk is not None:
            self.disk.discard(sig)

    def summary(self) -> dict[str, Any]:
        out = {"memory": self.memory.summary()}
        if self.disk is not None:
            out["disk"] = self.disk.summary()
        return out
