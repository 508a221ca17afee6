"""Physical properties of SHARP patches, batched over ``N`` images (research/physics.md, paper.md 4a).

Two families share one set of helpers (strong-polarity masks, flux-weighted moments, box dilation):

- :func:`paper_properties`: the paper's quantities on normalized patches (field in kG, clipped to [-1, 1]),
  formula for formula as its ``calculate_params_``; dimensionless or in normalized units.
- :func:`physical_properties`: the same ideas in physical units on fields in G with pixel sizes in Mm
  (flux in Mx, lengths in Mm, angles in degrees), plus JSOC's R_VALUE and a PIL length.
- :func:`r_value`: JSOC's R_VALUE (Schrijver 2007) of one native-resolution CEA magnetogram, step by step as
  ``sw_functions.c`` ``computeR``; it reproduces the R_VALUE keyword of real SHARP records.

Everything is vectorised over the image axis and processed in chunks; no per-image Python loop.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import correlate1d

from .units import CEA_PIXEL_MM, pixel_area_cm2

R_THRESHOLD_GAUSS = 150.0
"""JSOC's strong-field threshold for the R_VALUE polarity masks, in G."""

R_BIN_MM = 4 * CEA_PIXEL_MM
"""JSOC's R_VALUE working pixel, in Mm: 4 native CEA pixels (about 1.458 Mm, MDI's 2 arcsec)."""

R_GAUSS_SIGMA_BINNED = 10.0 / 2.3548
"""Sigma of JSOC's R_VALUE weighting Gaussian, in binned pixels (FWHM = 10 binned pixels)."""

R_GAUSS_HALF_WIDTH = 20
"""JSOC truncates the R_VALUE Gaussian at +-20 binned pixels (41 taps) and pads the PIL map by as much."""

PAPER_DILATION_RADIUS = 3
"""The paper dilates its strong-polarity masks with a 7 x 7 square (radius 3 pixels) for ``r_paper``."""

_PAPER_CHUNK_PIXELS = 1 << 17
"""Pixels per chunk in :func:`paper_properties`: a 512 KiB float32 chunk and its temporaries stay in a core's L2
cache (8 images of 128 x 128: twice the throughput of 256-image chunks, which spill to memory)."""

_PHYSICAL_CHUNK_PIXELS = 1 << 17
"""Pixels per chunk in :func:`physical_properties`: its 1 MiB float64 arrays stay in cache (at 64 px, 30 % less
CPU than 4 Mpx chunks); a native-size patch is a chunk of its own, so memory stays bounded."""


# ---------------------------------------------------------------------------------------------------------
# shared helpers


def _as_stack(images: np.ndarray, name: str) -> np.ndarray:
    """Return ``images`` as an ``(N, H, W)`` array (a single ``(H, W)`` image becomes ``N = 1``)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[np.newaxis]
    if images.ndim != 3 or min(images.shape[1:]) < 1:
        raise ValueError(f"{name} must be (N, H, W) or (H, W) with H, W >= 1, got shape {images.shape}")
    return images


def _per_image(value, n: int, name: str) -> np.ndarray:
    """Broadcast a scalar or an ``(N,)`` sequence to a float64 ``(N,)`` array."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(n, float(array))
    if array.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got shape {array.shape}")
    return array


def _count_true(masks: np.ndarray) -> np.ndarray:
    """Number of True pixels per image of a C-contiguous ``(n, h, w)`` bool array (int64)."""
    flat = masks.reshape(masks.shape[0], -1)
    if flat.shape[1] % 8:
        return np.count_nonzero(flat, axis=1).astype(np.int64)
    # A bool byte is 0 or 1, so the popcount of a 64-bit word counts its True bytes.
    return np.bitwise_count(flat.view(np.uint64)).sum(axis=1).astype(np.int64)


