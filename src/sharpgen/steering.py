"""Moving latents along property directions: traversals, calibration, entanglement, and solving for targets.

A traversal is ``z + t n`` for starting latents z and steps t (latent units) along a unit direction n; every
point is generated and measured. From traversals of many random starts:

- the *calibration* of a direction is, per step t, the median and quartiles of each property's change
  ``q(z + t n) - q(z)``: how far to step for a wanted change, and how uncertain that is;
- the *entanglement* of a direction is the median slope ``dq_j / dt`` of every property j, in units of that
  property's spread over the samples, divided by the slope of its own property: 0 = property j does not
  move, 1 = it moves as much (in standard deviations) as the property the direction is for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import stats

Measure = Callable[[np.ndarray], pd.DataFrame]
"""Generate and measure ``(N, 100)`` latents: a table of properties, row i for latent i."""
Constrain = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(moved latents, their origins) -> allowed latents`` (e.g. :meth:`DirectionSet.keep_sides`)."""


def traverse(
    measure: Measure, starts: np.ndarray, normals: np.ndarray, steps: np.ndarray, constrain: Constrain | None = None
) -> pd.DataFrame:
    """Measure ``starts[r] + steps[k] * normals[r]`` for every start r and step k (``normals``: one ``(100,)``
    unit direction for all starts, or ``(R, 100)``, one per start), passed through ``constrain`` if given.

    Returns one row per (start, step), with columns ``start``, ``step`` (asked), ``reached`` (the step the
    latent actually moved along its direction after ``constrain``, latent units) and every measured property.
    """
    starts, steps = np.asarray(starts, dtype=np.float32), np.asarray(steps, dtype=np.float32)
    normals = np.broadcast_to(np.asarray(normals, dtype=np.float32), starts.shape)
    origins = np.repeat(starts, len(steps), axis=0)
    latents = (starts[:, None, :] + steps[None, :, None] * normals[:, None, :]).reshape(-1, starts.shape[1])
    if constrain is not None:
        latents = constrain(latents, origins).astype(np.float32)
    reached = np.einsum("nd,nd->n", latents.astype(np.float64) - origins, np.repeat(normals, len(steps), axis=0))
    table = measure(latents)
    table.insert(0, "reached", reached)
    table.insert(0, "step", np.tile(steps.astype(np.float64), len(starts)))
    table.insert(0, "start", np.repeat(np.arange(len(starts)), len(steps)))
    return table


def calibration_curves(traversal: pd.DataFrame, properties: Sequence[str]) -> pd.DataFrame:
    """Per step: median, 25 % and 75 % quantiles over the starts of each property's change from step 0.

    Columns ``step``, ``<q>_median``, ``<q>_q25``, ``<q>_q75`` for each property q (NaN-aware).
    """
    base = traversal[traversal["step"] == 0].set_index("start")
    rows = []
    for step, group in traversal.groupby("step", sort=True):
        group = group.set_index("start")
        row = {"step": float(step)}
        for name in properties:
            change = (group[name] - base[name].reindex(group.index)).to_numpy()
            change = change[np.isfinite(change)]
            quantiles = np.quantile(change, [0.5, 0.25, 0.75]) if change.size else [np.nan] * 3
            row.update({f"{name}_median": quantiles[0], f"{name}_q25": quantiles[1], f"{name}_q75": quantiles[2]})
        rows.append(row)
    return pd.DataFrame(rows)


def distinct_frames(traversal: pd.DataFrame) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """Per start: ``(at, frames)``, the step each distinct frame reached (column ``reached``, else ``step``;
    latent units) and its rows. A move stopped early (at the polarity boundary) repeats one latent for all
    the steps past the stop; that frame counts once."""
    moved = "reached" if "reached" in traversal.columns else "step"
    for _, group in traversal.groupby("start"):
        frames = group.assign(at=group[moved].round(6)).drop_duplicates("at")
        yield frames["at"].to_numpy(), frames


def median_slopes(traversal: pd.DataFrame, properties: Sequence[str]) -> dict[str, float]:
    """Median over starts of the least-squares slope ``dq / dt`` of each property against the step reached,
    over each traversal's distinct frames (:func:`distinct_frames`; finite points only)."""
    per_start = {name: [] for name in properties}
    for at, frames in distinct_frames(traversal):
        for name in properties:
            value = frames[name].to_numpy()
            ok = np.isfinite(value)
            if ok.sum() >= 3:
                per_start[name].append(np.polyfit(at[ok], value[ok], 1)[0])
    return {name: float(np.median(values)) if values else float("nan") for name, values in per_start.items()}


