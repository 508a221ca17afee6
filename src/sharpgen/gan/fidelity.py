"""How closely generated patches follow the real ones: distribution distances and power-spectrum slopes."""

from __future__ import annotations

import numpy as np
from scipy import stats


def distribution_distance(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Two-sample comparison of the finite values of one quantity (NaN = undefined, counted separately).

    ``ks``: Kolmogorov-Smirnov statistic (0 = same distribution, 1 = disjoint); ``w1``: Wasserstein-1 distance
    in the quantity's units; ``w1_over_std``: ``w1`` divided by the real values' standard deviation, so
    quantities with different units compare; ``*_nan_fraction``: fraction of undefined values.
    """
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    real_ok, generated_ok = real[np.isfinite(real)], generated[np.isfinite(generated)]
    result = {
        "real_mean": float(np.mean(real_ok)) if real_ok.size else float("nan"),
        "generated_mean": float(np.mean(generated_ok)) if generated_ok.size else float("nan"),
        "real_nan_fraction": float(1.0 - real_ok.size / max(real.size, 1)),
        "generated_nan_fraction": float(1.0 - generated_ok.size / max(generated.size, 1)),
        "ks": float("nan"),
        "w1": float("nan"),
        "w1_over_std": float("nan"),
    }
    if real_ok.size and generated_ok.size:
        w1 = stats.wasserstein_distance(real_ok, generated_ok)
        spread = np.std(real_ok)
        result.update(
            ks=float(stats.ks_2samp(real_ok, generated_ok).statistic),
            w1=float(w1),
            w1_over_std=float(w1 / spread) if spread > 0 else float("nan"),
        )
    return result


def radial_power_spectra(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectra of ``(N, S, S)`` patches.

    Returns ``(k, power)``: integer wavenumbers ``1 .. S/2 - 1`` in cycles per patch and ``(N, len(k))``
    mean ``|FFT|^2`` over each annulus ``k - 0.5 <= |k| < k + 0.5``.
    """
    patches = np.asarray(patches, dtype=np.float64)
    n, size = patches.shape[0], patches.shape[-1]
    power = np.abs(np.fft.fft2(patches)) ** 2
    frequencies = np.fft.fftfreq(size) * size
    radius = np.rint(np.hypot(*np.meshgrid(frequencies, frequencies, indexing="ij"))).astype(int).ravel()
    k = np.arange(1, size // 2)
    sums = np.zeros((n, size))
    for i in range(n):
        sums[i] = np.bincount(radius, weights=power[i].ravel(), minlength=size)[:size]
    counts = np.bincount(radius, minlength=size)[:size]
    return k, sums[:, k] / counts[k]


def power_spectrum_slopes(patches: np.ndarray, k_range: tuple[float, float] = (4.0, 0.25)) -> np.ndarray:
    """Log-log slope of each patch's radial power spectrum between wavenumbers ``k_min`` and ``k_max_fraction*S``.

    ``k_range = (k_min, k_max_fraction)``: the fit uses ``k_min <= k <= k_max_fraction * S`` (cycles per patch),
    above the scale of whole active regions and below the pixel scale. A patch with zero power there gives NaN.
    """
    size = np.asarray(patches).shape[-1]
    k, power = radial_power_spectra(patches)
    band = (k >= k_range[0]) & (k <= k_range[1] * size)
    if band.sum() < 2:
        raise ValueError(f"patches of {size} px have fewer than two wavenumbers in the fit band {k_range}")
    log_k = np.log10(k[band])
    with np.errstate(divide="ignore"):
        log_power = np.log10(power[:, band])
    slopes = np.full(len(power), np.nan)
    ok = np.isfinite(log_power).all(axis=1)
    if ok.any():
        slopes[ok] = np.polyfit(log_k, log_power[ok].T, 1)[0]
    return slopes
