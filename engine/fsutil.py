"""Small file helpers: atomic writes and a content-hash memo keyed by (path, size, mtime)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def _temp_copy(path: Path, data: bytes) -> str:
    """`data` written and synced to a temporary file beside `path`; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = _temp_copy(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_new(path: Path, data: bytes) -> bool:
    """Create `path` with `data` atomically, never replacing an existing file.

    Returns False (and writes nothing) when `path` already exists.
    """
    tmp = _temp_copy(path, data)
    try:
        try:
            os.link(tmp, path)  # fails if the name is taken: no overwrite, no race
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "wb") as f:
                f.write(data)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class FileHasher:
    """Content hashes of files, recomputed only when size or mtime change."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[int, int, str]] = {}

    def __call__(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = str(path)
        hit = self._memo.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self._memo[key] = (st.st_size, st.st_mtime_ns, digest)
        return digest


TEMP_MAX_AGE = 600.0  # seconds; a younger temp file may belong to a writer still at work


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of `_temp_copy`'s temporary files (`.TARGET.XXXX.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")
