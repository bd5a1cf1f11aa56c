"""Atomic file output: write beside the target, then rename, so no reader ever sees half a file.

Used by every layer (DICOM writer, label maps, caches, checkpoints, exports); depends on the
standard library only (numpy for ``allocated_memmap``, imported there).

``allocated_memmap`` creates a memory-mapped ``.npy`` whose blocks are reserved on disk first: a
full disk is then an ``OSError`` (ENOSPC) when the file is created, never a SIGBUS when a page of
a sparse file is first written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["allocated_memmap", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the process's umask, read once at import (reading it means setting it, which is not thread-safe later)
_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. With
    ``fsync`` the data is flushed to disk before the rename (checkpoints, exports).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    with contextlib.suppress(OSError):  # mkstemp makes it owner-only; outputs get what open() would give them
        os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry (where the OS allows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def allocated_memmap(path: str | os.PathLike, dtype, shape: tuple[int, ...]):
    """``np.lib.format.open_memmap(path, "w+", dtype, shape)`` with every block of the file reserved
    on disk before the array is returned (``os.posix_fallocate``). OSError (ENOSPC) when the disk
    cannot hold it; the partial file is then removed."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        size = os.path.getsize(path)
        if size and hasattr(os, "posix_fallocate"):
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                unsupported = {getattr(errno, name, -1) for name in ("EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL")}
                if exc.errno not in unsupported:  # a file system without it keeps the sparse file
                    raise OSError(exc.errno, f"{os.strerror(exc.errno)} (reserving {size} bytes)", str(path)) from None
            finally:
                os.close(fd)
    except BaseException:
        del array
        Path(path).unlink(missing_ok=True)
        raise
    return array
