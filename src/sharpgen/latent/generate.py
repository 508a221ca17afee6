"""``sharpgen generate`` and ``sharpgen edit``: latents that meet physical targets, written as FITS + PNG + table.

A request names target values for properties that have a direction (``directions/directions.json``), or for
their physical twins in a ``fixed_scale`` run (``usflux`` [Mx] for ``tuf``, ``psep_mm`` [Mm] for ``psep``),
and optionally properties to *keep* at their starting values. Each start latent is stepped along the
directions of the targeted and kept properties by :func:`sharpgen.latent.steering.solve_targets` (quasi-Newton;
a request that misses tries again from a scan of ``SCAN_STEPS`` along each direction); the result is checked
by generating and measuring it, and a miss returns its closest approach, flagged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_csv_atomic, write_text_atomic
from ..data.fitsio import write_sharp_fits
from ..data.normalize import Normalization
from ..errors import SharpgenError
from ..gan.models import LATENT_DIM, load_generator
from ..gan.sample import generate, latent_properties
from ..gan.train import pick_device
from ..plotting import save_patch_grid
from ..run import STEERING, RunLayout
from ..units import GAUSS_PER_NORMALIZED_UNIT, pixel_area_cm2
from .directions import DirectionSet, directions_from_json
from .steering import solve_targets

REACHABLE_QUANTILES = (0.005, 0.995)
"""A target outside these quantiles of the sampled property values is refused as out of reach."""
SCAN_STEPS = (-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Steps (latent units) tried along each direction for a request that missed (see ``solve_targets``)."""


@dataclass(frozen=True)
class Steering:
    """Everything needed to steer a generator: directions, first-guess slopes, sample ranges, units."""

    generator: object
    device: object
    image_size: int
    threshold_gauss: float
    pixel_mm: float | None
    directions: DirectionSet
    slopes: dict[str, dict[str, float]]
    samples: pd.DataFrame
    sample_latents: np.ndarray | None = None  # (M, 100), row i = the latent of samples row i

    def measure(self, latents: np.ndarray) -> pd.DataFrame:
        """Generate and measure ``(N, 100)`` latents."""
        return latent_properties(self.generator, latents, self.device, self.threshold_gauss, self.pixel_mm)

    def to_paper_units(self, name: str, value: float) -> tuple[str, float]:
        """Map a physical target to the property that has a direction: ``usflux`` [Mx] -> ``tuf`` [kG],
        ``psep_mm`` [Mm] -> ``psep`` (fraction of the patch diagonal); other names pass through."""
        if name in self.directions or name not in PHYSICAL_TWINS:
            return name, value
        if self.pixel_mm is None:
            raise SharpgenError(f"target {name!r} needs a fixed_scale run (this one used resize: paper units only)")
        twin = PHYSICAL_TWINS[name]
        size = self.image_size
        if name == "usflux":
            area = pixel_area_cm2(self.pixel_mm, self.pixel_mm) * size * size
            return twin, value / (GAUSS_PER_NORMALIZED_UNIT * area)
        return twin, value / (math.sqrt(2.0) * size * self.pixel_mm)


PHYSICAL_TWINS = {"usflux": "tuf", "psep_mm": "psep"}
"""Physical properties that are exact unit conversions of paper ones on ``fixed_scale`` patches."""


def load_steering(run_dir: str | os.PathLike, device: str = "auto") -> Steering:
    """Load what a pipeline run left in ``run_dir`` (its ``results_dir``): the generator, the directions, the
    sampled properties (for reachable ranges) and the normalization (pixel size for Mx and Mm, threshold)."""
    layout = RunLayout(run_dir)
    layout.require_all(STEERING)
    document = json.loads(layout.path("directions").read_text())
    normalization = Normalization.read(layout.path("normalization"))
    dev = pick_device(device)
    generator, settings = load_generator(layout.path("generator"), dev)
    return Steering(
        generator=generator,
        device=dev,
        image_size=int(settings["image_size"]),
        threshold_gauss=normalization.threshold_gauss,
        pixel_mm=normalization.pixel_mm,
        directions=directions_from_json(document),
        slopes={name: entry["traversal"]["plain"]["slopes_per_step"] for name, entry in document["directions"].items()},
        samples=pd.read_parquet(layout.path("sample_table")),
        sample_latents=np.load(layout.path("sample_latents"), mmap_mode="r"),
    )


