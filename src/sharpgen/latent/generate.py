"""``sharpgen generate`` and ``sharpgen edit``: latents that meet physical targets, written as FITS + PNG + table.

A request names target values for properties that have a direction (``directions/directions.json``), or for
their physical twins in a ``fixed_scale`` run (``usflux`` [Mx] for ``tuf``, ``psep_mm`` [Mm] for ``psep``),
and optionally properties to *keep* at their starting values. Each start latent is moved along its own local
gradients (:func:`sharpgen.latent.steering.solve_local`, the default) or along the SVM directions of the targeted
and kept properties (:func:`sharpgen.latent.steering.solve_targets`: quasi-Newton; a request that misses tries
again from a scan of ``SCAN_STEPS`` along each direction); the result is checked by generating and measuring
it, and a miss returns its closest approach, flagged. ``edit --step`` aims at the change a step along a
direction makes on average (:func:`steer_steps`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_csv_atomic, write_text_atomic
from ..data.fitsio import (
    BUNIT_GAUSS,
    PHYSICAL_SCALE_KEY,
    PIXEL_MM_KEY,
    cea_cards,
    earth_observer,
    write_sharp_fits,
)
from ..data.normalize import Normalization
from ..errors import SharpgenError
from ..gan.models import LATENT_DIM, for_inference, load_generator
from ..gan.sample import generate, latent_properties
from ..plotting import save_patch_grid
from ..properties import quantity, twin_factor, twin_of
from ..run import STEERING, RunLayout
from ..training import pick_device
from ..units import CEA_PIXEL_DEG, GAUSS_PER_NORMALIZED_UNIT, cea_pixel_deg
from .directions import DirectionSet, directions_from_json
from .local import DIFFERENTIABLE, local_jacobian
from .requests import STEERING_METHODS, SteerRequest
from .steering import solve_local, solve_targets

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
    monotonicity: dict[str, float] = field(default_factory=dict)  # median Spearman of each direction's own property

    def measure(self, latents: np.ndarray) -> pd.DataFrame:
        """Generate and measure ``(N, 100)`` latents."""
        return latent_properties(self.generator, latents, self.device, self.threshold_gauss, self.pixel_mm)

    def jacobian(self, latents: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``(N, P, 100)``: the local gradient of each of ``names`` (:data:`~sharpgen.latent.local.DIFFERENTIABLE`
        ones, paper units per latent unit) at each latent, the SVM direction standing in where a property is
        undefined (:func:`~sharpgen.latent.local.local_jacobian`)."""
        threshold = self.threshold_gauss / GAUSS_PER_NORMALIZED_UNIT
        slopes = lambda name: self.slopes[name][name]  # noqa: E731
        return local_jacobian(self.generator, self.device, threshold, self.directions, slopes)(latents, names)

    def spread(self, name: str) -> float:
        """The samples' standard deviation of ``name`` (0 where undefined)."""
        values = self.samples[name].to_numpy(dtype=np.float64) if name in self.samples else np.array([])
        return float(np.nanstd(values)) if np.isfinite(values).any() else 0.0

    def floor(self, name: str) -> float:
        """A tenth of :meth:`spread`: a miss or a drift is measured relative to ``max(|value|, floor)``, so values
        near zero are not judged by their own size."""
        return 0.1 * self.spread(name)

    def resolve(self, name: str, value: float = 0.0) -> tuple[str, float]:
        """The property whose direction steers ``name`` and ``value`` in its units: ``name`` itself when it has a
        direction, else its physical twin's (``usflux`` [Mx] <-> ``tuf`` [kG], ``psep_mm`` [Mm] <-> ``psep``
        [patch diagonals]; exact conversions on ``fixed_scale`` patches)."""
        if name in self.directions:
            return name, value
        twin = twin_of(name)
        if twin is None or twin not in self.directions:
            raise SharpgenError(
                f"no direction for {name!r} (directions exist for: {', '.join(self.directions)}; "
                "add it to directions.properties)"
            )
        if self.pixel_mm is None:
            raise SharpgenError(f"{name!r} needs a fixed_scale run (this one used resize: paper units only)")
        paper = quantity(name)
        factor = twin_factor(paper, self.image_size, self.pixel_mm)
        return twin, value / factor if name != paper else value * factor


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
        generator=for_inference(generator),  # steering only generates: the fast copy
        device=dev,
        image_size=int(settings["image_size"]),
        threshold_gauss=normalization.threshold_gauss,
        pixel_mm=normalization.pixel_mm,
        directions=directions_from_json(document),
        slopes={name: entry["traversal"]["plain"]["slopes_per_step"] for name, entry in document["directions"].items()},
        samples=pd.read_parquet(layout.path("sample_table")),
        sample_latents=np.load(layout.path("sample_latents"), mmap_mode="r"),
        monotonicity={
            name: float(entry["traversal"]["plain"].get("median_spearman", math.nan))
            for name, entry in document["directions"].items()
        },
    )


