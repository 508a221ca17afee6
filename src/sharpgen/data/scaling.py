"""Normalization of SHARP fields (G, native CEA pixels) into the networks' input space ([-1, 1], S x S).

Two modes, both clip to +-1000 G, divide by 1000 G and set NaN to 0 first (research/paper.md section 2):

- ``resize`` (the paper's): antialiased bilinear resize of the whole patch to S x S; the aspect ratio is not
  kept and the pixel size in Mm differs per patch (``NAXIS * 0.3644 / S``).
- ``fixed_scale``: every output pixel is ``scale_mm`` on a side; the patch is centred, larger patches are
  cropped and smaller ones padded with zero field. Generated patches then carry physical units.
"""

from __future__ import annotations

import numpy as np

from ..units import CEA_PIXEL_MM, GAUSS_PER_NORMALIZED_UNIT
from .resample import apply_separable, rescale_matrix, resize

CLIP_GAUSS = 1000.0
"""The paper clips the field to +-1000 G before dividing by 1000 G."""

DEFAULT_SCALE_MM = 4 * CEA_PIXEL_MM
"""Default fixed-scale pixel: 4 native CEA pixels = 1.458 Mm, the 2-arcsec binned pixel of JSOC's R_VALUE."""

MODES = ("resize", "fixed_scale")


def clip_and_scale(field_gauss: np.ndarray) -> np.ndarray:
    """Clip a field in G to +-1000 G, divide by 1000 G and replace NaN by 0 (float32, values in [-1, 1])."""
    clipped = np.clip(np.asarray(field_gauss, dtype=np.float64), -CLIP_GAUSS, CLIP_GAUSS)
    scaled = np.nan_to_num(clipped / GAUSS_PER_NORMALIZED_UNIT, nan=0.0, posinf=1.0, neginf=-1.0)
    return scaled.astype(np.float32)


def _unit_range(patch: np.ndarray) -> np.ndarray:
    """Resampling weights are convex, so only float32 rounding can leave [-1, 1]; clip that away."""
    return np.clip(patch, -1.0, 1.0, out=patch)


def paper_normalize(field_gauss: np.ndarray, size: int = 128) -> np.ndarray:
    """Normalize one native SHARP field (G, ``(NAXIS2, NAXIS1)``) the paper's way to ``(size, size)`` float32."""
    return _unit_range(resize(clip_and_scale(field_gauss), (size, size)))


def fixed_scale_normalize(
    field_gauss: np.ndarray,
    pixel_mm: tuple[float, float],
    size: int = 128,
    scale_mm: float = DEFAULT_SCALE_MM,
) -> np.ndarray:
    """Normalize one field to ``(size, size)`` pixels of ``scale_mm`` Mm each, centred (crop or zero-pad).

    ``pixel_mm = (sx, sy)`` is the native pixel size in Mm (0.3644 for SHARP CEA maps).
    """
    field = clip_and_scale(field_gauss)
    sx, sy = pixel_mm
    ry = rescale_matrix(field.shape[0], size, scale_mm / sy)
    rx = rescale_matrix(field.shape[1], size, scale_mm / sx)
    return _unit_range(apply_separable(field, ry, rx))


def normalized_pixel_mm(
    mode: str, shape: tuple[int, int], pixel_mm: tuple[float, float], size: int, scale_mm: float
) -> tuple[float, float]:
    """Pixel size ``(sx, sy)`` in Mm of a field of native ``shape = (NAXIS2, NAXIS1)`` after normalization."""
    if mode == "fixed_scale":
        return scale_mm, scale_mm
    return pixel_mm[0] * shape[1] / size, pixel_mm[1] * shape[0] / size


def normalize_field(
    field_gauss: np.ndarray, pixel_mm: tuple[float, float], mode: str, size: int, scale_mm: float
) -> np.ndarray:
    """Normalize one native field with ``mode`` (``resize`` or ``fixed_scale``)."""
    if mode == "resize":
        return paper_normalize(field_gauss, size)
    if mode == "fixed_scale":
        return fixed_scale_normalize(field_gauss, pixel_mm, size, scale_mm)
    raise ValueError(f"unknown normalization mode {mode!r}; choose one of {MODES}")
