"""Physical constants and unit conversions for SHARP CEA data, in one place.

Conventions: field in gauss (G = Mx cm^-2), lengths in megametres (Mm), flux in maxwell (Mx).
"""

from __future__ import annotations

import math

RSUN_REF_MM = 696.0
"""Reference solar radius used by JSOC (RSUN_REF = 696 000 km), in Mm."""

CEA_PIXEL_DEG = 0.03
"""Pixel size of hmi.sharp_cea_720s maps (CDELT1 = CDELT2), in heliographic degrees."""

CM2_PER_MM2 = 1.0e16
"""Square centimetres in one square megametre."""

GAUSS_PER_NORMALIZED_UNIT = 1000.0
"""The paper's normalization divides the clipped field by 1000 G, so 1 normalized unit = 1 kG."""


def cea_pixel_mm(cdelt_deg: float = CEA_PIXEL_DEG) -> float:
    """Side of a CEA pixel of ``cdelt_deg`` heliographic degrees, in Mm (0.3644 Mm for 0.03 deg)."""
    return math.radians(cdelt_deg) * RSUN_REF_MM


def cea_pixel_deg(pixel_mm: float) -> float:
    """Heliographic degrees of a CEA pixel ``pixel_mm`` Mm on a side (the inverse of :func:`cea_pixel_mm`)."""
    return math.degrees(pixel_mm / RSUN_REF_MM)


CEA_PIXEL_MM = cea_pixel_mm()
"""Side of a native SHARP CEA pixel, in Mm (about 0.3644)."""


def pixel_area_cm2(sx_mm: float, sy_mm: float) -> float:
    """Area of an ``sx_mm`` by ``sy_mm`` pixel, in cm^2 (a native CEA pixel: about 1.328e15 cm^2)."""
    return sx_mm * sy_mm * CM2_PER_MM2
