"""Atomic writes: every artefact appears complete or not at all.

Each helper writes to a temporary sibling (same directory, so ``os.replace`` is a rename on the
same file system), flushes it to disk and renames it over the target. An interrupted run leaves at
most a ``.tmp-*`` file that no reader mistakes for the artefact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()  # read once at import, while no other thread can create files


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds.

    The caller writes the temporary path with any library (astropy, pyarrow, numpy...). On an
    exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + target.name + ".", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; artefacts get the usual permissions
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the target path."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_parquet_atomic(table, target: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to Parquet atomically (no index column) and return the target path."""
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(target)


def write_csv_atomic(table, target: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to CSV atomically (no index column) and return the target path."""
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    return Path(target)