def _image_totals(values: np.ndarray) -> np.ndarray:
    """Sum over each image of ``(n, h, w)``: float32/64 row sums by BLAS, rows accumulated in float64."""
    n, h, w = values.shape
    rows = values.reshape(n * h, w) @ np.ones(w, dtype=values.dtype)
    return rows.reshape(n, h).sum(axis=1, dtype=np.float64)


@lru_cache(maxsize=16)
def _moment_basis(w: int, dtype: np.dtype) -> np.ndarray:
    """The read-only ``(w, 2)`` matrix ``[1, col]`` of :func:`_moments` (built once per width and dtype)."""
    basis = np.stack([np.ones(w), np.arange(w, dtype=np.float64)], axis=1).astype(dtype)
    basis.setflags(write=False)
    return basis


def _moments(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroth and first moments ``(sum w, sum w*row, sum w*col)`` of each ``(h, w)`` weight map, float64.

    One matrix product against ``[1, col]`` gives per-row sums and column moments in the input dtype; the
    rows are combined in float64.
    """
    n, h, w = weights.shape
    per_row = (weights.reshape(n * h, w) @ _moment_basis(w, weights.dtype)).reshape(n, h, 2).astype(np.float64)
    row_sums = per_row[..., 0]
    return row_sums.sum(axis=1), row_sums @ np.arange(h, dtype=np.float64), per_row[..., 1].sum(axis=1)


def _centroid(moments: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted centroid ``(row, col)`` in pixel indices; NaN where the total weight is 0."""
    mass, row_moment, col_moment = moments
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(mass > 0, mass, np.nan)
        return row_moment / safe, col_moment / safe


def _polarity_moments(field: np.ndarray, magnitude: np.ndarray, threshold: float):
    """Strong-polarity masks ``field > T``, ``field < -T`` and the ``|field|``-weighted moments of each.

    Returns ``(pos, neg, pos_moments, neg_moments)``; the masks are ``(n, h, w)`` bool, the moments as
    :func:`_moments`. ``magnitude`` is ``|field|`` (passed in because callers need it anyway).
    """
    pos = field > threshold
    neg = field < -threshold
    pos_moments = _moments(np.multiply(field, pos))
    neg_moments = _moments(np.multiply(magnitude, neg))
    return pos, neg, pos_moments, neg_moments


def _window_or(flat: np.ndarray, length: int, step: int) -> np.ndarray:
    """``out[i] = flat[i] | flat[i + step] | ... | flat[i + (length - 1) * step]`` by doubling windows."""
    span = 1
    while span < length:
        grow = min(span, length - span)
        flat = flat[: -grow * step] | flat[grow * step :]
        span += grow
    return flat


def _dilate(masks: np.ndarray, radius_y: int, radius_x: int) -> np.ndarray:
    """Binary dilation of each ``(h, w)`` mask by a centred ``(2 ry + 1) x (2 rx + 1)`` box; outside is False.

    Equals ``scipy.ndimage.binary_dilation(mask, np.ones((2 ry + 1, 2 rx + 1)))`` (and scikit-image's), done
    separably with shifted ORs on one flat buffer in which every image row is preceded by ``rx`` zero columns
    and every image by ``ry`` zero rows, so flat shifts never carry a pixel into another row or image.
    """
    n, h, w = masks.shape
    row = w + radius_x
    block = (h + radius_y) * row
    buffer = np.zeros(n * block + 2 * (radius_y * row + radius_x), dtype=bool)
    buffer[: n * block].reshape(n, h + radius_y, row)[:, radius_y:, radius_x:] = masks
    dilated = _window_or(_window_or(buffer, 2 * radius_x + 1, 1), 2 * radius_y + 1, row)
    # Element q of ``dilated`` is the window centred on buffer position q + radius_y * row + radius_x.
    return dilated[: n * block].reshape(n, h + radius_y, row)[:, :h, :w]


def _dilations_overlap(pos: np.ndarray, neg: np.ndarray, radius_y: int, radius_x: int) -> np.ndarray:
    """Pixels within a ``(2 ry + 1) x (2 rx + 1)`` box of both a ``pos`` and a ``neg`` pixel (``(n, h, w)`` bool)."""
    return np.bitwise_and(_dilate(pos, radius_y, radius_x), _dilate(neg, radius_y, radius_x))


# ---------------------------------------------------------------------------------------------------------
# paper units


def paper_geometry(
    patch: np.ndarray, threshold: float = 0.15
) -> tuple[dict[str, tuple[float, float] | None], np.ndarray]:
    """What ``psep`` and ``r_paper`` measure on one normalized ``(H, W)`` patch, for drawing: the ``|B|``-weighted
    centroids ``(row, col)`` (pixel indices; None without strong pixels) of the strong masks ``B > T`` and
    ``B < -T`` (keys ``positive``, ``negative``; ``threshold`` T in kG), and the ``(H, W)`` bool mask of the
    overlap of their dilations (the pixels ``r_paper`` sums, near the polarity inversion line)."""
    field = np.ascontiguousarray(np.asarray(patch)[None], dtype=np.float32)
    pos, neg, pos_moments, neg_moments = _polarity_moments(field, np.abs(field), threshold)
    radius = PAPER_DILATION_RADIUS
    mask = _dilations_overlap(pos, neg, radius, radius)[0]
    centroids = {}
    for sign, moments in (("positive", pos_moments), ("negative", neg_moments)):
        row, col = _centroid(moments)
        centroids[sign] = (float(row[0]), float(col[0])) if np.isfinite(row[0]) else None
    return centroids, mask


def paper_properties(patches: np.ndarray, threshold: float = 0.15) -> dict[str, np.ndarray]:
    """The paper's properties of normalized patches (research/paper.md section 4a, ``calculate_params_``).

    ``patches``: ``(N, H, W)`` or ``(H, W)`` (taken as ``N = 1``) finite normalized field in kG (the field
    clipped to +-1000 G and divided by 1000 G, so values in [-1, 1]); float32 input is processed in float32
    with sums accumulated in float64. ``threshold`` in the same units (0.15 = 150 G) defines the strong masks
    ``pos = s > th`` and ``neg = s < -th``.

    Returns float64 arrays of shape ``(N,)``:

    - ``tuf``: ``sum |s| / (H W)`` over all pixels (mean unsigned field, kG; no threshold);
    - ``tpf``: mean of ``s`` over ``s > 0`` pixels; ``tnf``: mean ``|s|`` over ``s < 0`` pixels (kG; no
      threshold);
    - ``psep``: distance of the ``|s|``-weighted centroids (row, column indices) of ``pos`` and ``neg`` in
      pixels divided by the image diagonal ``sqrt(H**2 + W**2)`` (the paper's ``d / (128 sqrt 2)``);
    - ``tilt_paper``: ``arcsin((cy_neg - cy_pos) / d)`` in degrees, rows growing downward as in the paper;
    - ``area``: ``(|pos| + |neg|) / (H W)``, the fraction of strong-field pixels;
    - ``eflux``: ``sum s[pos] + sum s[neg]``, the net strong-field flux in normalized units;
    - ``lead_pol``: ``cx_pos - cx_neg`` in pixels (> 0: the positive centroid lies at a larger column);
    - ``r_paper``: ``sum |s|`` over the overlap of the 7 x 7 square dilations of ``pos`` and ``neg``;
    - ``peak``: ``max |s|``, the strongest field in the patch (kG; at most 1 on clipped patches; not the paper's).

    NaN policy: ``psep``, ``tilt_paper``, ``lead_pol`` and ``r_paper`` are NaN when a patch has no ``pos`` or
    no ``neg`` pixel (``tilt_paper`` also when the two centroids coincide); ``tpf`` (``tnf``) is NaN only when
    no pixel is positive (negative); ``tuf``, ``area``, ``eflux`` and ``peak`` are always defined.
    """
    patches = _as_stack(patches, "patches")
    dtype = np.result_type(patches.dtype, np.float32)
    n, h, w = patches.shape
    sums = np.empty((len(_PAPER_SUMS), n))
    step = max(1, _PAPER_CHUNK_PIXELS // (h * w))
    for start in range(0, n, step):
        chunk = np.ascontiguousarray(patches[start : start + step], dtype=dtype)
        _paper_sums(chunk, threshold, sums[:, start : start + len(chunk)])
    return _paper_from_sums(dict(zip(_PAPER_SUMS, sums, strict=True)), h, w)


_PAPER_SUMS = (
    "sum_pos", "sum_neg", "n_pos", "n_neg", "n_strong_pos", "n_strong_neg",
    "mass_pos", "row_pos", "col_pos", "mass_neg", "row_neg", "col_neg", "near_pil", "peak",
)  # fmt: skip
"""Per-image sums of :func:`_paper_sums`, in the order of its output rows."""


def _paper_sums(s: np.ndarray, threshold: float, out: np.ndarray) -> None:
    """Fill ``out`` ``(len(_PAPER_SUMS), n)`` with the per-image sums of the ``(n, h, w)`` chunk ``s``:
    ``s`` over ``s > 0``, ``|s|`` over ``s < 0``, the counts of those and of ``pos``, ``neg``, the moments of
    the two strong polarities, ``|s|`` where their dilations overlap, and ``max |s|``."""
    n, h, w = s.shape
    zero = s.dtype.type(0)
    magnitude = np.abs(s)
    scratch = np.maximum(s, zero)
    out[0] = _image_totals(scratch)
    out[1] = _image_totals(np.subtract(magnitude, scratch, out=scratch))  # |s| - max(s, 0) = max(-s, 0)
    out[2] = _count_true(s > zero)
    out[3] = _count_true(s < zero)
    pos, neg, pos_moments, neg_moments = _polarity_moments(s, magnitude, threshold)
    out[4] = _count_true(pos)
    out[5] = _count_true(neg)
    out[6:9] = pos_moments
    out[9:12] = neg_moments
    overlap = _dilations_overlap(pos, neg, PAPER_DILATION_RADIUS, PAPER_DILATION_RADIUS)
    out[12] = _image_totals(np.multiply(magnitude, overlap, out=scratch))
    out[13] = magnitude.reshape(n, h * w).max(axis=1)


def _paper_from_sums(sums: dict[str, np.ndarray], h: int, w: int) -> dict[str, np.ndarray]:
    """The properties of :func:`paper_properties` from the per-image sums of :func:`_paper_sums`."""
    cy_p, cx_p = _centroid((sums["mass_pos"], sums["row_pos"], sums["col_pos"]))
    cy_n, cx_n = _centroid((sums["mass_neg"], sums["row_neg"], sums["col_neg"]))
    distance = np.hypot(cx_n - cx_p, cy_n - cy_p)
    bipolar = (sums["n_strong_pos"] > 0) & (sums["n_strong_neg"] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpf = sums["sum_pos"] / np.where(sums["n_pos"] > 0, sums["n_pos"], np.nan)
        tnf = sums["sum_neg"] / np.where(sums["n_neg"] > 0, sums["n_neg"], np.nan)
        tilt = np.degrees(np.arcsin((cy_n - cy_p) / distance))
    return {
        "tuf": (sums["sum_pos"] + sums["sum_neg"]) / (h * w),
        "tpf": tpf,
        "tnf": tnf,
        "psep": distance / np.hypot(h, w),
        "tilt_paper": tilt,
        "area": (sums["n_strong_pos"] + sums["n_strong_neg"]) / (h * w),
        "eflux": sums["mass_pos"] - sums["mass_neg"],
        "lead_pol": cx_p - cx_n,
        "r_paper": np.where(bipolar, sums["near_pil"], np.nan),
        "peak": sums["peak"].copy(),
    }


# ---------------------------------------------------------------------------------------------------------
# JSOC R_VALUE


_R_MATMUL_MAX_SIDE = 512
"""Up to this many binned pixels a side, the R_VALUE Gaussian is applied as a product with a banded matrix
(BLAS: 4.5x faster than ``correlate1d`` at 64 px); larger maps use ``correlate1d`` (memory grows as side**2)."""


def _r_gaussian_taps() -> np.ndarray:
    x = np.arange(-R_GAUSS_HALF_WIDTH, R_GAUSS_HALF_WIDTH + 1, dtype=np.float64)
    taps = np.exp(-(x**2) / (2.0 * R_GAUSS_SIGMA_BINNED**2))
    return taps / taps.sum()


@lru_cache(maxsize=16)
def _r_gaussian_matrix(size: int) -> np.ndarray:
    """Read-only ``(size, size)`` matrix ``G`` with ``G @ v`` = ``correlate1d(v, taps, mode="constant")``."""
    offset = np.arange(size)[None, :] - np.arange(size)[:, None] + R_GAUSS_HALF_WIDTH
    inside = (offset >= 0) & (offset <= 2 * R_GAUSS_HALF_WIDTH)
    matrix = np.where(inside, _r_gaussian_taps()[np.clip(offset, 0, 2 * R_GAUSS_HALF_WIDTH)], 0.0)
    matrix.setflags(write=False)
    return matrix


def _r_weight_map(pil: np.ndarray) -> np.ndarray:
    """The PIL map ``(n, h, w)`` convolved with the R_VALUE Gaussian along both axes, zero outside (float64)."""
    n, h, w = pil.shape
    if max(h, w) > _R_MATMUL_MAX_SIDE:
        taps = _r_gaussian_taps()
        weight = correlate1d(pil.astype(np.float64), taps, axis=1, mode="constant", cval=0.0)
        return correlate1d(weight, taps, axis=2, mode="constant", cval=0.0)
    along_x = (pil.reshape(n * h, w).astype(np.float64) @ _r_gaussian_matrix(w).T).reshape(n, h, w)
    return np.matmul(_r_gaussian_matrix(h), along_x)


def _r_value_batch(fields: np.ndarray, bin_factor: int) -> np.ndarray:
    """JSOC R_VALUE of each ``(H, W)`` field in G (NaN = missing) of an ``(n, H, W)`` stack; float64 ``(n,)``.

    Steps (research/physics.md section 3): decimate by ``bin_factor`` (``rim = los[::f, ::f]`` cropped to
    ``(H // f, W // f)``, no averaging); masks ``rim > 150 G``, ``rim < -150 G``; PIL = binned pixels whose
    3 x 3 neighbourhood holds both (exact boolean dilation, not a float box filter), never on the outermost
    row/column; weight map = PIL convolved with a unit-sum Gaussian (sigma 10/2.3548 px, 41 taps) on a 20-px
    zero-padded map; ``S = sum W * trunc(|rim|)`` over finite pixels; ``R = log10(S)`` if ``S >= 1`` else 0.
    """
    n, h, w = fields.shape
    ny, nx = h // bin_factor, w // bin_factor
    if ny == 0 or nx == 0:
        return np.zeros(n)
    rim = fields[:, ::bin_factor, ::bin_factor][:, :ny, :nx]
    pil = _dilations_overlap(rim > R_THRESHOLD_GAUSS, rim < -R_THRESHOLD_GAUSS, 1, 1)
    pil[:, [0, -1], :] = False
    pil[:, :, [0, -1]] = False
    result = np.zeros(n)
    has_pil = pil.any(axis=(1, 2))  # without a PIL pixel the weight map is 0, S = 0 and R = 0
    if not has_pil.any():
        return result
    pil, rim = pil[has_pil], rim[has_pil]
    # Zero padding by the kernel half-width then cropping equals a 'constant' (cval 0) boundary.
    weight = _r_weight_map(pil)
    strength = np.trunc(np.abs(np.where(np.isfinite(rim), rim, 0.0)))  # C's integer abs() truncates
    total = (weight * strength).reshape(len(rim), -1).sum(axis=1)
    result[has_pil] = np.where(total >= 1.0, np.log10(np.maximum(total, 1.0)), 0.0)
    return result


def r_value(magnetogram_gauss: np.ndarray, bin_factor: int = 4) -> float:
    """JSOC's R_VALUE (Schrijver 2007) of one native-resolution CEA LOS magnetogram in G (NaN = missing).

    Exactly the ``computeR`` recipe of ``sw_functions.c`` (research/physics.md section 3): decimation by
    ``bin_factor`` (4 = JSOC's 2 arcsec working pixel for 0.03 deg CEA pixels), +-150 G masks, 3 x 3 PIL,
    Gaussian weighting (FWHM 10 binned pixels), ``R = log10(sum W |B|)`` or 0 when the sum is below 1.
    Dimensionless (log10 of G times binned pixels, as JSOC computes it despite "Mx" in its keyword comment).
    """
    field = np.asarray(magnetogram_gauss, dtype=np.float64)
    if field.ndim != 2:
        raise ValueError(f"magnetogram_gauss must be 2-d, got shape {field.shape}")
    if int(bin_factor) != bin_factor or bin_factor < 1:
        raise ValueError(f"bin_factor must be a positive integer, got {bin_factor!r}")
    return float(_r_value_batch(field[np.newaxis], int(bin_factor))[0])


# ---------------------------------------------------------------------------------------------------------
# physical units


def physical_properties(
    field_gauss: np.ndarray,
    sx_mm,
    sy_mm,
    threshold_gauss: float = 150.0,
    latitude_deg=None,
) -> dict[str, np.ndarray]:
    """Active-region properties in physical units (research/physics.md section 4).

    ``field_gauss``: ``(N, H, W)`` or ``(H, W)`` (taken as ``N = 1``) field in G, NaN = missing pixel
    (ignored). Row index grows northward (FITS row 0 is the southern edge of a CEA map), column index
    westward. ``sx_mm``, ``sy_mm``: pixel size along columns (x) and rows (y) in Mm, scalars or ``(N,)``;
    pixels may be anisotropic (a resized patch). ``threshold_gauss`` ``T`` defines the strong masks ``B > T``
    and ``B < -T``. ``latitude_deg``: scalar, ``(N,)`` or None (= north); only its sign matters (``>= 0`` is
    north).

    Returns float64 arrays of shape ``(N,)``:

    - ``usflux`` [Mx]: ``a * sum |B|`` over the whole patch with no threshold (JSOC's USFLUX with the mask
      = the whole patch), ``a = sx * sy * 1e16 cm^2`` the pixel area;
    - ``pos_flux``, ``neg_flux`` [Mx, both >= 0]: ``a * sum B`` over ``B > T``, ``a * sum |B|`` over
      ``B < -T``;
    - ``imbalance``: ``(pos_flux - neg_flux) / (pos_flux + neg_flux)`` (NaN when both are 0);
    - ``psep_mm`` [Mm]: distance of the ``|B|``-weighted centroids of the two strong masks, pixel indices
      converted to Mm with ``(sx, sy)`` before the distance is taken;
    - ``tilt_joy`` [deg, -90..90]: the leading polarity L is the one whose centroid lies further west (larger
      x; a tie goes to the positive polarity), F the other; ``tilt = atan2(h (y_F - y_L), |x_L - x_F|)`` with
      y in Mm growing northward and ``h = +1`` north, ``-1`` south. A bipole obeying Joy's law (leading
      polarity closer to the equator) has a positive tilt in both hemispheres;
    - ``lead_sign``: +1 or -1, the sign of the leading polarity;
    - ``r_value``: JSOC's R_VALUE (:func:`r_value`) with bin factor ``max(1, round(R_BIN_MM / sx))``: 4 at
      the native 0.3644 Mm pixel, where it is exactly JSOC's; on coarser pixels (bin factor 1) it is R of the
      given pixels (Gaussian width and sum in those pixels), not comparable with the SHARP keyword;
    - ``pil_length_mm`` [Mm]: length of the strong-field polarity inversion line (PIL). The PIL band holds the
      pixels that have both a ``B > T`` and a ``B < -T`` pixel within one R_VALUE working pixel
      (``R_BIN_MM``, 1.458 Mm) along each axis, i.e. inside a ``(2 ry + 1) x (2 rx + 1)`` box with
      ``r = max(1, round(R_BIN_MM / s))`` (3 x 3 on coarse pixels, 9 x 9 at the native pixel), so the band
      does not depend on the resolution. Each pair of 4-neighbour pixels of opposite sign (``B > 0`` vs
      ``B <= 0``, both finite) with a pixel in the band is a crossing of the zero line; a pair along x
      contributes ``sy |n_x|``, a pair along y ``sx |n_y|``, where ``n`` is the unit normal of the zero line
      from the field gradient in Mm (the mean of the two pixels' central differences).
      A straight line of length L crosses ``L |t_y| / sy`` x-pairs and ``L |t_x| / sx`` y-pairs (t its unit
      tangent), so the weighted count is L for every orientation and pixel aspect ratio, without
      skeletonisation (measured: within 1 % for straight lines whose field transition spans a pixel or more,
      up to 15 % over for sub-pixel steps on 2:1 pixels); a curved or noisy line is measured by its zero
      crossings inside the band.

    Undefined quantities are NaN: ``psep_mm``, ``tilt_joy`` and ``lead_sign`` without both strong polarities,
    ``tilt_joy`` also for a NaN latitude.
    """
    fields = _as_stack(field_gauss, "field_gauss")
    n, h, w = fields.shape
    sx = _per_image(sx_mm, n, "sx_mm")
    sy = _per_image(sy_mm, n, "sy_mm")
    if not (np.all(np.isfinite(sx) & (sx > 0)) and np.all(np.isfinite(sy) & (sy > 0))):
        raise ValueError("pixel sizes sx_mm, sy_mm must be positive and finite")
    if latitude_deg is None:
        hemisphere = np.ones(n)
    else:
        latitude = _per_image(latitude_deg, n, "latitude_deg")
        hemisphere = np.where(np.isnan(latitude), np.nan, np.where(latitude >= 0, 1.0, -1.0))
    keys = (
        "usflux",
        "pos_flux",
        "neg_flux",
        "imbalance",
        "psep_mm",
        "tilt_joy",
        "lead_sign",
        "r_value",
        "pil_length_mm",
    )
    out = {key: np.empty(n, dtype=np.float64) for key in keys}
    chunk = max(1, _PHYSICAL_CHUNK_PIXELS // (h * w))
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        values = _physical_chunk(
            np.asarray(fields[part], dtype=np.float64), sx[part], sy[part], threshold_gauss, hemisphere[part]
        )
        for key, value in values.items():
            out[key][part] = value
    return out


def _physical_chunk(fields, sx, sy, threshold, hemisphere) -> dict[str, np.ndarray]:
    n = fields.shape[0]
    finite = np.isfinite(fields)
    field = np.where(finite, fields, 0.0)
    magnitude = np.abs(field)
    area = pixel_area_cm2(sx, sy)

    pos, neg, pos_mom, neg_mom = _polarity_moments(field, magnitude, threshold)
    pos_flux = area * pos_mom[0]
    neg_flux = area * neg_mom[0]
    cy_p, cx_p = _centroid(pos_mom)
    cy_n, cx_n = _centroid(neg_mom)
    x_p, y_p, x_n, y_n = cx_p * sx, cy_p * sy, cx_n * sx, cy_n * sy
    positive_leads = x_p >= x_n
    x_lead, y_lead = np.where(positive_leads, x_p, x_n), np.where(positive_leads, y_p, y_n)
    x_follow, y_follow = np.where(positive_leads, x_n, x_p), np.where(positive_leads, y_n, y_p)
    bipolar = np.isfinite(x_p) & np.isfinite(x_n)

    # One R_VALUE working pixel (R_BIN_MM) in pixels along x and y: R's bin factor and the PIL band radius.
    radius_x = np.maximum(1, np.rint(R_BIN_MM / sx)).astype(int)
    radius_y = np.maximum(1, np.rint(R_BIN_MM / sy)).astype(int)
    r_values = np.empty(n)
    pil_length = np.empty(n)
    for rx, ry in np.unique(np.stack([radius_x, radius_y], axis=1), axis=0):
        group = (radius_x == rx) & (radius_y == ry)
        if group.all():
            group = slice(None)  # the usual case: a view, no copies
        r_values[group] = _r_value_batch(fields[group], int(rx))
        pil_length[group] = _pil_length(
            field[group], finite[group], pos[group], neg[group], sx[group], sy[group], int(ry), int(rx)
        )

    with np.errstate(invalid="ignore", divide="ignore"):
        imbalance = (pos_flux - neg_flux) / (pos_flux + neg_flux)
    return {
        "usflux": area * _image_totals(magnitude),
        "pos_flux": pos_flux,
        "neg_flux": neg_flux,
        "imbalance": imbalance,
        "psep_mm": np.hypot(x_p - x_n, y_p - y_n),
        "tilt_joy": np.degrees(np.arctan2(hemisphere * (y_follow - y_lead), np.abs(x_lead - x_follow))),
        "lead_sign": np.where(bipolar, np.where(positive_leads, 1.0, -1.0), np.nan),
        "r_value": r_values,
        "pil_length_mm": pil_length,
    }


def _pil_length(field, finite, pos, neg, sx, sy, radius_y: int, radius_x: int) -> np.ndarray:
    """Crossing-weighted PIL length in Mm of each image (definition in :func:`physical_properties`)."""
    n = field.shape[0]
    band = _dilations_overlap(pos, neg, radius_y, radius_x)
    positive = field > 0
    length = np.zeros(n)
    # Row pairs (axis 2, neighbours along x) and column pairs (axis 1, neighbours along y).
    for axis, pitch_along, pitch_across in ((2, sx, sy), (1, sy, sx)):
        if field.shape[axis] < 2:
            continue
        head = tuple(slice(None, -1) if k == axis else slice(None) for k in range(3))
        tail = tuple(slice(1, None) if k == axis else slice(None) for k in range(3))
        crossing = positive[head] != positive[tail]
        crossing &= finite[head] & finite[tail] & (band[head] | band[tail])
        first = list(np.nonzero(crossing))
        second = list(first)
        second[axis] = first[axis] + 1
        image = first[0]
        # Field gradient in G/Mm at the pair: the mean of both pixels' central differences.
        along = (_difference(field, first, axis) + _difference(field, second, axis)) / (2 * pitch_along[image])
        across = _difference(field, first, 3 - axis) + _difference(field, second, 3 - axis)
        across /= 2 * pitch_across[image]
        norm = np.hypot(along, across)
        # A vanishing mean gradient (checkerboard-like pixels) counts as a crossing straight across the pair.
        normal_along = np.divide(np.abs(along), norm, out=np.ones_like(norm), where=norm > 0)
        length += np.bincount(image, weights=pitch_across[image] * normal_along, minlength=n)
    return length


def _difference(field: np.ndarray, index: list[np.ndarray], axis: int) -> np.ndarray:
    """Central difference (per pixel) of ``field`` along ``axis`` at ``index``; one-sided at the edges."""
    k = index[axis]
    lower, upper = list(index), list(index)
    lower[axis] = np.maximum(k - 1, 0)
    upper[axis] = np.minimum(k + 1, field.shape[axis] - 1)
    return (field[tuple(upper)] - field[tuple(lower)]) / np.maximum(upper[axis] - lower[axis], 1)
