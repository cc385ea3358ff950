"""Atomic writes: the one place a file or folder is written so readers never see half of it.

Everything the harness leaves on disk (results shards, collected messages, converted models,
trained receivers, expert data, exports) is written to a temporary sibling and renamed into
place in one ``os.replace``, so a kill at any moment leaves either the old state or the new
one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from interlat_bench.harness.core.errors import UserError


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some filesystems cannot fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it in the block. On success it is flushed
    to disk and renamed onto ``path``; on any error it is removed and ``path`` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; fill it in the block. On success it is renamed
    onto ``path``. Where ``path`` already exists, ``overwrite`` replaces it; otherwise the
    existing folder is kept and the new one discarded (content-addressed caches: a concurrent
    writer finished the same content first)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if overwrite and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(target.parent)


def set_aside(path: str | os.PathLike, why: str, log=None) -> Path:
    """Rename a corrupt cache entry out of the way (``<name>.corrupt-<time>``, kept for
    inspection) so that it is rebuilt; says so in one line through ``log``."""
    import time

    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    if log is not None:
        log(f"corrupt cache entry {path} ({why}): moved to {target.name} and rebuilt")
    return target


def check_writable(folder: str | os.PathLike, what: str,
                   hint: str = "choose another with --db or $INTERLAT_RESULTS") -> None:
    """Refuse, before any work starts, a folder this process cannot create or write in
    (read-only, or someone else's): a UserError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable ({exc.strerror or exc}): {hint}") from None

