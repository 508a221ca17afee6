"""Fidelity of the trained GAN: generated samples vs. real training patches, as JSON lines.

Both sets are measured the same way, on patches (:func:`sharpgen.data.measure.patch_properties`): the real
patches of ``--split`` (all of them) and the first ``--max-generated`` stored samples (``samples/patches.zarr``;
they are an i.i.d. draw of the generator). Records, one per line:

- ``classifier_two_sample``: k-fold held-out accuracy of a small CNN telling real from generated patches
  (:func:`sharpgen.gan.fidelity.classifier_two_sample_test`; 0.5 = indistinguishable), with its spread;
- ``property``: KS and W1 (and the 1st/50th/99th percentiles) of tuf, psep, r_paper, tpf, tnf, area, imbalance
  and peak |B|;
- ``extremes``: the fraction of patches with a sunspot-strength peak (>= 900 G), median and strong |imbalance|,
  the 1st and 99th percentiles of tuf, psep (and usflux, psep_mm) (:func:`sharpgen.gan.fidelity.extremes`);
- ``pixel_values``, ``power_spectrum_slope``: KS and W1 of pixel values and of each patch's spectral slope;
- ``bars``: issue 15's done-when bars, each value with ``pass``;
- ``throughput``: training speed from ``gan/train_log.csv``.

    PYTHONPATH=src .venv/bin/python benchmarks/eval_gan.py --results results/default --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
import torch
import zarr

from sharpgen.data.measure import patch_properties
from sharpgen.data.normalize import Normalization
from sharpgen.gan.fidelity import (
    classifier_two_sample_test,
    distribution_distance,
    extremes,
    power_spectrum_slopes,
)
from sharpgen.jsonsafe import json_safe
from sharpgen.run import RunLayout

PROPERTIES = ("tuf", "psep", "r_paper", "tpf", "tnf", "area", "imbalance", "peak")


def emit(record: dict) -> None:
    print(json.dumps(json_safe(record)), flush=True)  # NaN (e.g. psep without bipoles) as null


def percentiles(values: np.ndarray, label: str) -> dict:
    """The 1st, 50th and 99th percentiles of the finite ``values`` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return {f"{label}_q{q:02d}": float(np.percentile(finite, q)) if finite.size else float("nan") for q in (1, 50, 99)}


def measured(patches: np.ndarray, normalization: Normalization, batch: int = 2000) -> pd.DataFrame:
    """The property table of ``(N, S, S)`` patches, measured in batches."""
    parts = [
        pd.DataFrame(patch_properties(patches[i : i + batch], normalization.threshold_gauss, normalization.pixel_mm))
        for i in range(0, len(patches), batch)
    ]
    return pd.concat(parts, ignore_index=True)


def bars(c2st: dict | None, distances: dict, extreme: dict) -> dict:
    """Issue 15's done-when bars: value and pass of each."""
    checks = {}
    if c2st is not None:
        checks["classifier_accuracy_le_0.75"] = (c2st["accuracy"], c2st["accuracy"] <= 0.75)
    for name, limit in (("tuf", 0.10), ("psep", 0.10), ("r_paper", 0.15), ("imbalance", 0.15)):
        if name in distances:
            ks = distances[name]["ks"]
            checks[f"ks_{name}_le_{limit}"] = (ks, bool(ks <= limit))  # NaN (nothing to compare) fails
    points = extreme["peak"]["sunspot_points"]
    checks["sunspot_fraction_within_10_points"] = (points, abs(points) <= 10)
    for name in ("tuf", "psep"):
        for key in ("q01", "q99"):
            value = extreme["tails"][name][f"{key}_relative"]
            checks[f"{name}_{key}_within_15_percent"] = (value, abs(value) <= 0.15)
    return {name: {"value": value, "pass": bool(ok)} for name, (value, ok) in checks.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="results_dir of a run that reached `sample`")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"), help="real patches to compare")
    parser.add_argument("--max-generated", type=int, default=10000, help="stored samples to measure (the first ones)")
    parser.add_argument("--max-patches", type=int, default=2000, help="patches per set for pixel and spectrum metrics")
    parser.add_argument("--no-classifier", action="store_true", help="skip the classifier two-sample test")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the classifier")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and of the classifier")
    args = parser.parse_args()

    run = RunLayout(args.results)
    torch.set_num_threads(args.threads)
    normalization = Normalization.read(run.require("normalization"))
    table = pd.read_parquet(run.require("patch_table"), columns=["split"])
    real_rows = np.flatnonzero(table["split"].to_numpy() == args.split)
    real = zarr.open_array(str(run.require("patches")), mode="r").get_orthogonal_selection(
        (real_rows, slice(None), slice(None))
    )
    store = zarr.open_array(str(run.require("sample_patches")), mode="r")
    generated = np.asarray(store[: min(args.max_generated, store.shape[0])])

    c2st = None
    if not args.no_classifier:
        c2st = classifier_two_sample_test(real, generated, seed=args.seed)
        emit({"metric": "classifier_two_sample", "threads": args.threads, **c2st})

    start = time.perf_counter()
    real_table, generated_table = measured(real, normalization), measured(generated, normalization)
    seconds = time.perf_counter() - start
    distances = {}
    for name in PROPERTIES:
        if name not in real_table.columns:
            continue
        r, g = real_table[name].to_numpy(), generated_table[name].to_numpy()
        distances[name] = distribution_distance(r, g)
        emit({
            "metric": "property", "property": name, **distances[name],
            **percentiles(r, "real"), **percentiles(g, "generated"),
        })  # fmt: skip
    extreme = extremes(real_table, generated_table)
    emit({
        "metric": "extremes", "n_real": len(real_table), "n_generated": len(generated_table),
        "measure_seconds": seconds, **extreme,
    })  # fmt: skip

    rng = np.random.default_rng(args.seed)
    real_pick = rng.permutation(len(real))[: args.max_patches]
    generated_pick = rng.permutation(len(generated))[: args.max_patches]
    emit(
        {"metric": "pixel_values", **distribution_distance(real[real_pick].ravel(), generated[generated_pick].ravel())}
    )
    slopes = distribution_distance(
        power_spectrum_slopes(real[real_pick]), power_spectrum_slopes(generated[generated_pick])
    )
    emit({"metric": "power_spectrum_slope", **slopes})
    emit({"metric": "bars", **bars(c2st, distances, extreme)})

    log = pd.read_csv(run.require("gan_log"))
    settings = torch.load(run.require("generator"), map_location="cpu", weights_only=False)["settings"]
    seconds = float(log["seconds_per_step"].median())
    emit({
        "metric": "throughput",
        "architecture": settings["architecture"],
        "image_size": settings["image_size"],
        "batch_size": settings["batch_size"],
        "steps": int(log["step"].max()),
        "median_seconds_per_step": seconds,
        "images_per_s": settings["batch_size"] / seconds,
        "train_seconds": float(log["seconds_per_step"].sum()),
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
