"""The one atomic file write of vidseg: checkpoints, converted weights, config.yaml and results files.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``), flushed, then renamed over
the target: a crash at any point leaves the old file or the new one, never a torn one. A kill can leave the
temporary behind; :func:`remove_stale_temporaries` deletes those of a run folder. The file gets the umask's
mode (``mkstemp`` alone would give ``0600``, unlike every other file a run writes).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "file_mode", "remove_stale_temporaries"]


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write to; on leaving the block it replaces ``path``, or is deleted on an error.

    Args:
        durable: fsync the file and its folder, so that the new file survives a power loss (checkpoints).
    Raises:
        OSError: as the writer raised it, with ``path`` as its file name when it had none ("no space left on
            device" alone does not say where).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write ``text`` (utf-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale_temporaries(
    folder: str | os.PathLike, names: Iterable[str] = ("*.pth", "config.yaml")
) -> list[Path]:
    """Delete the temporaries that a kill during a write of one of ``names`` (glob patterns) left in
    ``folder``: ``.<name>.<random>.tmp`` only, never another file. Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for name in names for p in folder.glob(f".{name}.*.tmp")}
    found |= set(folder.glob("config.yaml.tmp"))  # the name earlier versions used
    removed = []
    for p in sorted(found):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed
