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
import stat
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import values as V
from .errors import is_out_of_memory
from .fsutil import TEMP_MAX_AGE, atomic_write, is_temp_name

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
    the file's mtime). Each entry carries a checksum of its tree and tensor bytes; an
    entry that does not check out is dropped on read. Temp files left by a writer that
    died are removed once stale (scan and clear).
    """

    SUFFIX = ".loomcache"

    def __init__(self, root: str | os.PathLike[str], budget_bytes: int = 4 * GiB):
        self.root = Path(root)
        self.budget = int(budget_bytes)
        self._index: dict[str, tuple[int, float]] | None = None  # sig -> (size, atime)
        self.temps = {"removed": 0, "removed_bytes": 0, "live": 0}
        self.problems: list[str] = []  # what a scan or clear could not read or remove

    def _path(self, sig: str) -> Path:
        return self.root / sig[:2] / (sig + self.SUFFIX)

    def _scan(self) -> dict[str, tuple[int, float]]:
        if self._index is None:
            index: dict[str, tuple[int, float]] = {}
            now = time.time()
            for sub in self._listdir(self.root):
                if not sub.is_dir(follow_symlinks=False):
                    continue
                for f in self._listdir(sub.path):
                    try:
                        st = f.stat(follow_symlinks=False)
                    except OSError:  # removed meanwhile by another process
                        continue
                    if f.name.endswith(self.SUFFIX):
                        index[f.name[: -len(self.SUFFIX)]] = (st.st_size, st.st_mtime)
                    elif is_temp_name(f.name):
                        self._sweep_temp(f.path, st, now)
            self._index = index
        return self._index

    def _listdir(self, path: str | Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return list(it)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc.strerror or exc}")
            return []

    def _sweep_temp(self, path: str, st: os.stat_result, now: float) -> None:
        if now - st.st_mtime < TEMP_MAX_AGE:
            self.temps["live"] += 1
        elif self._remove(path):
            self.temps["removed"] += 1
            self.temps["removed_bytes"] += st.st_size

    def _remove(self, path: str | Path) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.problems.append(f"cannot remove {path}: {exc.strerror or exc}")
            return False
        return True

    @property
    def bytes(self) -> int:
        return sum(s for s, _ in self._scan().values())

    def __contains__(self, sig: object) -> bool:
        return isinstance(sig, str) and self._path(sig).is_file()

    def get(self, sig: str) -> Entry | None:
        path = self._path(sig)
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > self.budget:
                raise ValueError("not a regular file within the budget")
            data = path.read_bytes()
            outputs, node_type = _decode_entry(data)
        except FileNotFoundError:
            return None
        except Exception as exc:
            if is_out_of_memory(exc):  # the entry may be fine: a miss, kept
                log.warning("cache entry %s not read: out of memory", path)
                return None
            log.warning("dropping unreadable cache entry %s: %s", path, exc)
            self.discard(sig)
            return None
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
        self._scan()[sig] = (len(data), now)
        return Entry(outputs, V.nbytes(outputs), node_type)

    def put(self, sig: str, outputs: dict[str, Any], node_type: str) -> bool:
        """Store outputs if every part can be stored without pickle and the entry fits the
        budget (estimated before anything is copied); else return False."""
        if V.nbytes(outputs) > self.budget:
            return False
        try:
            data = _encode_entry(outputs, node_type, self.budget)
        except V.NotSerializable:
            return False
        if data is None:
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

    def clear(self) -> bool:
        """Remove every entry and stale temp file; False when something could not be
        removed (see `problems`; what stays is still counted by `summary`)."""
        self._index, self.problems = None, []
        index = self._scan()
        for sig in list(index):
            if self._remove(self._path(sig)):
                index.pop(sig)
        return not self.problems

    def summary(self) -> dict[str, Any]:
        index = self._scan()
        return {"root": str(self.root), "entries": len(index),
                "bytes": sum(s for s, _ in index.values()), "budget": self.budget,
                "temp_files": dict(self.temps), "problems": list(self.problems)}


# ---- the entry format: safetensors, written without intermediate copies ---------------

_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
           "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
           "bool": "BOOL"}


class _Checksum:
    """CRC-32 of an entry's tree and tensor bytes. It catches damage (flipped bits,
    truncation) at several GB/s, 5x blake2b; a keyless hash of any kind could not stop
    someone who can write the cache folder, so a cryptographic one would buy nothing."""

    def __init__(self, text: str):
        self.value = zlib.crc32(text.encode())

    def update(self, data: Any) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"crc32:{self.value:08x}"


def _encode_entry(outputs: dict[str, Any], node_type: str, budget: int) -> bytearray | None:
    """The entry's bytes in one buffer (tensor bytes copied once, into it), or None when
    it would exceed `budget`."""
    tree, tensors = V.encode(outputs)
    text = json.dumps({"outputs": tree, "node_type": node_type})
    digest = _Checksum(text)
    infos: dict[str, Any] = {}
    raws: list[memoryview] = []
    offset = 0
    for key in sorted(tensors):
        t = tensors[key]
        dtype = _DTYPES.get(str(t.dtype).removeprefix("torch."))
        if dtype is None:
            raise V.NotSerializable(f"tensors of {t.dtype} are not stored on disk")
        import torch

        raw = memoryview(t.reshape(-1).view(torch.uint8).numpy())
        infos[key] = {"dtype": dtype, "shape": list(t.shape),
                      "data_offsets": [offset, offset + raw.nbytes]}
        digest.update(json.dumps([key, dtype, list(t.shape)]).encode())
        digest.update(raw)
        raws.append(raw)
        offset += raw.nbytes
    meta = {"loom": text, "loom_sum": digest.hexdigest()}
    header = json.dumps({"__metadata__": meta, **infos}).encode()
    header += b" " * (-len(header) % 8)
    if 8 + len(header) + offset > budget:
        return None
    buf = bytearray(8 + len(header) + offset)
    out = memoryview(buf)  # assigning through a view copies once (bytearray slices twice)
    out[:8] = len(header).to_bytes(8, "little")
    pos = 8 + len(header)
    out[8:pos] = header
    for raw in raws:
        out[pos: pos + raw.nbytes] = raw
        pos += raw.nbytes
    return buf


def _decode_entry(data: bytes) -> tuple[Any, str]:
    """(outputs, node type) of an entry; raises on anything damaged or inconsistent."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8:
        raise ValueError("truncated")
    header = json.loads(data[8: 8 + n])
    meta = header.pop("__metadata__")
    text = meta["loom"]
    digest = _Checksum(text)
    view = memoryview(data)[8 + n:]
    for key in sorted(header):
        info = header[key]
        start, end = info["data_offsets"]
        digest.update(json.dumps([key, info["dtype"], info["shape"]]).encode())
        digest.update(view[start:end])
    if digest.hexdigest() != meta["loom_sum"]:
        raise ValueError("checksum mismatch: the entry's bytes changed after it was written")
    tensors: dict[str, Any] = {}
    if header:
        from safetensors.torch import load as st_load  # torch only when needed

        tensors = st_load(data)
    tree = json.loads(text)
    return V.decode(tree["outputs"], tensors), str(tree["node_type"])


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
            except Exception as exc:  # a full or read-only disk must not fail the run
                if not isinstance(exc, OSError) and not is_out_of_memory(exc):
                    raise
                log.warning("disk cache write skipped: %s", exc)

    def discard(self, sig: str) -> None:
        self.memory.discard(sig)
        if self.disk is not None:
            self.disk.discard(sig)

    def summary(self) -> dict[str, Any]:
        out = {"memory": self.memory.summary()}
        if self.disk is not None:
            out["disk"] = self.disk.summary()
        return out
