"""The label score of the steering: ask for targets, measure what came out, exactly, from the pixels.

Continuous-conditional generators report a "label score" (|target - measured| over a grid of targets) and
InterFaceGAN re-scores edited images with attribute predictors. Here every property is measured on the generated
patch itself, so the score is exact: per request, the achieved value of every named target, whether each met it
within the tolerance (relative to ``max(|target|, floor)``, :meth:`Steering.floor`, as :func:`steer` judges),
and the drift of every other steerable property from its starting value, whether it was held or left free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .generate import Steering, random_latents, starting_latents, steer

GRID_QUANTILES = (0.05, 0.275, 0.5, 0.725, 0.95)
"""Targets are placed at these quantiles of the run's samples (the 5th to 95th percentile)."""
JOINT_PAIRS = (("tuf", "psep"), ("tuf", "r_paper"), ("psep", "r_paper"))
"""The pairs of joint targets, where the run has directions for both."""
HOLDS = ("none", "one", "others")
"""What :func:`label_score` holds: nothing, each other steerable property in turn, or all of them at once."""


def target_grid(
    steering: Steering, names: Sequence[str], quantiles: Sequence[float] = GRID_QUANTILES
) -> list[dict[str, float]]:
    """Every combination of the ``quantiles`` of each property in ``names`` (paper or physical units), e.g.
    25 targets for two names and five quantiles."""
    axes = [np.nanquantile(steering.samples[name].to_numpy(dtype=np.float64), quantiles) for name in names]
    mesh = np.meshgrid(*axes, indexing="ij")
    return [{name: float(m.flat[i]) for name, m in zip(names, mesh, strict=True)} for i in range(mesh[0].size)]


def label_score(
    steering: Steering,
    grid: Sequence[Mapping[str, float]],
    starts: str = "random",
    per_target: int = 10,
    hold: str = "none",
    tolerance: float = 0.05,
    seed: int = 0,
    method: str = "local",
) -> pd.DataFrame:
    """Steer ``per_target`` latents to every target of ``grid`` (from ``random`` latents, or the ``nearest``
    sampled ones as ``sharpgen generate`` does) by ``method`` (``local`` or ``svm``, as :func:`steer`), holding
    (:data:`HOLDS`) nothing, every other steerable property, or (``one``) each other steerable property in turn
    (``--keep NAME``: ``per_target`` requests per target and held property).

    One row per request: ``request`` (grid index), ``met`` (every named target within ``tolerance``), ``held``
    (every held property within ``tolerance`` of its start; True when none is held), and per steerable property
    p (as named in the grid, else its paper name) ``role_<p>`` (target, held or free), ``start_<p>``,
    ``achieved_<p>``, ``error_<p>`` (relative miss of a target, ``(achieved - target) / max(|target|, floor)``)
    and ``drift_<p>`` (relative change from the start, ``/ max(|start|, floor)``).
    """
    if starts not in ("random", "nearest"):
        raise ValueError(f"starts={starts!r}: expected 'random' or 'nearest'")
    if hold not in HOLDS:
        raise ValueError(f"hold={hold!r}: expected one of {', '.join(HOLDS)}")
    frames = []
    requests = []
    for i, targets in enumerate(grid):
        steered = {steering.resolve(name)[0] for name in targets}
        others = [name for name in steering.directions if name not in steered]
        keeps = {"none": [[]], "others": [others], "one": [[name] for name in others]}[hold]
        requests += [(i, targets, others, keep) for keep in keeps]
    for number, (i, targets, others, keep) in enumerate(requests):
        if starts == "random":
            latents = random_latents(per_target, seed + number)
        else:
            latents = starting_latents(steering, dict(targets), per_target, seed + number)
        before = steering.measure(latents)
        _, after, _, _ = steer(steering, latents, dict(targets), keep, tolerance, method)
        frame = pd.DataFrame({"request": np.full(per_target, i)})
        met = np.ones(per_target, dtype=bool)
        held = np.ones(per_target, dtype=bool)
        for name in [*targets, *others]:
            start, end = before[name].to_numpy(np.float64), after[name].to_numpy(np.float64)
            floor = steering.floor(name)
            role = "target" if name in targets else ("held" if name in keep else "free")
            frame[f"role_{name}"] = role
            frame[f"start_{name}"], frame[f"achieved_{name}"] = start, end
            with np.errstate(invalid="ignore", divide="ignore"):
                frame[f"drift_{name}"] = (end - start) / np.maximum(np.abs(start), floor)
                if role == "target":
                    goal = float(targets[name])
                    frame[f"error_{name}"] = (end - goal) / max(abs(goal), floor)
                    met &= np.abs(frame[f"error_{name}"].to_numpy()) <= tolerance
                elif role == "held":
                    held &= np.abs(frame[f"drift_{name}"].to_numpy()) <= tolerance
        frame.insert(1, "met", met)
        frame.insert(2, "held", held)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def summarize(scores: pd.DataFrame) -> dict:
    """The numbers of a :func:`label_score` table: requests, fraction met, fraction held, and per free or held
    property the median |drift| and the fraction that stayed within 5 %."""
    summary = {
        "requests": len(scores),
        "met": float(scores["met"].mean()),
        "held": float(scores["held"].mean()),
        "met_and_held": float((scores["met"] & scores["held"]).mean()),
    }
    for column in scores.columns:
        if not column.startswith("drift_"):
            continue
        name = column[len("drift_") :]
        roles = scores[f"role_{name}"]
        drift = scores.loc[roles != "target", column].abs()
        if drift.size:
            summary[f"median_abs_drift_{name}"] = float(np.nanmedian(drift))
            summary[f"within_5pct_{name}"] = float(np.mean(drift <= 0.05))
    return summary