WEAK_DIRECTION_SPEARMAN = 0.5
"""A direction whose own property follows the step with a median Spearman correlation below this, along
``fit_directions``' plain traversals (1 = always up), moves it too little or too erratically for ``edit --step``."""


def weak_directions(steering: Steering, names: Sequence[str]) -> dict[str, float]:
    """Of the stepped ``names``, the directions (by the name that steers each) along which their own property
    rises with a median Spearman correlation below :data:`WEAK_DIRECTION_SPEARMAN`: ``{name: correlation}``."""
    weak = {}
    for name in names:
        steered = steering.resolve(name)[0]
        correlation = steering.monotonicity.get(steered, math.nan)
        if correlation < WEAK_DIRECTION_SPEARMAN:
            weak[steered] = correlation
    return weak


def _check_reachable(
    steering: Steering, name: str, value: float | np.ndarray, shown: tuple[str, float | np.ndarray]
) -> None:
    """Refuse a target ``value`` of ``name`` (directions' units; ``shown`` as the user gave it) outside the
    :data:`REACHABLE_QUANTILES` of the samples; per start where ``value`` is one per start."""
    values = steering.samples[name].to_numpy(dtype=np.float64)
    low, high = np.nanquantile(values, REACHABLE_QUANTILES)
    value, given = np.atleast_1d(value), np.atleast_1d(shown[1])
    outside = np.flatnonzero((value < low) | (value > high))
    if outside.size:
        i = outside[0]
        scale = given[i] / value[i] if value[i] else 1.0
        raise SharpgenError(
            f"target {shown[0]}={given[i]:.4g} is out of reach: this model produces {shown[0]} from "
            f"{low * scale:.4g} to {high * scale:.4g} (0.5th to 99.5th percentile of {len(values)} samples)"
        )


def steer(
    steering: Steering,
    starts: np.ndarray,
    targets: Mapping[str, float | np.ndarray] | None = None,
    keep: Sequence[str] = (),
    tolerance: float = 0.05,
    method: str = "local",
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, dict[str, float | np.ndarray]]:
    """Move ``starts`` so that ``targets`` (one value for all starts, or one per start) are met and ``keep``
    properties hold their starting values, by ``method`` (:data:`STEERING_METHODS`; ``local`` falls back to
    ``svm`` when a named property has no soft stand-in).

    Returns ``(latents, measured table, converged, targets in the directions' units)``.
    """
    wanted = {}
    for name, value in (targets or {}).items():
        steered, steered_value = steering.resolve(name, value)
        _check_reachable(steering, steered, steered_value, (name, value))
        wanted[steered] = steered_value
    keep = [steering.resolve(name)[0] for name in keep]
    names = list(dict.fromkeys([*wanted, *(k for k in keep if k not in wanted)]))
    if not names:
        raise SharpgenError("nothing to do: give at least one target (NAME=VALUE) or a property to keep")
    start_values = steering.measure(starts)
    goal = np.stack(
        [np.broadcast_to(wanted[n], len(starts)) if n in wanted else start_values[n].to_numpy() for n in names],
        axis=1,
    ).astype(np.float64)
    held = [name not in wanted for name in names]
    latents, table, converged = _solve(steering, starts, names, goal, tolerance, method, held)
    return latents, table, converged, wanted


