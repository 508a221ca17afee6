"""Fidelity of the trained GAN: generated samples vs. real training patches, as JSON lines.

For each of tuf, psep, r_paper, tpf, tnf, area: the two-sample KS statistic and Wasserstein-1 distance between
the real patches of a split and the generated samples (``samples/properties.parquet``); the same for pixel
values and for the power-spectrum slope; training throughput (images/s) from ``gan/train_log.csv``.

    .venv/bin/python benchmarks/eval_gan.py --results results/default
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from sharpgen.gan.fidelity import distribution_distance, power_spectrum_slopes

PROPERTIES = ("tuf", "psep", "r_paper", "tpf", "tnf", "area")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="results_dir of a run that reached `sample`")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"), help="real patches to compare")
    parser.add_argument("--max-patches", type=int, default=2000, help="patches per set for pixel and spectrum metrics")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    args = parser.parse_args()

    results = Path(args.results)
    table = pd.read_parquet(results / "data" / "patches.parquet")
    real_rows = np.flatnonzero(table["split"].to_numpy() == args.split)
    generated = pd.read_parquet(results / "samples" / "properties.parquet")
    for name in PROPERTIES:
        emit(
            {
                "metric": "property",
                "property": name,
                **distribution_distance(table[name].to_numpy()[real_rows], generated[name]),
            }
        )

    rng = np.random.default_rng(args.seed)
    real_pick = np.sort(rng.permutation(real_rows)[: args.max_patches])
    generated_pick = np.sort(rng.permutation(len(generated))[: args.max_patches])
    real = zarr.open_array(str(results / "data" / "patches.zarr"), mode="r").get_orthogonal_selection(
        (real_pick, slice(None), slice(None))
    )
    fake = zarr.open_array(str(results / "samples" / "patches.zarr"), mode="r").get_orthogonal_selection(
        (generated_pick, slice(None), slice(None))
    )
    emit({"metric": "pixel_values", **distribution_distance(real.ravel(), fake.ravel())})
    emit(
        {
            "metric": "power_spectrum_slope",
            **distribution_distance(power_spectrum_slopes(real), power_spectrum_slopes(fake)),
        }
    )

    log = pd.read_csv(results / "gan" / "train_log.csv")
    settings = torch.load(results / "gan" / "generator.pt", map_location="cpu", weights_only=False)["settings"]
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
