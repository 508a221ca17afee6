"""Normalization of SHARP fields (G, native CEA pixels) into the networks' input space ([-1, 1], S x S).

Two modes, both clip to +-1000 G, divide by 1000 G and set NaN to 0 (research/paper.md section 2; the
``noise`` fill below draws NaN pixels first):

- ``resize`` (the paper's): antialiased bilinear resize of the whole patch to S x S; the aspect ratio is not
  kept and the pixel size in Mm differs per patch (``NAXIS * 0.3644 / S``).
- ``fixed_scale``: every output pixel is ``scale_mm`` on a side; the patch is centred, larger patches are
  cropped and smaller ones padded. Generated patches then carry physical units. The padding (the quiet Sun
  around a SHARP's bounding box, which JSOC does not deliver) and NaN pixels are ``fill``: ``noise``, white
  noise of the field's own quiet-Sun noise level at native resolution, so a patch has no box edge and no
  exact zeros a real magnetogram never has; or ``zero``, zero field (all runs before ``fill`` existed).
"""

from __future__ import annotations

import zlib

import numpy as np

from ..units import CEA_PIXEL_MM, GAUSS_PER_NORMALIZED_UNIT
from .resample import apply_separable, rescale_matrix, resize

CLIP_GAUSS = 1000.0
"""The paper clips the field to +-1000 G before dividing by 1000 G."""

DEFAULT_SCALE_MM = 4 * CEA_PIXEL_MM
"""Default fixed-scale pixel: 4 native CEA pixels = 1.458 Mm, the 2-arcsec binned pixel of JSOC's R_VALUE."""

MODES = ("resize", "fixed_scale")
FILLS = ("noise", "zero")

QUIET_SUN_GAUSS = 100.0
"""Native pixels weaker than this (G) measure a field's noise level for the ``noise`` fill."""


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


def quiet_sun_sigma(field_gauss: np.ndarray) -> float:
    """Noise level of a native field in G: 1.4826 x the median absolute deviation of its finite pixels weaker
    than :data:`QUIET_SUN_GAUSS` (robust to the sparse network and the region); 0 when there are none."""
    field = np.asarray(field_gauss, dtype=np.float64)
    quiet = field[np.isfinite(field) & (np.abs(field) < QUIET_SUN_GAUSS)]
    if quiet.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(quiet - np.median(quiet))))


def _window_padding(n_in: int, n_out: int, scale: float) -> int:
    """Native pixels to add on each side so that the resampling taps of ``n_out`` outputs of ``scale`` input
    pixels, centred on the input, all fall inside it (0 when they already do)."""
    return max(0, int(np.ceil((scale * (n_out + 2) - n_in) / 2.0)) + 1)


def noise_filled(field_gauss: np.ndarray, pad_y: int, pad_x: int) -> np.ndarray:
    """The native field (G) padded by ``pad_y`` rows and ``pad_x`` columns on each side, the padding and its
    NaN pixels drawn as white noise of :func:`quiet_sun_sigma` (float64). The noise is seeded by the field's
    bytes, so one field always gets the same fill."""
    field = np.ascontiguousarray(field_gauss, dtype=np.float64)
    rng = np.random.default_rng(zlib.crc32(field.tobytes()))
    shape = (field.shape[0] + 2 * pad_y, field.shape[1] + 2 * pad_x)
    out = quiet_sun_sigma(field) * rng.standard_normal(shape)
    inner = out[pad_y : pad_y + field.shape[0], pad_x : pad_x + field.shape[1]]
    finite = np.isfinite(field)
    inner[finite] = field[finite]
    return out


def fixed_scale_normalize(
    field_gauss: np.ndarray,
    pixel_mm: tuple[float, float],
    size: int = 128,
    scale_mm: float = DEFAULT_SCALE_MM,
    fill: str = "noise",
) -> np.ndarray:
    """Normalize one field to ``(size, size)`` pixels of ``scale_mm`` Mm each, centred (crop or pad).

    ``pixel_mm = (sx, sy)`` is the native pixel size in Mm (0.3644 for SHARP CEA maps); ``fill`` (one of
    :data:`FILLS`) is what lies outside the field and in its NaN pixels.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {FILLS}")
    sx, sy = pixel_mm
    if fill == "noise":
        pad_y = _window_padding(field_gauss.shape[0], size, scale_mm / sy)
        pad_x = _window_padding(field_gauss.shape[1], size, scale_mm / sx)
        field_gauss = noise_filled(field_gauss, pad_y, pad_x)
    field = clip_and_scale(field_gauss)
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
    field_gauss: np.ndarray, pixel_mm: tuple[float, float], mode: str, size: int, scale_mm: float, fill: str
) -> np.ndarray:
    """Normalize one native field with ``mode`` (``resize`` or ``fixed_scale``, the latter padding with
    ``fill``)."""
    if mode == "resize":
        return paper_normalize(field_gauss, size)
    if mode == "fixed_scale":
        return fixed_scale_normalize(field_gauss, pixel_mm, size, scale_mm, fill)
    raise ValueError(f"unknown normalization mode {mode!r}; choose one of {MODES}")