def _solve(
    steering: Steering, starts: np.ndarray, names: Sequence[str], goal: np.ndarray, tolerance: float, method: str,
    held: Sequence[bool],
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:  # fmt: skip
    """Move ``starts`` until ``names`` reach ``goal`` ``(N, P)`` by ``method`` (``local`` when every name has a
    soft stand-in, holding the ``held`` ones as a constraint; else the SVM solver); ``(latents, measured table,
    converged)``."""
    if method not in STEERING_METHODS:
        raise SharpgenError(f"steering method {method!r}: expected one of {', '.join(STEERING_METHODS)}")
    floors = np.array([steering.floor(n) for n in names])
    if method == "local" and all(name in DIFFERENTIABLE for name in names):
        return solve_local(
            steering.measure, steering.jacobian, starts, names, goal, tolerance=tolerance, floors=floors,
            constrain=steering.directions.keep_sides, held=held,
        )  # fmt: skip
    jacobian = np.array([[steering.slopes[d][p] for d in names] for p in names])
    normals = np.stack([steering.directions.normals(n, starts) for n in names], axis=1)  # (N, D, 100)
    return solve_targets(
        steering.measure, starts, normals, jacobian, names, goal, tolerance=tolerance, floors=floors,
        constrain=steering.directions.keep_sides, scan=SCAN_STEPS,
    )  # fmt: skip


def steer_steps(
    steering: Steering,
    starts: np.ndarray,
    steps: Mapping[str, float],
    keep: Sequence[str] = (),
    tolerance: float = 0.05,
    method: str = "local",
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """``edit --step``: change each stepped property by ``steps[name]`` latent units' worth and hold ``keep``.

    ``svm`` moves ``steps[name]`` latent units along the SVM directions (:func:`step_along`, the paper's edit);
    nothing is aimed at, so only the kept properties decide ``converged``. ``local`` aims each stepped property
    at its start value plus ``steps[name]`` times its calibrated change per latent unit along its direction (the
    median over starts of ``fit_directions``' plain-traversal slopes: what the SVM step typically moves it by)
    and holds the kept ones at their start values, by :func:`_solve`; ``converged`` when every aim is within
    ``tolerance``.

    Returns ``(latents, measured table, converged, per-latent aims (N,) by stepped property, in the directions'
    units; empty for svm)``.
    """
    if method == "svm":
        latents = step_along(steering, starts, steps, keep)
        return latents, steering.measure(latents), np.ones(len(latents), dtype=bool), {}
    moved = {steering.resolve(name)[0]: step for name, step in steps.items()}
    keep = [steering.resolve(name)[0] for name in keep]
    start_values = steering.measure(starts)
    aims = {
        name: start_values[name].to_numpy(dtype=np.float64) + step * steering.slopes[name][name]
        for name, step in moved.items()
    }
    names = [*moved, *keep]
    goal = np.stack([aims[n] if n in aims else start_values[n].to_numpy(dtype=np.float64) for n in names], axis=1)
    held = [name not in aims for name in names]
    latents, table, converged = _solve(steering, starts, names, goal, tolerance, method, held)
    return latents, table, converged, aims


GENERATED_TIME_TAI = datetime(2010, 6, 6)
"""A generated patch has no place on the Sun: its header puts its centre at the centre of the solar disk as
seen from Earth at this time (TAI; B0 = -0.09 deg, so near the equator, where CEA pixels are undistorted)."""


def generated_wcs_cards(shape: tuple[int, int], pixel_mm: float | None) -> dict:
    """Header cards of a generated ``shape`` patch: field in G, a Carrington CEA WCS at disk centre on
    :data:`GENERATED_TIME_TAI` (:func:`sharpgen.data.fitsio.cea_cards`) and the pixel side in Mm
    (``PIXSIZMM``). A ``resize`` run (``pixel_mm`` None) has no physical pixel size: CDELT is then the native
    SHARP pixel, flagged nominal by ``PHYSCALE = F``."""
    observer = earth_observer(GENERATED_TIME_TAI.isoformat())
    center = (observer["CRLN_OBS"], observer["CRLT_OBS"])
    cdelt_deg = CEA_PIXEL_DEG if pixel_mm is None else cea_pixel_deg(pixel_mm)
    scale = {PHYSICAL_SCALE_KEY: False} if pixel_mm is None else {PIXEL_MM_KEY: float(pixel_mm)}
    return {
        "BUNIT": BUNIT_GAUSS,
        "ORIGIN": "sharpgen",
        "CONTENT": "generated active region (Br)",
        **cea_cards(shape, cdelt_deg, center, GENERATED_TIME_TAI),
        **scale,
    }


def write_results(
    out_dir: str | os.PathLike,
    steering: Steering,
    latents: np.ndarray,
    table: pd.DataFrame,
    converged: np.ndarray,
    requested: Mapping[str, float | np.ndarray],
    kept: Sequence[str],
    prefix: str = "generated",
    kept_start: Mapping[str, np.ndarray] | None = None,
    steps: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Write ``<prefix>_NNN.fits`` (field in G, the WCS of :func:`generated_wcs_cards`; targets, achieved values,
    kept properties' starting values and the latent in the header),
    ``<prefix>.png``, ``<prefix>.csv`` (requested vs achieved per patch; per kept property its value at the start
    as ``start_<name>`` and its relative change as ``drift_<name>``), ``<prefix>.json`` (the request: scalar
    targets, ``steps``, kept names) and ``latents.npy``; return the table. A requested value is one for all
    patches or one per patch (the aims of a step edit).
    ``<prefix>_NNN.fits`` files of an earlier, larger request in ``out_dir`` are removed: the folder then holds
    exactly this request's outputs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    patches = generate(steering.generator, np.asarray(latents, dtype=np.float32), steering.device)
    summary = pd.DataFrame({"file": [f"{prefix}_{i:03d}.fits" for i in range(len(latents))]})
    summary["converged"] = converged
    requested = {name: np.broadcast_to(np.asarray(value, dtype=np.float64), len(latents)) for name, value in
                 requested.items()}  # fmt: skip
    for name, value in requested.items():
        summary[f"target_{name}"] = value
        summary[f"achieved_{name}"] = table[name].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            summary[f"error_{name}"] = np.where(value != 0, (table[name].to_numpy() - value) / value, np.nan)
    for name, start in (kept_start or {}).items():
        summary[f"start_{name}"] = start
        with np.errstate(divide="ignore", invalid="ignore"):
            summary[f"drift_{name}"] = np.where(start != 0, (table[name].to_numpy() - start) / start, np.nan)
    for name in table.columns:
        if f"achieved_{name}" not in summary:
            summary[name] = table[name].to_numpy()
    for i, patch in enumerate(patches):
        cards = {
            **generated_wcs_cards(patch.shape, steering.pixel_mm),
            "CONVERGE": bool(converged[i]),
            "KEPT": ",".join(kept),
        }
        for name, value in requested.items():
            cards[f"HIERARCH TARGET {name.upper()}"] = float(value[i])
        for name, start in (kept_start or {}).items():
            value = float(start[i])
            cards[f"HIERARCH START {name.upper()}"] = value if math.isfinite(value) else "NaN"
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
        json.dumps(
            {
                "targets": {name: float(value[0]) for name, value in requested.items() if not steps},
                "steps": dict(steps or {}),
                "kept": list(kept),
                "count": len(latents),
            },
            indent=2,
        )
        + "\n",
    )
    written = set(summary["file"])
    for stale in out_dir.glob(f"{prefix}_[0-9][0-9][0-9]*.fits"):
        if stale.name not in written and stale.name[len(prefix) + 1 : -len(".fits")].isdigit():
            stale.unlink()
    return summary


@dataclass(frozen=True)
class Steered:
    """What :func:`steer_and_write` made: ``(N, 100)`` latents, their measured table, which met every target,
    the targets as requested (paper or physical units; a step edit's per-patch aims, :func:`steer_steps`) and the
    written summary (``<prefix>.csv``: file, target vs achieved per patch)."""

    latents: np.ndarray
    table: pd.DataFrame
    converged: np.ndarray
    targets: dict[str, float | np.ndarray]
    summary: pd.DataFrame


def steer_and_write(
    steering: Steering, starts: np.ndarray, request: SteerRequest, out_dir: str | os.PathLike, prefix: str
) -> Steered:
    """The flow ``generate``, ``edit`` and ``query --target`` share: move ``starts`` by the request's steps
    (:func:`steer_steps`) or to its targets (:func:`steer`), holding its kept properties, then
    :func:`write_results` into ``out_dir``. A patch is ``converged`` when every target (or a step's aim) is met
    and every kept property is within the tolerance of its starting value (:func:`kept_within`)."""
    kept_start = None
    if request.keep:
        measured = steering.measure(starts)
        kept_start = {name: measured[name].to_numpy(dtype=np.float64) for name in request.keep}
    if request.steps:
        latents, table, converged, targets = steer_steps(
            steering, starts, request.steps, request.keep, request.tolerance, request.method
        )
    else:
        latents, table, converged, _ = steer(
            steering, starts, request.targets, request.keep, request.tolerance, request.method
        )
        targets = {name: value for name, value in request.targets.items() if name in table.columns}
    if kept_start:
        converged = converged & kept_within(steering, kept_start, table, request.tolerance)
    summary = write_results(
        out_dir, steering, latents, table, converged, targets, request.keep, prefix=prefix, kept_start=kept_start,
        steps=request.steps,
    )  # fmt: skip
    return Steered(latents, table, converged, targets, summary)


def kept_within(
    steering: Steering, kept_start: Mapping[str, np.ndarray], table: pd.DataFrame, tolerance: float
) -> np.ndarray:
    """Per patch, whether every kept property of ``table`` is within ``tolerance`` of its value in ``kept_start``,
    relative to ``max(|start|, floor)`` (:meth:`Steering.floor`) as :func:`steer` judges a target."""
    within = np.ones(len(table), dtype=bool)
    for name, start in kept_start.items():
        end = table[name].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            within &= np.abs(end - start) <= tolerance * np.maximum(np.abs(start), steering.floor(name))
    return within


def starting_latents(
    steering: Steering, targets: Mapping[str, float], n: int, seed: int, keep: Sequence[str] = ()
) -> np.ndarray:
    """``n`` starting latents for ``targets``: drawn (seeded) among the sampled latents whose properties are
    nearest the targets (distance in standard deviations of the samples), so the search starts close and
    the results stay diverse; random latents when the run kept no samples or no target is given. Samples where
    a ``keep`` property is undefined (a patch without strong field of one polarity has no ``psep``) are passed
    over: there is nothing there to keep."""
    if steering.sample_latents is None or not targets:
        return random_latents(n, seed)
    distance = np.zeros(len(steering.samples))
    for name in keep:
        steered = steering.resolve(name)[0]
        if steered in steering.samples.columns:
            distance[~np.isfinite(steering.samples[steered].to_numpy(dtype=np.float64))] = np.inf
    for name, value in targets.items():
        steered, steered_value = steering.resolve(name, value)
        if steered not in steering.samples.columns:
            return random_latents(n, seed)
        values = steering.samples[steered].to_numpy(dtype=np.float64)
        distance += ((values - steered_value) / np.nanstd(values)) ** 2
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
    keep = [steering.resolve(name)[0] for name in keep]
    start = np.asarray(latents, dtype=np.float64)
    moved = start.copy()
    for name, step in steps.items():
        moved += step * steering.directions.normals(steering.resolve(name)[0], start, keep)
    moved = steering.directions.keep_sides(moved, start)
    return moved.astype(np.float32)


def load_latents(path: str | os.PathLike, rows: Sequence[int] | None = None) -> np.ndarray:
    """``(N, 100)`` latents from a ``latents.npy`` written by ``sample``, ``generate``, ``edit`` or ``invert``."""
    path = Path(path)
    if not path.is_file():
        raise SharpgenError(f"--latents {path}: no such file")
    try:
        latents = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SharpgenError(f"--latents {path}: not a readable .npy file ({exc.__class__.__name__})") from None
    if not isinstance(latents, np.ndarray) or latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
        shape = getattr(latents, "shape", "an archive")
        raise SharpgenError(f"--latents {path}: expected (N, {LATENT_DIM}) latents, got shape {shape}")
    if not np.issubdtype(latents.dtype, np.number) or not np.all(np.isfinite(latents)):
        raise SharpgenError(f"--latents {path}: latents must be finite numbers")
    if rows is not None:
        bad = [row for row in rows if not 0 <= row < len(latents)]
        if bad:
            raise SharpgenError(f"{path}: rows {bad} out of range (0 to {len(latents) - 1})")
        latents = latents[list(rows)]
    return latents.astype(np.float32)
