"""Properties of SHARP FITS files (``sharpgen properties``) and of normalized patches (real or generated)."""

from __future__ import annotations

import math
import os

import numpy as np

from ..physics import paper_properties, physical_properties
from ..units import GAUSS_PER_NORMALIZED_UNIT
from .fitsio import read_sharp
from .scaling import paper_normalize


def _header_float(header, key: str) -> float:
    try:
        return float(header[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def fits_properties(path: str | os.PathLike, size: int = 128, threshold_gauss: float = 150.0) -> dict:
    """Every property of one SHARP FITS file.

    Physical properties (Mx, Mm, deg, JSOC R) on the native field; paper properties on the paper-normalized
    ``size x size`` patch. Header ``USFLUX``/``R_VALUE`` are echoed for comparison (NaN when absent).
    """
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
