"""How linear are the physical properties in a generator's latent space? JSON lines, one per property.

For each property of ``samples/properties.parquet`` (the run's 10k sampled latents):

- ``ridge_r2``: 5-fold R^2 of a ridge regression of the property (log10 for flux-like ones) from z;
- ``svm_accuracy_single``: held-out accuracy of one linear SVM on the top/bottom ``--fraction`` (the paper's);
- ``svm_accuracy_split``: the same with one SVM per side of the run's polarity split (``directions.json``);
- ``mlp_accuracy_split``: a small MLP classifier on the same per-side labels: the ceiling any *direction*
  could reach with this many samples. A linear accuracy well below it means a better hyperplane exists; both
  low means the property is barely predictable from z (as ``r_paper`` on the default run).

And once, for ``tuf`` (differentiable: the mean |B|), the sign structure of its latent gradients at
``--points`` random z: ``mean_cos`` near 0 with a large ``mean_abs_cos`` is the polarity fold (gradients along
one axis with random sign), and ``top_axis_energy`` is the share of the leading axis of sum g g^T.

    .venv/bin/python benchmarks/latent_linearity.py --results results/default
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sharpgen.latent.directions import directions_from_json, extreme_labels
from sharpgen.run import RunLayout

LOG_PROPERTIES = {"tuf", "tpf", "tnf", "r_paper", "area"}


def held_out(classifier, latents: np.ndarray, values: np.ndarray, fraction: float, seed: int) -> float:
    from sklearn.model_selection import train_test_split

    indices, labels = extreme_labels(values, fraction)
    train, test, y_train, y_test = train_test_split(indices, labels, test_size=0.3, random_state=seed, stratify=labels)
    return float(classifier.fit(latents[train], y_train).score(latents[test], y_test))


def per_side(make, latents, values, sides, fraction, seed) -> float:
    scores = [
        (held_out(make(), latents[sides == side], values[sides == side], fraction, seed), (sides == side).sum())
        for side in np.unique(sides)
    ]
    return float(sum(score * count for score, count in scores) / sum(count for _, count in scores))


def tuf_gradients(generator_path: Path, points: int, seed: int) -> dict:
    import torch

    from sharpgen.gan.models import load_generator

    generator, _ = load_generator(generator_path, "cpu")
    z = torch.tensor(np.random.default_rng(seed).standard_normal((points, 100)), dtype=torch.float32)
    z.requires_grad_(True)
    log_tuf = torch.log(generator(z).abs().mean(dim=(1, 2, 3)))
    (gradients,) = torch.autograd.grad(log_tuf.sum(), z)
    g = gradients.numpy().astype(np.float64)
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    cosines = (unit @ unit.T)[~np.eye(points, dtype=bool)]
    energy = np.linalg.eigvalsh(g.T @ g)[::-1]
    return {
        "metric": "tuf_gradients",
        "points": points,
        "mean_cos": float(cosines.mean()),
        "mean_abs_cos": float(np.abs(cosines).mean()),
        "top_axis_energy": float(energy[0] / energy.sum()),
    }


def main() -> int:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="results_dir of a run through fit_directions")
    parser.add_argument("--properties", nargs="+", default=["tuf", "psep", "r_paper", "tpf", "tnf", "area"])
    parser.add_argument("--fraction", type=float, default=0.1, help="top/bottom label fraction (default 0.1)")
    parser.add_argument("--points", type=int, default=200, help="random latents of the gradient analysis")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run = RunLayout(args.results)
    latents = np.load(run.require("sample_latents")).astype(np.float64)
    table = pd.read_parquet(run.require("sample_table"))
    directions = directions_from_json(json.loads(run.require("directions").read_text()))
    sides = directions.side_of(latents)
    for name in args.properties:
        values = table[name].to_numpy(dtype=np.float64)
        target = np.log10(np.clip(values, 1e-9, None)) if name in LOG_PROPERTIES else values
        ok = np.isfinite(target)
        record = {"metric": "linearity", "property": name, "samples": int(ok.sum())}
        record["ridge_r2"] = float(np.mean(cross_val_score(RidgeCV(), latents[ok], target[ok], cv=5)))
        svm = lambda: LinearSVC(C=0.1, dual="auto", max_iter=20_000)  # noqa: E731
        mlp = lambda: MLPClassifier((128,), alpha=1e-2, max_iter=500, random_state=args.seed)  # noqa: E731
        record["svm_accuracy_single"] = held_out(svm(), latents, values, args.fraction, args.seed)
        record["svm_accuracy_split"] = per_side(svm, latents, values, sides, args.fraction, args.seed)
        record["mlp_accuracy_split"] = per_side(mlp, latents, values, sides, args.fraction, args.seed)
        print(json.dumps(record), flush=True)
    print(json.dumps(tuf_gradients(run.require("generator"), args.points, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
