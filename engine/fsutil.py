"""Small file helpers: atomic writes, checked reads of user files, and a content-hash memo
keyed by (path, size, mtime).

Every file Loom reads from a user goes through `open_user_file` / `read_user_file`: it must
be a regular file (checked before opening, and opened non-blocking, so a FIFO or a device
can never hang or flood a read) of bounded size. Every write goes through `atomic_write` or
`write_new`: the new file gets the usual `0o666 & ~umask` mode (an existing one keeps its
own), a symlink is written through, and a target that is not a regular file is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import BinaryIO

WORKFLOW_LIMIT = 64 << 20  # a workflow .json
IMAGE_LIMIT = 1 << 30  # an image or mask file
STALE_TEMP_S = 600.0  # a temp file this old belongs to a process that died mid-write

# `.NAME.XXXXXXXX.tmp`: the temp files written here (and by tempfile.mkstemp before).
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class UserFileError(OSError):
    """A file that is not one Loom will read or write: the message says why."""


def _not_regular(st: os.stat_result) -> str:
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a plain file")
    return f"{kind}, not a regular file"


def _size_text(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def check_user_file(path: str | os.PathLike[str], what: str,
                    limit: int | None = None) -> os.stat_result:
    """The stat of `path` when it is a regular file of at most `limit` bytes; raises
    UserFileError (or the OSError of a missing file) saying why it is not."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UserFileError(_not_regular(st))
    if limit is not None and st.st_size > limit:
        raise UserFileError(f"{_size_text(st.st_size)}, more than the {_size_text(limit)} "
                            f"a {what} may be")
    return st


def open_user_file(path: str | os.PathLike[str], what: str,
                   limit: int | None = None) -> BinaryIO:
    """`path` opened for binary reading, after `check_user_file`."""
    check_user_file(path, what, limit)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)  # it may have been swapped for something else since the check
        if not stat.S_ISREG(st.st_mode):
            raise UserFileError(_not_regular(st))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_user_file(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `open_user_file`)."""
    with open_user_file(path, what, limit) as f:
        data = f.read(limit + 1)  # files whose size stat does not tell (/proc) stop here too
    if len(data) > limit:
        raise UserFileError(f"more than the {_size_text(limit)} a {what} may be")
    return data


TEMP_MAX_AGE = STALE_TEMP_S


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of `_temp_copy`'s temporary files (`.TARGET.XXXXXXXX.tmp`)."""
    return _TEMP_NAME.match(name) is not None


def remove_stale_temps(folder: str | os.PathLike[str], older_than_s: float = STALE_TEMP_S) -> int:
    """Delete Loom's temp files (`.NAME.XXXXXXXX.tmp`) in `folder` last written more than
    `older_than_s` seconds ago, left by processes killed mid-write. Returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def _temp_copy(path: Path, data: bytes | bytearray, mode: int | None = None) -> Path:
    """`data` written and synced to a new temporary file beside `path`; returns its name.
    Created with 0o666 so the umask sets its mode, or given `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.parent / f".{path.name[:200]}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _write_target(path: Path) -> tuple[Path, int | None]:
    """Where a write to `path` goes (symlinks followed) and the mode to keep, if any."""
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real, None
    if not stat.S_ISREG(st.st_mode):
        raise UserFileError(f"{_not_regular(st)}; nothing was written")
    return real, stat.S_IMODE(st.st_mode)


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    target, mode = _write_target(Path(path))
    tmp = _temp_copy(target, data, mode)
    try:
        os.replace(tmp, target)
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
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
    """Content hashes of files, recomputed only when size or mtime change. None for a path
    that is not a regular file of at most `limit` bytes (the node reading it says why)."""

    def __init__(self, limit: int = IMAGE_LIMIT) -> None:
        self.limit = limit
        self._memo: dict[str, tuple[int, int, str]] = {}

    def __call__(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            st = check_user_file(path, "file", self.limit)
            key = str(path)
            hit = self._memo.get(key)
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                return hit[2]
            h = hashlib.blake2b(digest_size=16)
            with open_user_file(path, "file", self.limit) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    if f.tell() > self.limit:
                        return None
        except OSError:
            return None
        digest = h.hexdigest()
        self._memo[key] = (st.st_size, st.st_mtime_ns, digest)
        return digest

