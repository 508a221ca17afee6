"""How well the latent directions steer the generator, as JSON lines.

Per property: held-out SVM accuracy and the median Spearman correlation between step reached and property over
the fit_directions traversals (from ``directions/directions.json``); entanglement before and after conditioning
(``directions/entanglement.json``); the change of ``tuf`` when ``r_paper`` is edited plainly vs. holding
``tuf``, along the conditional direction alone (fresh traversals) and as ``sharpgen edit --keep tuf`` does
it; ``sharpgen generate``'s hit rate for a grid of targets inside the reachable range of each property,
from random starting latents and from ``sharpgen generate``'s nearest-sample starts; and the label score
(:mod:`sharpgen.latent.score`): single targets at the 5th-95th percentiles of every steerable property (and of
``usflux``/``psep_mm`` on fixed_scale runs) with the others free, with one other kept (each in turn) and
with all others held, and joint targets (tuf x psep, tuf x r_paper, psep x r_paper) with the others free,
from random and from nearest starts: the fraction met within 5 %, the fraction whose held properties stayed
within 5 %, and every other property's drift.
``--methods`` names the steering methods measured: ``local`` (each latent's gradients, ``generate``'s default)
and ``svm`` (the paper's SVM directions, the reference).

    .venv/bin/python benchmarks/eval_directions.py --results results/default
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from sharpgen.latent.generate import load_steering, random_latents, starting_latents, steer
from sharpgen.latent.requests import STEERING_METHODS
from sharpgen.latent.score import JOINT_PAIRS, label_score, summarize, target_grid
from sharpgen.latent.steering import median_slopes, traversal_steps, traverse
from sharpgen.run import RunLayout


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def conditional_edit(steering, primal: str, held: str, starts: np.ndarray, max_step: float) -> dict:
    """Slope of ``held`` per unit slope of ``primal`` along the plain and the ``held``-conditional direction."""
    steps = traversal_steps(max_step, 9)
    result = {"metric": "conditional_edit", "direction": primal, "held": held}
    for kind, keep in (("plain", []), ("conditional", [held])):
        normals = steering.directions.normals(primal, starts, keep)
        traversal = traverse(steering.measure, starts, normals, steps, steering.directions.keep_sides)
        slopes = median_slopes(traversal, [primal, held])
        result[f"{kind}_{held}_per_{primal}"] = slopes[held] / slopes[primal]
    result["ratio"] = abs(result[f"conditional_{held}_per_{primal}"] / result[f"plain_{held}_per_{primal}"])
    return result


def kept_edit(
    steering, primal: str, held: str, starts: np.ndarray, quantile: float = 0.75, method: str = "local"
) -> dict:
    """What ``sharpgen edit`` does to ``held`` when it moves ``primal`` of every start to one target (the
    ``quantile`` of the samples): plainly, and with ``--keep held``. Per start, ``|change of held| / |change
    of primal|`` (starts whose ``primal`` moved); the median of each, their ratio, and the fraction of starts
    that met the target within ``sharpgen edit``'s tolerance, steering by ``method``."""
    target = float(np.nanquantile(steering.samples[primal].to_numpy(dtype=np.float64), quantile))
    before = steering.measure(starts)
    result = {"metric": "kept_edit", "method": method, "direction": primal, "held": held, "target": target}
    for kind, keep in (("plain", ()), ("keep", (held,))):
        _, after, converged, _ = steer(steering, starts, {primal: target}, keep=keep, method=method)
        change = np.abs(after[held].to_numpy() - before[held].to_numpy())
        moved = np.abs(after[primal].to_numpy() - before[primal].to_numpy())
        result[f"{kind}_converged"] = float(converged.mean())
        with np.errstate(divide="ignore", invalid="ignore"):
            per_start = change / moved
        result[f"{kind}_{held}_per_{primal}"] = float(np.median(per_start[np.isfinite(per_start)]))
    result["ratio"] = result[f"keep_{held}_per_{primal}"] / result[f"plain_{held}_per_{primal}"]
    return result