def median_spearman(traversal: pd.DataFrame, name: str) -> float:
    """Median over starts of Spearman's correlation between the step reached and property ``name``, over each
    traversal's distinct frames (:func:`distinct_frames`)."""
    values = []
    for at, frames in distinct_frames(traversal):
        value = frames[name].to_numpy()
        ok = np.isfinite(value)
        if ok.sum() >= 3 and np.ptp(value[ok]) > 0:
            values.append(stats.spearmanr(at[ok], value[ok]).statistic)
    return float(np.median(values)) if values else float("nan")


def entanglement_row(slopes: dict[str, float], own: str, spread: dict[str, float]) -> dict[str, float]:
    """Slope of every property in units of its ``spread`` (std over samples), relative to the ``own`` property's."""
    scaled = {name: slopes[name] / spread[name] for name in slopes}
    return {name: value / scaled[own] for name, value in scaled.items()}


def traversal_steps(max_step: float, n_steps: int) -> np.ndarray:
    """``n_steps`` evenly spaced steps from ``-max_step`` to ``+max_step`` (latent units), always including 0."""
    steps = np.linspace(-max_step, max_step, n_steps)
    return np.unique(np.append(steps, 0.0))


def solve_targets(
    measure: Measure,
    starts: np.ndarray,
    normals: np.ndarray,
    jacobian: np.ndarray,
    names: Sequence[str],
    targets: np.ndarray,
    tolerance: float = 0.05,
    floors: np.ndarray | None = None,
    max_iterations: int = 10,
    max_step: float = 8.0,
    constrain: Constrain | None = None,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Step each start along ``normals`` until properties ``names`` reach ``targets`` (quasi-Newton).

    ``normals``: ``(D, 100)`` unit directions, or ``(N, D, 100)``, one set per start; ``jacobian``: ``(P, D)``
    median change of property p per unit step along direction d (from the calibration traversals), the first
    estimate; ``targets``: ``(N, P)`` wanted values, one row per start (a held property's target is its start's own
    value). Each iteration measures the current latents, moves every unconverged one by the least-squares step ``J^+
    (target - value)`` and refines that request's own ``J`` from what the step did (Broyden's update), so curved
    responses converge. When a property becomes undefined (NaN) the last step is halved back. A request
    converges when every property is within ``tolerance`` of its target, relative to ``max(|target|, floor)``.
    Total steps are clipped to ``+-max_step`` per direction, keeping latents where the generator was trained;
    ``constrain`` (if given) maps every moved latent to an allowed one before it is measured.

    Returns ``(latents (N, 100), measured table of the final latents, converged (N,) bool)``.
    """
    starts = np.asarray(starts, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = len(starts)
    normals = np.asarray(normals, dtype=np.float64)
    normals = np.broadcast_to(normals, (n, *normals.shape[-2:]))
    dims = normals.shape[1]

    def latents_at(steps: np.ndarray) -> np.ndarray:
        latents = starts + np.einsum("nd,ndk->nk", steps, normals)
        return latents if constrain is None else constrain(latents, starts)

    scale = np.maximum(np.abs(targets), 1e-12 if floors is None else np.asarray(floors, dtype=np.float64))
    jacobians = np.repeat(np.asarray(jacobian, dtype=np.float64)[None], n, axis=0)
    steps, last_step = np.zeros((n, dims)), np.zeros((n, dims))
    table = measure(starts)
    values = table[list(names)].to_numpy(dtype=np.float64)
    last_values, last_defined = values.copy(), np.ones(n, dtype=bool)
    for _ in range(max_iterations):
        defined = np.all(np.isfinite(values), axis=1)
        converged = defined & np.all(np.abs(values - targets) <= tolerance * scale, axis=1)
        if converged.all():
            break
        change = values - last_values
        moved = defined & last_defined & (np.sum(last_step**2, axis=1) > 0)
        if moved.any():
            ds = last_step[moved]
            residual = change[moved] - np.einsum("npd,nd->np", jacobians[moved], ds)
            jacobians[moved] += np.einsum("np,nd->npd", residual, ds) / np.sum(ds**2, axis=1)[:, None, None]
        update = np.einsum("ndp,np->nd", np.linalg.pinv(jacobians), targets - np.nan_to_num(values))
        update = np.where(defined[:, None], update, -last_step / 2)
        update[converged] = 0.0
        new_steps = np.clip(steps + update, -max_step, max_step)
        last_step, steps = new_steps - steps, new_steps
        last_values, last_defined = values, defined
        table = measure(latents_at(steps))
        values = table[list(names)].to_numpy(dtype=np.float64)
    defined = np.all(np.isfinite(values), axis=1)
    converged = defined & np.all(np.abs(values - targets) <= tolerance * scale, axis=1)
    return latents_at(steps), table, converged
