"""Checks shared by the real-data sources (``jsoc``, ``fits``): is this file one usable SHARP CEA field map?

:func:`check_sharp_file` is the single test every downloaded or indexed file passes before it lands in
``raw/<source>/``; :func:`manifest_frame` gives both sources the same typed manifest columns. Settings are
checked by the schema (:func:`sharpgen.config.build_settings`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from ...atomic import write_parquet_atomic
from ...errors import SharpgenError
from ...progress import progress_bar
from ...run import ARTEFACTS
from ..fitsio import GAUSS_UNITS, OTHER_SEGMENTS, read_sharp

MANIFEST_NAME = ARTEFACTS["raw_manifest"].name
"""The manifest's file name in a source's folder, as the run layout names it (every source writes one)."""

FIELD_SEGMENTS = ("Br", "Bp", "Bt", "magnetogram")
"""SHARP CEA segments that hold a magnetic field component in G (Mx/cm^2)."""


MIN_SIDE_PX = 8
"""Smallest accepted image side, in pixels (anything smaller is not an active-region patch)."""

MAX_SIDE_PX = 4096
"""Largest accepted image side, in pixels (SHARP CEA patches are at most a few thousand pixels wide)."""

DEGREE_UNITS = frozenset({"deg", "degree", "degrees"})

MANIFEST_COLUMNS: dict[str, str] = {
    "record": "str",
    "file": "str",
    "status": "str",
    "reason": "str",
    "harpnum": "int",
    "noaa_ar": "int",
    "t_rec": "str",
    "naxis1": "int",
    "naxis2": "int",
    "cdelt1_deg": "float",
    "lat_fwt": "float",
    "lon_fwt": "float",
    "quality": "int",
    "usflux_header": "float",
    "r_value_header": "float",
    "segment": "str",
    "finite_fraction": "float",
    "bytes": "int",
}
"""Columns every real-data manifest starts with, and their types (``int`` columns use 0, or -1 for
``quality``, when unknown; ``float`` columns use NaN)."""

_INT_FILL = {"quality": -1}


@dataclass(frozen=True)
class FileCheck:
    """Outcome of :func:`check_sharp_file`.

    ``reason`` is '' for a usable file, else one short human reason. ``damaged`` is True when the bytes
    themselves are broken (truncated, unreadable), so fetching the file again may help; False when the
    content is simply not wanted (wrong units, mostly NaN...). ``meta`` holds manifest fields read from the
    header and the image (see :func:`header_metadata`).
    """

    reason: str
    damaged: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the file passed every check."""
        return not self.reason


# --- file checks ------------------------------------------------------------------------------------------


def _as_float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _as_int(value, default: int) -> int:
    number = _as_float(value)
    return int(number) if math.isfinite(number) else default


def header_metadata(header: Mapping) -> dict:
    """Manifest fields from SHARP header keywords (HARPNUM, NOAA_AR, T_REC, CDELT1 in deg, LAT/LON_FWT in deg,
    QUALITY, USFLUX in Mx, R_VALUE in log10 Mx); missing ones become 0, -1 (QUALITY), '' or NaN."""
    return {
        "harpnum": _as_int(header.get("HARPNUM"), 0),
        "noaa_ar": _as_int(header.get("NOAA_AR"), 0),
        "t_rec": str(header.get("T_REC", "") or "").strip(),
        "cdelt1_deg": abs(_as_float(header.get("CDELT1"))),
        "lat_fwt": _as_float(header.get("LAT_FWT")),
        "lon_fwt": _as_float(header.get("LON_FWT")),
        "quality": _as_int(header.get("QUALITY"), -1),
        "usflux_header": _as_float(header.get("USFLUX")),
        "r_value_header": _as_float(header.get("R_VALUE")),
    }


def segment_from_name(name: str) -> str | None:
    """SHARP segment named in a file name such as ``hmi.sharp_cea_720s.377.20110215_000000_TAI.Br.fits``."""
    parts = Path(name).name.split(".")
    known = {seg.lower(): seg for seg in FIELD_SEGMENTS + OTHER_SEGMENTS}
    for part in reversed(parts[1:]):
        if part.lower() in known:
            return known[part.lower()]
    return None


def _truncation(path: Path) -> str:
    """'' unless the HDUs announced in the headers run past the end of the file (uncompressed FITS only)."""
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            return ""  # gzip: a cut stream fails to decompress instead
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                spans = [hdul.fileinfo(i) for i in range(len(hdul))]
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_sharp below
        return ""
    expected = max((info["datLoc"] + info["datSpan"] for info in spans if info), default=0)
    if expected > size:
        return f"truncated file ({size} of {expected} bytes)"
    return ""


def _unit_problem(header: Mapping) -> str:
    for axis in ("1", "2"):
        unit = str(header.get("CUNIT" + axis, "degree") or "degree").strip()
        if unit.lower() not in DEGREE_UNITS:
            return f"CUNIT{axis} is {unit}, not a CEA map"
        ctype = str(header.get("CTYPE" + axis, "") or "").strip()
        if ctype and not ctype.upper().endswith("CEA"):
            return f"CTYPE{axis} is {ctype}, not a CEA map"
        cdelt = abs(_as_float(header.get("CDELT" + axis)))
        if not math.isfinite(cdelt) or cdelt == 0:
            return f"header lacks CDELT{axis} (pixel size)"
    bunit = str(header.get("BUNIT", "") or "").strip()
    if bunit and bunit.lower().replace(" ", "") not in GAUSS_UNITS:
        return f"BUNIT is {bunit!r}, not a field in G"
    return ""