def hit_rate(
    steering, name: str, grid: int, requests: int, tolerance: float, seed: int, starts: str, method: str
) -> dict:
    """Fraction of ``generate`` requests within ``tolerance`` of targets spread over the 5-95 % sample range.

    ``starts``: ``random`` latents (what the directions alone achieve) or ``nearest`` (``sharpgen generate``'s
    default: sampled latents near the target, then refined).
    """
    values = steering.samples[name].to_numpy(dtype=np.float64)
    targets = np.nanquantile(values, np.linspace(0.05, 0.95, grid))
    errors = []
    for i, target in enumerate(targets):
        if starts == "random":
            latents = random_latents(requests, seed + i)
        else:
            latents = starting_latents(steering, {name: float(target)}, requests, seed + i)
        _, table, _, _ = steer(steering, latents, {name: float(target)}, tolerance=tolerance / 2, method=method)
        errors.append(np.abs(table[name].to_numpy() - target) / abs(target))
    errors = np.concatenate(errors)
    return {
        "metric": "generate_hit_rate",
        "method": method,
        "property": name,
        "starts": starts,
        "requests": int(errors.size),
        "tolerance": tolerance,
        "hit_rate": float(np.mean(errors <= tolerance)),
        "median_relative_error": float(np.nanmedian(errors)),
        "targets": targets.tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="results_dir of a run through fit_directions")
    parser.add_argument("--grid", type=int, default=10, help="targets per property for the hit rate")
    parser.add_argument("--requests", type=int, default=10, help="generate requests per target")
    parser.add_argument("--tolerance", type=float, default=0.1, help="relative tolerance of a hit")
    parser.add_argument("--hit-properties", nargs="+", default=["tuf"], help="properties whose hit rate is measured")
    parser.add_argument("--starts", type=int, default=100, help="random latents of the conditional-edit measurements")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the starting latents")
    parser.add_argument("--score-requests", type=int, default=10, help="label score: requests per target")
    parser.add_argument("--no-score", action="store_true", help="skip the label score")
    parser.add_argument(
        "--methods", nargs="+", choices=STEERING_METHODS, default=["local"],
        help="steering methods whose label score, hit rate and kept edit are measured (default: local)",
    )  # fmt: skip
    args = parser.parse_args()

    run = RunLayout(args.results)
    document = json.loads(run.require("directions").read_text())
    for name, entry in document["directions"].items():
        emit({
            "metric": "direction",
            "property": name,
            "heldout_accuracy": entry["heldout_accuracy"],
            "median_spearman_plain": entry["traversal"]["plain"]["median_spearman"],
            "median_spearman_plain_upward": entry["traversal"]["plain"]["median_spearman_upward"],
            "median_spearman_conditional": entry["traversal"]["conditional"]["median_spearman"],
            "median_spearman_local": entry["traversal"].get("local", {}).get("median_spearman", float("nan")),
            "traversals": document["settings"]["traversal_starts"],
        })  # fmt: skip
    entanglement = json.loads(run.require("entanglement").read_text())
    for kind in [kind for kind in ("plain", "conditional", "local") if kind in entanglement]:
        off_diagonal = [
            abs(value) for row, values in entanglement[kind].items() for col, value in values.items() if row != col
        ]
        emit({"metric": "entanglement", "kind": kind, "median_abs_off_diagonal": float(np.nanmedian(off_diagonal))})
    steering = load_steering(run.results_dir)
    starts = random_latents(args.starts, args.seed)
    if document["split"] is not None:
        emit({"metric": "split", "property": document["split"]["property"],
              "heldout_accuracy": document["split"]["heldout_accuracy"]})  # fmt: skip
    if {"r_paper", "tuf"} <= set(steering.directions):
        emit(conditional_edit(steering, "r_paper", "tuf", starts, document["settings"]["max_step"]))
    for method in args.methods:
        if {"r_paper", "tuf"} <= set(steering.directions):
            emit(kept_edit(steering, "r_paper", "tuf", starts, method=method))
        for name in args.hit_properties:
            for kind in ("random", "nearest"):
                emit(hit_rate(steering, name, args.grid, args.requests, args.tolerance, args.seed, kind, method))
        if not args.no_score:
            for record in label_scores(steering, args.score_requests, args.seed, method):
                emit(record)
    return 0


def label_scores(steering, per_target: int, seed: int, method: str):
    """The label-score records of steering ``method``: per kind of request and kind of start, :func:`summarize`
    of its table. With one other property kept (``--keep NAME``, each in turn) there are ``per_target // 4 + 1``
    requests per target and kept property; the held-by-all stress test asks what physics may forbid (``tuf`` is
    the pixel-weighted mean of ``tpf`` and ``tnf``: holding both bounds it)."""
    singles = list(steering.directions)
    if steering.pixel_mm is not None:
        singles += [twin for twin in ("usflux", "psep_mm") if steering.resolve(twin)[0] in steering.directions]
    pairs = [pair for pair in JOINT_PAIRS if set(pair) <= set(steering.directions)]
    kinds = [(f"single {name}", target_grid(steering, [name]), "none", per_target) for name in singles]
    kinds += [(f"single {name}, one other kept", target_grid(steering, [name]), "one", per_target // 4 + 1)
              for name in singles]  # fmt: skip
    kinds += [(f"single {name}, others held", target_grid(steering, [name]), "others", per_target) for name in singles]
    kinds += [(f"joint {a} x {b}", target_grid(steering, [a, b]), "none", per_target) for a, b in pairs]
    for kind, grid, hold, count in kinds:
        for starts in ("random", "nearest"):
            scores = label_score(steering, grid, starts, count, hold=hold, seed=seed, method=method)
            yield {"metric": "label_score", "method": method, "kind": kind, "starts": starts, **summarize(scores)}


if __name__ == "__main__":
    sys.exit(main())
