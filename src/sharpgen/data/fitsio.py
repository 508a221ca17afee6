"""Reading and writing SHARP-like CEA FITS files (field in G, JSOC keywords in the header).

JSOC stores SHARP segments as RICE-compressed int32 images with ``BSCALE = 0.1`` (0.1 G steps) and
``BLANK`` for missing pixels; :func:`write_sharp_fits` writes the same layout, so files from every
source look alike to the rest of the pipeline.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from ..atomic import atomic_path
from ..errors import SharpgenError
from ..units import cea_pixel_mm

FIELD_QUANTUM_G = 0.1
"""Quantization step of stored field values, in G (JSOC's BSCALE for SHARP segments)."""

BLANK_INT32 = -2147483648
"""Integer written for missing (NaN) pixels."""

TILE_ROWS = 64
"""Rows per compression tile of written files."""

GAUSS_UNITS = frozenset({"g", "gauss", "mx/cm^2", "mx/cm2", "mx/cm**2", "mxcm^-2", "mxcm-2", "mx.cm^-2"})
"""BUNIT spellings (lower case, spaces removed) accepted as gauss."""

OTHER_SEGMENTS = (
    "bitmap", "conf_disambig", "continuum", "Dopplergram", "Br_err", "Bp_err", "Bt_err",
    "field", "inclination", "azimuth", "disambig", "info_map", "confid_map", "conv_flag", "chisq",
)  # fmt: skip
"""Known SHARP segments that are *not* a field map (masks, intensities, errors, CCD-frame inversions)."""


@dataclass(frozen=True)
class SharpRecord:
    """One SHARP CEA image: ``field`` in G as ``(NAXIS2, NAXIS1)`` float64 (NaN where missing) and its header."""

    path: Path
    field: np.ndarray
    header: fits.Header
    integer: bool = False  # the stored image holds integers without BSCALE (a mask, not a field)

    @property
    def pixel_size_mm(self) -> tuple[float, float]:
        """Pixel size ``(sx, sy)`` in Mm from CDELT1/CDELT2 (degrees on the CEA grid)."""
        try:
            return pixel_size_mm(self.header)
        except SharpgenError as exc:
            raise SharpgenError(f"{self.path}: {exc}") from None


def _image_hdu(hdul: fits.HDUList):
    for hdu in hdul:
        if hdu.is_image and hdu.data is not None and np.ndim(hdu.data) == 2:
            return hdu
    return None


def check_field_file(path: str | os.PathLike) -> None:
    """Refuse a FITS file that is not a magnetic field map in G: one whose name is a non-field SHARP segment
    (``*.bitmap.fits``, ...), whose image holds integers (masks; JSOC's field segments are scaled by BSCALE),
    or whose BUNIT is absent or not G / Gauss / Mx/cm^2. One line naming the file; unreadable files as
    :func:`read_sharp` says."""
    path = Path(path)
    segment = path.name.removesuffix(".gz").removesuffix(".fits").rpartition(".")[2]
    if segment.lower() in {name.lower() for name in OTHER_SEGMENTS}:
        raise SharpgenError(f"{path}: a SHARP {segment} segment, not a field map; give a Br, Bp, Bt or magnetogram one")
    record = read_sharp(path)
    bunit = str(record.header.get("BUNIT", "") or "").strip()
    if record.integer or not bunit or bunit.lower() == "none":
        what = "integer data" if record.integer else "no BUNIT"
        raise SharpgenError(f"{path}: {what}, so a mask (e.g. JSOC's bitmap), not a field map in G (BUNIT = G)")
    if bunit.lower().replace(" ", "") not in GAUSS_UNITS:
        raise SharpgenError(f"{path}: BUNIT is {bunit!r}, not a field in G (expected G, Gauss or Mx/cm^2)")


def read_sharp(path: str | os.PathLike) -> SharpRecord:
    """Read the first 2-d image of a SHARP FITS file (compressed or not); field in G.

    Raises :class:`SharpgenError` for a missing, unreadable or image-less file.
    """
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"{path}: no such FITS file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(path, memmap=False) as hdul:
                hdu = _image_hdu(hdul)
                if hdu is None:
                    raise SharpgenError(f"{path}: no 2-d image in this FITS file")
                integer = hdu.data.dtype.kind in "iub"
                field = np.asarray(hdu.data, dtype=np.float64)
                header = hdu.header.copy()
    except SharpgenError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise SharpgenError(f"{path}: not a readable FITS file ({exc.__class__.__name__}: {exc})") from exc
    return SharpRecord(path=path, field=field, header=header, integer=integer)


def pixel_size_mm(header: fits.Header) -> tuple[float, float]:
    """Pixel size ``(sx, sy)`` in Mm of a CEA map whose CDELT1/2 are heliographic degrees."""
    missing = [key for key in ("CDELT1", "CDELT2") if key not in header]
    if missing:
        raise SharpgenError(f"header lacks {' and '.join(missing)}: cannot tell the pixel size")
    cdelt1, cdelt2 = abs(float(header["CDELT1"])), abs(float(header["CDELT2"]))
    for axis in ("CUNIT1", "CUNIT2"):
        unit = str(header.get(axis, "degree")).strip().lower()
        if unit not in ("deg", "degree", "degrees"):
            raise SharpgenError(f"{axis} = {unit!r}: expected a CEA map in heliographic degrees")
    return cea_pixel_mm(cdelt1), cea_pixel_mm(cdelt2)


def write_sharp_fits(path: str | os.PathLike, field_gauss: np.ndarray, cards: dict) -> Path:
    """Write ``field_gauss`` (2-d, G, NaN allowed) as a RICE-compressed SHARP-like FITS file, atomically.

    ``cards`` become header keywords in their given order (values: str, int, float or bool). Output is
    byte-identical for identical inputs.
    """
    field = np.asarray(field_gauss, dtype=np.float64)
    if field.ndim != 2:
        raise ValueError(f"field must be 2-d, got shape {field.shape}")
    finite = np.isfinite(field)
    quantized = np.where(finite, np.round(np.where(finite, field, 0.0) / FIELD_QUANTUM_G), BLANK_INT32)
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    # Tiles of up to 64 full rows: far fewer tiles than astropy's row-by-row default, so reading and writing
    # are several times faster; any FITS reader handles any tile shape.
    tile_shape = (min(TILE_ROWS, field.shape[0]), field.shape[1])
    hdu = fits.CompImageHDU(
        data=quantized.astype(np.int32), header=header, compression_type="RICE_1", tile_shape=tile_shape
    )
    hdu.header["BSCALE"] = FIELD_QUANTUM_G
    hdu.header["BZERO"] = 0.0
    hdu.header["BLANK"] = BLANK_INT32
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
    return Path(path)
