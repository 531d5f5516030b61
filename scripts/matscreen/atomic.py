"""The one way matscreen writes a file: complete or not at all, readable like any other file.

Every output (Parquet tables, the label store, the ingest cache, history JSON, ``model.json``,
``top.csv``, report files) goes through :func:`atomic_path`: a temporary file in the target's
folder (so the final rename never crosses a file system), written, flushed to disk, given the
mode an ordinary ``open()`` would give it (``0o666 & ~umask``: ``tempfile.mkstemp`` creates
0600, which hides results from the group on a shared cluster), then renamed over the target.
A reader therefore sees the old file or the new one, never half of one.

:func:`outputs_together` is the stage-level counterpart: a stage that writes several outputs
removes the ones it already wrote when a later step fails, so a failed stage never leaves
outputs that look finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode ``open(path, 'w')`` would create a file with: ``0o666`` less the process umask."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse to open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it becomes ``path`` (fsync, chmod, rename).

    For writers that want a file name (``pyarrow.parquet.write_table``, ``DataFrame.to_csv``,
    ``Figure.savefig``). On any exception the temporary file is removed and ``path`` is untouched.
    The temporary name starts with a dot and ends in ``.tmp``, so globs such as ``part-*.parquet``
    never match it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return write_bytes(path, text.encode(encoding))


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``dst`` atomically (see :func:`atomic_path`); the copy gets the umask mode."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


@contextlib.contextmanager
def outputs_together(paths: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Remove every one of ``paths`` if the block fails: a failed stage leaves no finished-looking output.

    Use around the writes of a stage whose outputs belong together (``model.json`` with its
    CV metrics). Outputs that existed before the block and were not rewritten are removed
    too: after a failure they would describe a different run than the one that just failed.
    """
    targets = [Path(p) for p in paths]
    try:
        yield
    except BaseException:
        for p in targets:
            p.unlink(missing_ok=True)
        raise