def check_sharp_file(
    path: str | os.PathLike,
    *,
    min_finite_fraction: float = 0.5,
    segment: str | None = None,
    expected_shape: tuple[int, int] | None = None,
    expected_harpnum: int | None = None,
) -> FileCheck:
    """Check that ``path`` holds one SHARP CEA field map in G; never raises for a bad file.

    Checks, in order: complete file, readable 2-d image, ``segment`` (when known) is a field segment, CEA
    axes in degrees with CDELT1/2, BUNIT gauss-like (or absent), each side within [8, 4096] px and equal to
    ``expected_shape`` = (NAXIS1, NAXIS2) when given, HARPNUM equal to ``expected_harpnum`` when given,
    and a finite-pixel fraction of at least ``min_finite_fraction``.
    """
    path = Path(path)
    if segment is not None and segment not in FIELD_SEGMENTS:
        return FileCheck(f"segment {segment!r} is not a magnetic-field map")
    try:
        cut = _truncation(path)
    except OSError as exc:
        return FileCheck(f"unreadable file ({exc.__class__.__name__})", damaged=True)
    if cut:
        return FileCheck(cut, damaged=True)
    try:
        record = read_sharp(path)
    except SharpgenError as exc:
        text = str(exc)
        short = text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text
        return FileCheck(short[:160], damaged="not a readable" in short)
    header = record.header
    meta = header_metadata(header)
    naxis2, naxis1 = record.field.shape
    finite = float(np.isfinite(record.field).mean()) if record.field.size else 0.0
    meta.update(naxis1=int(naxis1), naxis2=int(naxis2), finite_fraction=finite)
    problem = _unit_problem(header)
    if not problem and not (MIN_SIDE_PX <= min(naxis1, naxis2) and max(naxis1, naxis2) <= MAX_SIDE_PX):
        problem = f"shape {naxis1}x{naxis2} outside [{MIN_SIDE_PX}, {MAX_SIDE_PX}] px"
    if not problem and expected_shape is not None and (naxis1, naxis2) != tuple(expected_shape):
        problem = f"shape {naxis1}x{naxis2} differs from {expected_shape[0]}x{expected_shape[1]} announced"
        return FileCheck(problem, damaged=True, meta=meta)
    if not problem and expected_harpnum is not None and meta["harpnum"] not in (0, expected_harpnum):
        problem = f"header HARPNUM {meta['harpnum']} differs from {expected_harpnum}"
        return FileCheck(problem, damaged=True, meta=meta)
    if not problem and not finite >= min_finite_fraction:
        problem = f"finite fraction {finite:.2f} < {min_finite_fraction:g}"
    return FileCheck(problem, meta=meta)


# --- manifests --------------------------------------------------------------------------------------------


def manifest_frame(rows: Iterable[Mapping], extra_columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A manifest DataFrame with :data:`MANIFEST_COLUMNS` (then ``extra_columns``) in order and typed.

    Missing values are filled: '' for str, 0 for int (-1 for ``quality``), NaN for float.
    """
    columns = dict(MANIFEST_COLUMNS)
    columns.update(extra_columns or {})
    frame = pd.DataFrame(list(rows), columns=list(columns))
    for name, kind in columns.items():
        if kind == "str":
            frame[name] = frame[name].fillna("").astype(str)
        elif kind == "int":
            values = pd.to_numeric(frame[name], errors="coerce").fillna(_INT_FILL.get(name, 0))
            frame[name] = values.astype("int64")
        elif kind == "float":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        elif kind == "bool":
            frame[name] = frame[name].fillna(False).astype(bool)
    return frame.reset_index(drop=True)


def write_manifest(rows: Iterable[Mapping], extra_columns: Mapping[str, str], out_dir: Path, what: str) -> pd.DataFrame:
    """Write ``out_dir/manifest.parquet`` atomically from ``rows``, log the status counts, return the frame."""
    manifest = manifest_frame(rows, extra_columns)
    write_parquet_atomic(manifest, Path(out_dir) / MANIFEST_NAME)
    counts = manifest["status"].value_counts().to_dict()
    logging.getLogger(__name__).info(
        "%s: %d records (%s) in %s", what, len(manifest), ", ".join(f"{n} {k}" for k, n in counts.items()), out_dir
    )
    return manifest


def read_previous_manifest(out_dir: Path) -> pd.DataFrame | None:
    """The manifest of an earlier run in ``out_dir``, or None when there is none or it cannot be read."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - a damaged old manifest only costs re-checking files
        return None


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete ``.tmp-*`` files left in ``out_dir`` by a killed run; return how many were removed."""
    removed = 0
    for leftover in Path(out_dir).glob(".tmp-*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


# --- many files -------------------------------------------------------------------------------------------


def _check_job(job: tuple[Path, dict]) -> FileCheck:
    path, kwargs = job
    return check_sharp_file(path, **kwargs)


def check_many(
    jobs: list[tuple[Path, dict]], *, workers: int = 1, progress: bool = True, desc: str = "checking files"
) -> list[FileCheck]:
    """:func:`check_sharp_file` for each ``(path, kwargs)`` job, in order; ``workers`` > 1 uses processes."""
    if not jobs:
        return []
    with progress_bar(total=len(jobs), desc=desc, unit="file", file=sys.stderr, disable=not progress) as bar:
        if workers <= 1 or len(jobs) < 2:
            results = []
            for job in jobs:
                results.append(_check_job(job))
                bar.update(1)
            return results
        context = multiprocessing.get_context("spawn")  # safe beside threads (servers, progress bars)
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            results = []
            for result in pool.map(_check_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                results.append(result)
                bar.update(1)
            return results
