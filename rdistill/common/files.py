"""Atomic writes on a local disk: a file or folder appears under its final name complete, or not at all.

`atomic_path` stages a file or a whole folder under a name unique to its writer (pid and a random suffix),
then renames; two processes writing the same path never share a temporary, and a reader never sees a
partial file. Bytes and text are published by rdistill.storage (the one home of "write, then move into
place", on a local disk or an object store); these helpers are its local form. A killed writer leaves at
most a `.<name>.*.tmp` (or storage's `.tmp-*`) that the next writer of that folder may remove.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A sibling of `path`, unique to this writer: .<name>.<pid>-<random>.tmp"""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path to write a file or a folder at; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # os.replace cannot replace a non-empty folder
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Publish `data` at the local `path` through rdistill.storage (temporary name beside it, then a rename)."""
    from rdistill import storage

    storage.write_bytes(os.fspath(path), data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def stale_temporaries(folder: str | Path) -> list[str]:
    """Names of what killed writers left in a local folder: `.<name>.*.tmp` and storage's `.tmp-*`. (On an
    object store a leftover temporary is never listed, so never read.)"""
    from rdistill.storage import TMP_PREFIX

    folder = Path(folder)
    return sorted(p.name for p in [*folder.glob(f".*{TMP_SUFFIX}"), *folder.glob(f"{TMP_PREFIX}*")])


def remove_stale_temporaries(folder: str | Path) -> None:
    """Drop what killed writers left in `folder` (call before writing there, never while others write)."""
    for tmp in (Path(folder) / name for name in stale_temporaries(folder)):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
