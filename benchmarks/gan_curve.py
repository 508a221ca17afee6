"""Fidelity against training time: one GAN trained in stages, measured after each, as JSON lines.

Trains the config's GAN (``--set`` overrides its ``gan`` section) on the train split of a run that reached
``normalize``, up to each of ``--steps`` in turn: every stage resumes the last one's checkpoint, so the curve
costs one training run of the longest length. After each stage ``--samples`` patches of fixed latents are
measured against the training patches as ``eval_gan.py`` does (classifier two-sample test, KS of the
properties, sunspot peaks, tails, issue 15's bars); one record per stage with the cumulative training seconds.
A figure of the curve goes to ``--out``/curve.png, the patches of each stage to ``--out``/step_NNNNNN.png.

    PYTHONPATH=src .venv/bin/python benchmarks/gan_curve.py --results results/default --out /tmp/curve \\
        --steps 1000 2000 4000 8000 --set '{"network": {"field": "asinh"}}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from eval_gan import PROPERTIES, bars, emit, measured

from sharpgen.config import load_config, settings_from_config, validate_config
from sharpgen.data.normalize import Normalization
from sharpgen.gan.fidelity import classifier_two_sample_test, distribution_distance, extremes
from sharpgen.gan.models import LATENT_DIM, for_inference, load_generator
from sharpgen.gan.sample import generate
from sharpgen.gan.train import GanSettings, train_gan
from sharpgen.plotting import save_patch_grid
from sharpgen.run import RunLayout

CURVE_BARS = (
    ("classifier_accuracy_le_0.75", "classifier accuracy", 0.75),
    ("ks_tuf_le_0.1", "KS tuf", 0.10),
    ("ks_psep_le_0.1", "KS psep", 0.10),
    ("ks_r_paper_le_0.15", "KS r_paper", 0.15),
    ("ks_imbalance_le_0.15", "KS imbalance", 0.15),
)


def generated_patches(generator_path: Path, count: int, seed: int) -> np.ndarray:
    """``(count, S, S)`` patches of the generator for the first ``count`` latents of ``seed``."""
    generator, _ = load_generator(generator_path)
    return generate(for_inference(generator), np.random.default_rng(seed).standard_normal((count, LATENT_DIM)), "cpu")


def plot_curve(records: list[dict], path: Path) -> None:
    """Each bar's value against cumulative training minutes, the bar as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["train_seconds"] / 60 for r in records]
    fig, axes = plt.subplots(1, len(CURVE_BARS), figsize=(3.2 * len(CURVE_BARS), 3.0), constrained_layout=True)
    for ax, (key, label, limit) in zip(axes, CURVE_BARS, strict=True):
        ax.plot(minutes, [r["bars"][key]["value"] if key in r["bars"] else np.nan for r in records], "o-")
        ax.axhline(limit, color="k", ls="--", lw=0.8)
        for minute, record in zip(minutes, records, strict=True):
            ax.annotate(str(record["steps"]), (minute, ax.get_ylim()[0]), fontsize=7, ha="center", va="bottom")
        ax.set(title=label, xlabel="training minutes")
    fig.suptitle("GAN fidelity against training time (dashed: issue 15's bar; labels: steps)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="results_dir of a run that reached normalize")
    parser.add_argument("--config", default="config/config.yaml", help="config whose gan section is trained")
    parser.add_argument("--set", default="{}", help="JSON overrides of the gan section, e.g. network or steps")
    parser.add_argument("--out", required=True, help="directory of the GAN, its checkpoints and the curve")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, 4000], help="stages, in steps")
    parser.add_argument("--samples", type=int, default=2000, help="generated patches measured per stage")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of training and the classifier")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    args = parser.parse_args()

    run, out = RunLayout(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    seed = config["seed"] if args.seed is None else args.seed
    overrides = json.loads(args.set)
    gan = dict(config["gan"])
    for key, value in overrides.items():  # a nested section (network) is updated, not replaced
        gan[key] = {**gan[key], **value} if isinstance(value, dict) and isinstance(gan.get(key), dict) else value
    normalization = Normalization.read(run.require("normalization"))
    split = pd.read_parquet(run.require("patch_table"), columns=["split"])["split"].to_numpy()
    real = zarr.open_array(str(run.require("patches")), mode="r").get_orthogonal_selection(
        (np.flatnonzero(split == "train"), slice(None), slice(None))
    )
    real_table = measured(real, normalization)
    records, train_seconds = [], 0.0
    for steps in sorted(args.steps):
        settings = settings_from_config(GanSettings, validate_config({**config, "gan": {**gan, "steps": steps}}))
        started = time.perf_counter()
        train_gan(run.require("normalization").parent, out, settings, seed=seed, threads=args.threads)
        train_seconds += time.perf_counter() - started
        torch.set_num_threads(args.threads)
        fake = generated_patches(out / "generator.pt", args.samples, seed=seed)
        save_patch_grid(fake[:16], out / f"step_{steps:06d}.png", title=f"{steps} steps")
        c2st = classifier_two_sample_test(real, fake, seed=0)
        fake_table = measured(fake, normalization)
        distances = {
            name: distribution_distance(real_table[name].to_numpy(), fake_table[name].to_numpy())
            for name in PROPERTIES
            if name in real_table.columns
        }
        extreme = extremes(real_table, fake_table)
        record = {
            "metric": "gan_curve", "seed": seed, "steps": steps, "train_seconds": train_seconds, "overrides": overrides,
            "classifier_accuracy": c2st["accuracy"], "classifier_accuracy_std": c2st["accuracy_std"],
            "ks": {name: d["ks"] for name, d in distances.items()},
            "sunspot_fraction": extreme["peak"], "bars": bars(c2st, distances, extreme),
        }  # fmt: skip
        emit(record)
        records.append(record)
        plot_curve(records, out / "curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
