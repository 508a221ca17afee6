"""Properties of SHARP FITS files (``sharpgen properties``) and of normalized patches (real or generated)."""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import SharpgenError
from ..physics import paper_properties, physical_properties
from ..units import GAUSS_PER_NORMALIZED_UNIT
from .fitsio import check_field_file, read_sharp
from .scaling import paper_normalize

SIZE_RANGE_PX = (8, 4096)
"""Sides (px) a normalized patch may have: smaller holds no active region, larger than any SHARP patch."""


def _header_float(header, key: str) -> float:
    try:
        return float(header[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def check_measurement(size: int, threshold_gauss: float) -> None:
    """Refuse a patch side outside :data:`SIZE_RANGE_PX` and a threshold that is not a positive field in G."""
    low, high = SIZE_RANGE_PX
    if not low <= size <= high:
        raise SharpgenError(f"--size {size}: a normalized patch side must be {low} to {high} px (the paper's: 128)")
    if not (math.isfinite(threshold_gauss) and threshold_gauss > 0):
        raise SharpgenError(f"--threshold-gauss {threshold_gauss:g}: expected a positive field in G (the paper's: 150)")


def fits_properties(path: str | os.PathLike, size: int = 128, threshold_gauss: float = 150.0) -> dict:
    """Every property of one SHARP FITS file.

    Physical properties (Mx, Mm, deg, JSOC R) on the native field; paper properties on the paper-normalized
    ``size x size`` patch. Header ``USFLUX``/``R_VALUE`` are echoed for comparison (NaN when absent). A file that
    is not a field map in G (a mask, another quantity) is refused (:func:`sharpgen.data.fitsio.check_field_file`).
    """
    check_measurement(size, threshold_gauss)
    check_field_file(path)
    record = read_sharp(path)
    sx_mm, sy_mm = record.pixel_size_mm
    latitude = _header_float(record.header, "LAT_FWT")
    if math.isnan(latitude):
        latitude = _header_float(record.header, "CRVAL2")
    physical = physical_properties(
        record.field[None],
        sx_mm,
        sy_mm,
        threshold_gauss=threshold_gauss,
        latitude_deg=None if math.isnan(latitude) else [latitude],
    )
    paper = paper_properties(
        paper_normalize(record.field, size)[None], threshold=threshold_gauss / GAUSS_PER_NORMALIZED_UNIT
    )
    row = {
        "file": str(path),
        "naxis1": record.field.shape[1],
        "naxis2": record.field.shape[0],
        "pixel_x_mm": sx_mm,
        "pixel_y_mm": sy_mm,
        "latitude_deg": latitude,
    }
    for name, values in {**physical, **paper}.items():  # the two sets share no key
        row[name] = float(values[0])
    row["header_usflux"] = _header_float(record.header, "USFLUX")
    row["header_r_value"] = _header_float(record.header, "R_VALUE")
    return row


def patch_properties(
    patches: np.ndarray, threshold_gauss: float = 150.0, pixel_mm: float | None = None
) -> dict[str, np.ndarray]:
    """Properties of normalized ``(N, S, S)`` patches (1 unit = 1 kG), real or generated alike.

    Always the paper-unit ones (:func:`sharpgen.physics.paper_properties`). With ``pixel_mm`` (the pixel side
    in Mm of ``fixed_scale`` patches) also the physical ones (Mx, Mm, deg) of the patch field in G; latitude
    is unknown for a generated patch, so ``tilt_joy`` takes the northern convention.
    """
    values = paper_properties(patches, threshold=threshold_gauss / GAUSS_PER_NORMALIZED_UNIT)
    if pixel_mm is not None:
        field_gauss = np.asarray(patches, dtype=np.float32) * GAUSS_PER_NORMALIZED_UNIT
        values.update(physical_properties(field_gauss, pixel_mm, pixel_mm, threshold_gauss=threshold_gauss))
    return values