def parse_assignments(items: Sequence[str]) -> dict[str, float]:
    """``["tuf=0.03", "psep_mm=40"]`` -> ``{"tuf": 0.03, "psep_mm": 40.0}`` (one-line errors for typos)."""
    result = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not sep or not name or not math.isfinite(value):
            raise SharpgenError(f"target {item!r}: expected NAME=VALUE with a finite number, e.g. tuf=0.03")
        result[name.strip()] = value
    return result


def _check_reachable(steering: Steering, name: str, value: float, shown: tuple[str, float]) -> None:
    values = steering.samples[name].to_numpy(dtype=np.float64)
    low, high = np.nanquantile(values, REACHABLE_QUANTILES)
    if not low <= value <= high:
        scale = shown[1] / value if value else 1.0
        raise SharpgenError(
            f"target {shown[0]}={shown[1]:.4g} is out of reach: this model produces {shown[0]} from "
            f"{low * scale:.4g} to {high * scale:.4g} (0.5th to 99.5th percentile of {len(values)} samples)"
        )


def steer(
    steering: Steering,
    starts: np.ndarray,
    targets: Mapping[str, float] | None = None,
    keep: Sequence[str] = (),
    tolerance: float = 0.05,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, dict[str, float]]:
    """Move ``starts`` so that ``targets`` are met and ``keep`` properties hold their starting values.

    Returns ``(latents, measured table, converged, targets in the directions' units)``.
    """
    wanted = {}
    for name, value in (targets or {}).items():
        paper_name, paper_value = steering.to_paper_units(name, value)
        if paper_name not in steering.directions:
            raise SharpgenError(
                f"no direction for {name!r} (directions exist for: {', '.join(steering.directions)}; "
                "add it to directions.properties)"
            )
        _check_reachable(steering, paper_name, paper_value, (name, value))
        wanted[paper_name] = paper_value
    unknown = [name for name in keep if name not in steering.directions]
    if unknown:
        raise SharpgenError(f"cannot keep {', '.join(unknown)}: no direction (have: {', '.join(steering.directions)})")
    names = list(dict.fromkeys([*wanted, *(k for k in keep if k not in wanted)]))
    if not names:
        raise SharpgenError("nothing to do: give at least one target (NAME=VALUE) or a property to keep")
    start_values = steering.measure(starts)
    goal = np.stack(
        [np.full(len(starts), wanted[n]) if n in wanted else start_values[n].to_numpy() for n in names], axis=1
    )
    jacobian = np.array([[steering.slopes[d][p] for d in names] for p in names])
    floors = np.array([0.1 * np.nanstd(steering.samples[n].to_numpy(dtype=np.float64)) for n in names])
    normals = np.stack([steering.directions.normals(n, starts) for n in names], axis=1)  # (N, D, 100)
    latents, table, converged = solve_targets(
        steering.measure, starts, normals, jacobian, names, goal, tolerance=tolerance, floors=floors,
        constrain=steering.directions.keep_sides, scan=SCAN_STEPS,
    )  # fmt: skip
    return latents, table, converged, wanted


