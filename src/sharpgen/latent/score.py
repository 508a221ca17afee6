"""The label score of the steering: ask for targets, measure what came out, exactly, from the pixels.

Continuous-conditional generators report a "label score" (|target - measured| over a grid of targets) and
InterFaceGAN re-scores edited images with attribute predictors. Here every property is measured on the generated
patch itself, so the score is exact: per request, the achieved value of every named target, whether each met it
within the tolerance (relative to ``max(|target|, floor)``, :meth:`Steering.floor`, as :func:`steer` judges),
and the drift of every other steerable property from its starting value, whether it was held or left free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from ..atomic import write_parquet_atomic, write_text_atomic
from ..jsonsafe import json_safe
from ..progress import progress_bar
from ..run import RunLayout
from .generate import Steering, random_latents, starting_latents, steer

TOLERANCE = 0.05
"""A target is met, and a held property held, within this relative tolerance (``generate``'s default)."""

GRID_QUANTILES = (0.05, 0.275, 0.5, 0.725, 0.95)
"""Targets are placed at these quantiles of the run's samples (the 5th to 95th percentile)."""
JOINT_PAIRS = (("tuf", "psep"), ("tuf", "r_paper"), ("psep", "r_paper"))
"""The pairs of joint targets, where the run has directions for both."""
SUPPORTED = 1e-4
"""A request is *supported* when at least this fraction of the run's samples meets it (:func:`support`): 10 of the
default 100k. A joint grid of per-property quantiles has corners the generator never makes (the weakest flux with
the highest R), and a kept property asks for its start's value beside the target (the 95th percentile of flux at a
random start's small area); those are scored, and reported apart."""
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


JOINT_NEIGHBOURS = 0.02
""":func:`support_grid` takes the second property's quantiles over this fraction of the samples, those whose first
property lies nearest its target (2000 of the default 100k)."""


def support_grid(
    steering: Steering, names: Sequence[str], quantiles: Sequence[float] = GRID_QUANTILES
) -> list[dict[str, float]]:
    """Joint targets on the samples' joint support: the first of two ``names`` at its ``quantiles``, and for each
    the second at the same ``quantiles`` of its values among the :data:`JOINT_NEIGHBOURS` of the samples whose first
    property lies nearest that target. So the weakest flux is paired with the separations that weak regions
    have, where :func:`target_grid` pairs it with the widest separation of all; 9 targets for three quantiles."""
    first, second = (steering.samples[name].to_numpy(dtype=np.float64) for name in names)
    defined = np.isfinite(first) & np.isfinite(second)
    first, second = first[defined], second[defined]
    count = max(1, int(round(JOINT_NEIGHBOURS * len(first))))
    grid = []
    for goal in np.quantile(first, quantiles):
        nearest = np.argsort(np.abs(first - goal), kind="stable")[:count]
        grid += [{names[0]: float(goal), names[1]: float(value)} for value in np.quantile(second[nearest], quantiles)]
    return grid


def support(steering: Steering, targets: Mapping[str, float], tolerance: float = TOLERANCE) -> float:
    """The fraction of the run's samples whose every named property lies within ``tolerance`` of its target
    (relative to ``max(|target|, floor)``, as a met target): how often the generator itself makes such a region.
    A NaN target (a kept property undefined at its start: no strong pixel of a polarity) is met by none."""
    inside = np.ones(len(steering.samples), dtype=bool)
    for name, goal in targets.items():
        values = steering.samples[name].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            inside &= np.abs(values - goal) <= tolerance * max(abs(goal), steering.floor(name))
    return float(inside.mean()) if len(inside) else 0.0


def request_support(
    steering: Steering,
    targets: Mapping[str, float],
    keep: Sequence[str],
    starts: pd.DataFrame,
    tolerance: float = TOLERANCE,
) -> np.ndarray:
    """Per row of ``starts`` (a table with a ``start_<name>`` column for each ``keep`` property), the
    :func:`support` of what that request asks for: the ``targets`` with every kept property at its start value."""
    return np.array([
        support(steering, {**targets, **{name: starts[f"start_{name}"].iat[row] for name in keep}}, tolerance)
        for row in range(len(starts))
    ])  # fmt: skip


def label_score(
    steering: Steering,
    grid: Sequence[Mapping[str, float]],
    starts: str = "random",
    per_target: int = 10,
    hold: str = "none",
    tolerance: float = TOLERANCE,
    seed: int = 0,
    method: str = "local",
) -> pd.DataFrame:
    """Steer ``per_target`` latents to every target of ``grid`` (from ``random`` latents, or the ``nearest``
    sampled ones as ``sharpgen generate`` does) by ``method`` (``local`` or ``svm``, as :func:`steer`), holding
    (:data:`HOLDS`) nothing, every other steerable property, or (``one``) each other steerable property in turn
    (``--keep NAME``: ``per_target`` requests per target and held property). Requests that name and hold the
    same properties are steered together, one target per start.

    One row per request: ``request`` (grid index), ``met`` (every named target within ``tolerance``), ``held``
    (every held property within ``tolerance`` of its start; True when none is held), ``support`` (of what the
    request asks for, :func:`support`: the targets and every held property at its start's value), and per
    steerable property p (as named in the grid, else its paper name)
    ``role_<p>`` (target, held or free), ``start_<p>``, ``achieved_<p>``, ``error_<p>`` (relative miss of a
    target, ``(achieved - target) / max(|target|, floor)``) and ``drift_<p>`` (relative change from the start,
    ``/ max(|start|, floor)``).
    """
    if starts not in ("random", "nearest"):
        raise ValueError(f"starts={starts!r}: expected 'random' or 'nearest'")
    if hold not in HOLDS:
        raise ValueError(f"hold={hold!r}: expected one of {', '.join(HOLDS)}")
    groups: dict[tuple, list] = {}
    number = 0
    for i, targets in enumerate(grid):
        steered = {steering.resolve(name)[0] for name in targets}
        others = [name for name in steering.directions if name not in steered]
        for keep in {"none": [[]], "others": [others], "one": [[name] for name in others]}[hold]:
            groups.setdefault((tuple(targets), tuple(keep)), []).append((number, i, targets, others))
            number += 1
    frames = {}
    for (names, keep), members in groups.items():
        latents = np.concatenate([
            random_latents(per_target, seed + number) if starts == "random"
            else starting_latents(steering, dict(targets), per_target, seed + number, keep)
            for number, _, targets, _ in members
        ])  # fmt: skip
        goals = {name: np.repeat([targets[name] for _, _, targets, _ in members], per_target) for name in names}
        before = steering.measure(latents)
        _, after, _, _ = steer(steering, latents, goals, list(keep), tolerance, method)
        for k, (number, i, targets, others) in enumerate(members):
            rows = slice(k * per_target, (k + 1) * per_target)
            frame = pd.DataFrame({"request": np.full(per_target, i)})
            met = np.ones(per_target, dtype=bool)
            held = np.ones(per_target, dtype=bool)
            for name in [*targets, *others]:
                start, end = before[name].to_numpy(np.float64)[rows], after[name].to_numpy(np.float64)[rows]
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
            frame.insert(3, "support", request_support(steering, targets, keep, frame, tolerance))
            frames[number] = frame
    return pd.concat([frames[number] for number in sorted(frames)], ignore_index=True)


def summarize(scores: pd.DataFrame) -> dict:
    """The numbers of a :func:`label_score` table: requests, fraction met, fraction held, both, the same three
    among the requests the generator supports (:data:`SUPPORTED`, ``*_supported``), and per free or held property
    the median |drift| and the fraction that stayed within 5 %."""
    supported = scores["support"] >= SUPPORTED
    outcomes = {"met": scores["met"], "held": scores["held"], "met_and_held": scores["met"] & scores["held"]}
    summary = {"requests": len(scores), **{key: float(value.mean()) for key, value in outcomes.items()}}
    summary["supported_requests"] = int(supported.sum())
    for key, value in outcomes.items():
        summary[f"{key}_supported"] = float(value[supported].mean()) if supported.any() else float("nan")
    for column in scores.columns:
        if not column.startswith("drift_"):
            continue
        name = column[len("drift_") :]
        roles = scores[f"role_{name}"]
        drift = scores.loc[roles != "target", column].abs()
        if drift.size:
            summary[f"median_abs_drift_{name}"] = float(drift.median())  # NaN where undefined at every start
            summary[f"within_5pct_{name}"] = float(np.mean(drift <= 0.05))
    return summary


@dataclass(frozen=True)
class LabelScoreSettings:
    """Settings of ``score_directions`` (schema section ``label_score``)."""

    SECTION: ClassVar[str] = "label_score"

    per_target: int
    methods: tuple[str, ...]
    properties: tuple[str, ...] | None


SCORE_KINDS = {
    "single": (GRID_QUANTILES, "none", target_grid),
    "joint": ((0.05, 0.5, 0.95), "none", target_grid),
    "joint_support": ((0.05, 0.5, 0.95), "none", support_grid),
    "keep": ((0.05, 0.5, 0.95), "one", target_grid),
}
"""What ``score_directions`` asks for, as ``(quantiles of each named property, what is held, the grid)``: single
targets, joint targets (:data:`JOINT_PAIRS`) on the grid of each property's own quantiles (corners included that
the generator never makes) and on the samples' joint support (:func:`support_grid`), and single targets with each
other property kept in turn."""


def score_requests(
    steering: Steering, properties: Sequence[str] | None = None
) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
    """``(kind, named properties)`` of every request set of :data:`SCORE_KINDS` for ``properties`` (default: every
    direction of the run), and the named properties the run has no direction for (``fit_directions`` skips one
    its samples cannot support): those are not scored."""
    wanted = list(steering.directions) if properties is None else list(properties)
    names = [name for name in wanted if name in steering.directions]
    pairs = [pair for pair in JOINT_PAIRS if all(name in names for name in pair)]
    requests = [
        *(("single", (name,)) for name in names),
        *(("joint", pair) for pair in pairs),
        *(("joint_support", pair) for pair in pairs),
        *(("keep", (name,)) for name in names if len(list(steering.directions)) > 1),
    ]
    return requests, [name for name in wanted if name not in steering.directions]


def score_directions(
    steering: Steering, settings: LabelScoreSettings, seed: int, progress: bool = True
) -> tuple[pd.DataFrame, dict]:
    """The label score of :data:`SCORE_KINDS` by each of ``settings.methods``, from random starts (the same
    starts for every method). Returns the :func:`label_score` rows (with ``kind``, ``method`` and ``named``
    columns) and the summary: under ``methods``, per method, kind and named properties, the :func:`summarize`
    numbers; under ``skipped``, the named properties without a direction (left out)."""
    requests, skipped = score_requests(steering, settings.properties)
    bar = progress_bar(
        total=len(requests) * len(settings.methods), desc="score_directions", unit="request set", disable=not progress
    )
    frames, summary = [], {}
    for method in settings.methods:
        for number, (kind, names) in enumerate(requests):
            quantiles, hold, grid_of = SCORE_KINDS[kind]
            grid = grid_of(steering, names, quantiles)
            scores = label_score(steering, grid, "random", settings.per_target, hold, seed=seed + 1000 * number,
                                 method=method)  # fmt: skip
            scores.insert(0, "named", " x ".join(names))
            scores.insert(0, "kind", kind)
            scores.insert(0, "method", method)
            frames.append(scores)
            summary.setdefault(method, {}).setdefault(kind, {})[" x ".join(names)] = summarize(scores)
            bar.update(1)
    bar.close()
    methods = {method: summary.get(method, {}) for method in settings.methods}
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), {"methods": methods, "skipped": skipped}


def write_label_score(run_dir: str | os.PathLike, settings: LabelScoreSettings, seed: int, device: str = "auto",
                      progress: bool = True) -> dict:  # fmt: skip
    """Run the stage on the run in ``run_dir``: ``directions/label_score.parquet`` (one row per request) and
    ``directions/label_score.json`` (the summary, the settings and the tolerance), written atomically; return the
    JSON document."""
    from .generate import load_steering

    layout = RunLayout(run_dir)
    steering = load_steering(run_dir, device=device)
    table, summary = score_directions(steering, settings, seed, progress)
    document = {
        "settings": dataclasses.asdict(settings),
        "starts": "random",
        "tolerance": TOLERANCE,
        "supported_fraction": SUPPORTED,
        "kinds": {
            kind: {"quantiles": list(q), "hold": hold, "grid": grid_of.__name__}
            for kind, (q, hold, grid_of) in SCORE_KINDS.items()
        },
        **summary,
    }
    write_parquet_atomic(table, layout.path("label_score"))
    write_text_atomic(layout.path("label_score_summary"), json.dumps(json_safe(document), indent=2) + "\n")
    return document