def write_results(
    out_dir: str | os.PathLike,
    steering: Steering,
    latents: np.ndarray,
    table: pd.DataFrame,
    converged: np.ndarray,
    requested: Mapping[str, float],
    kept: Sequence[str],
    prefix: str = "generated",
) -> pd.DataFrame:
    """Write ``<prefix>_NNN.fits`` (field in G; targets, achieved values and the latent in the header),
    ``<prefix>.png``, ``<prefix>.csv`` (requested vs achieved per patch) and ``latents.npy``; return the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    patches = generate(steering.generator, np.asarray(latents, dtype=np.float32), steering.device)
    summary = pd.DataFrame({"file": [f"{prefix}_{i:03d}.fits" for i in range(len(latents))]})
    summary["converged"] = converged
    for name, value in requested.items():
        summary[f"target_{name}"] = value
        summary[f"achieved_{name}"] = table[name].to_numpy()
        summary[f"error_{name}"] = (table[name].to_numpy() - value) / value if value else np.nan
    for name in table.columns:
        if f"achieved_{name}" not in summary:
            summary[name] = table[name].to_numpy()
    for i, patch in enumerate(patches):
        cards = {
            "BUNIT": "Mx/cm^2",
            "ORIGIN": "sharpgen",
            "CONTENT": "generated active region (Br)",
            "CDELT1": steering.pixel_mm or 0.0,
            "CDELT2": steering.pixel_mm or 0.0,
            "CUNIT1": "Mm" if steering.pixel_mm else "pixel",
            "CUNIT2": "Mm" if steering.pixel_mm else "pixel",
            "CONVERGE": bool(converged[i]),
            "KEPT": ",".join(kept),
        }
        for name, value in requested.items():
            cards[f"HIERARCH TARGET {name.upper()}"] = float(value)
        for name in table.columns:
            value = float(table[name].iloc[i])
            cards[f"HIERARCH ACHIEVED {name.upper()}"] = value if math.isfinite(value) else "NaN"
        for k, component in enumerate(latents[i]):
            cards[f"Z{k:03d}"] = float(component)
        write_sharp_fits(out_dir / summary["file"][i], patch * GAUSS_PER_NORMALIZED_UNIT, cards)
    titles = [
        ("" if ok else "MISS ") + " ".join(f"{n}={table[n].iloc[i]:.3g}" for n in requested)
        for i, ok in enumerate(converged)
    ]
    save_patch_grid(patches, out_dir / f"{prefix}.png", titles=titles if requested else None)
    write_csv_atomic(summary, out_dir / f"{prefix}.csv")
    with atomic_path(out_dir / "latents.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(latents, dtype=np.float32))
    write_text_atomic(
        out_dir / f"{prefix}.json",
        json.dumps({"targets": dict(requested), "kept": list(kept), "count": len(latents)}, indent=2) + "\n",
    )
    return summary


def starting_latents(steering: Steering, targets: Mapping[str, float], n: int, seed: int) -> np.ndarray:
    """``n`` starting latents for ``targets``: drawn (seeded) among the sampled latents whose properties are
    nearest the targets (distance in standard deviations of the samples), so the search starts close and
    the results stay diverse; random latents when the run kept no samples or no target is given."""
    if steering.sample_latents is None or not targets:
        return random_latents(n, seed)
    distance = np.zeros(len(steering.samples))
    for name, value in targets.items():
        paper_name, paper_value = steering.to_paper_units(name, value)
        if paper_name not in steering.samples.columns:
            return random_latents(n, seed)
        values = steering.samples[paper_name].to_numpy(dtype=np.float64)
        distance += ((values - paper_value) / np.nanstd(values)) ** 2
    distance = np.where(np.isfinite(distance), distance, np.inf)
    pool = np.argsort(distance, kind="stable")[: max(NEAREST_POOL_PER_REQUEST * n, NEAREST_POOL_MIN)]
    picks = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=n > len(pool)))
    return np.asarray(steering.sample_latents[picks], dtype=np.float32)


NEAREST_POOL_PER_REQUEST = 5
NEAREST_POOL_MIN = 50
"""Starts are drawn among the ``max(5 n, 50)`` sampled latents nearest the targets."""


def random_latents(n: int, seed: int) -> np.ndarray:
    """``(n, 100)`` float32 starting latents ``z ~ N(0, I)`` from ``seed``."""
    return np.random.default_rng(seed).standard_normal((n, LATENT_DIM)).astype(np.float32)


def step_along(
    steering: Steering, latents: np.ndarray, steps: Mapping[str, float], keep: Sequence[str] = ()
) -> np.ndarray:
    """Move ``latents`` by ``steps[name]`` (latent units) along each named direction (that of the side each
    latent starts on); with ``keep``, along its conditional version orthogonal to the kept properties'
    directions (their SVM scores do not change). A latent never crosses the split boundary (it keeps its
    leading polarity; see :meth:`DirectionSet.keep_sides`)."""
    unknown = [name for name in [*steps, *keep] if name not in steering.directions]
    if unknown:
        raise SharpgenError(f"no direction for {', '.join(unknown)} (have: {', '.join(steering.directions)})")
    start = np.asarray(latents, dtype=np.float64)
    moved = start.copy()
    for name, step in steps.items():
        moved += step * steering.directions.normals(name, start, keep)
    moved = steering.directions.keep_sides(moved, start)
    return moved.astype(np.float32)


def load_latents(path: str | os.PathLike, rows: Sequence[int] | None = None) -> np.ndarray:
    """``(N, 100)`` latents from a ``latents.npy`` written by ``sample``, ``generate``, ``edit`` or ``invert``."""
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"{path}: no such latents file")
    latents = np.load(path)
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
        raise SharpgenError(f"{path}: expected (N, {LATENT_DIM}) latents, got shape {latents.shape}")
    if rows is not None:
        bad = [row for row in rows if not 0 <= row < len(latents)]
        if bad:
            raise SharpgenError(f"{path}: rows {bad} out of range (0 to {len(latents) - 1})")
        latents = latents[list(rows)]
    return latents.astype(np.float32)
