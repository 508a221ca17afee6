"""The ``fit_directions`` stage: SVM directions, conditional directions, calibration and entanglement.

Reads ``samples/latents.npy`` + ``samples/properties.parquet`` (and the generator, to traverse) and writes
into ``directions/``:

- ``directions.json``: the split boundary (``directions.split_by``, the leading polarity ``lead_pol``; or null),
  ``skipped`` (what was asked but the samples cannot support, and why: the split when they hold too few of one
  polarity, a property defined on too few samples to label two per class), per
  property and side the unit normal, SVM offset and held-out accuracy, and for both the plain direction and
  its conditional version (orthogonal to every other configured property's direction on the same side) the
  median traversal Spearman correlation with the step reached (all steps, and steps >= 0 as in the paper's
  traversals) and the median slope of every measured property per unit step reached;
- ``traversals.parquet``: every measured traversal point (direction, kind, start, ``step`` asked, ``reached``:
  the step actually moved once stopped at the polarity boundary, side, properties); each start moves along
  the direction of its own side;
- ``calibration.parquet``: per direction, kind and step, median and quartiles of every property's change;
- ``entanglement.json``: the plain, conditional and local entanglement matrices (see
  :mod:`sharpgen.latent.steering`).

Kind ``local`` (when every property is :data:`~sharpgen.latent.local.DIFFERENTIABLE` and ``local_steps`` > 0):
from each start, ``local_steps`` steps up and down along the latent's own gradients, each changing the property by
``local_step`` sample standard deviations and holding the other properties to first order
(:func:`~sharpgen.latent.steering.follow_local`); the directions ``generate`` and ``edit`` use by default. Its
``step`` and ``reached`` are in standard deviations of the moved property, not latent units.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..atomic import write_parquet_atomic, write_text_atomic
from ..errors import SharpgenError
from ..gan.models import for_inference, load_generator
from ..gan.sample import SampleSettings, latent_properties
from ..progress import progress_bar
from ..run import stage_file
from ..training import pick_device
from ..units import GAUSS_PER_NORMALIZED_UNIT
from .directions import (
    ALL_LATENTS,
    SIDES,
    DirectionSet,
    directions_to_json,
    fit_direction,
    fit_split,
    labelled_per_class,
    sides_of,
    split_shortfall,
)
from .local import DIFFERENTIABLE, local_jacobian
from .steering import (
    calibration_curves,
    entanglement_row,
    follow_local,
    median_slopes,
    median_spearman,
    traversal_steps,
    traverse,
)

KINDS = ("plain", "conditional", "local")
SVM_KINDS = KINDS[:2]


@dataclass(frozen=True)
class DirectionSettings:
    """Settings of ``fit_directions`` (schema section ``directions``)."""

    SECTION: ClassVar[str] = "directions"

    properties: tuple[str, ...]
    split_by: str | None
    label_fraction: float
    heldout_fraction: float
    svm_c: float
    traversal_starts: int
    max_step: float
    n_steps: int
    local_step: float
    local_steps: int


def fit_directions(
    samples_dir: str | os.PathLike,
    generator_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: DirectionSettings,
    sample_settings: SampleSettings,
    seed: int,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Run the stage; return the ``directions.json`` document."""
    import torch

    torch.set_num_threads(threads)
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    latents = np.load(stage_file(samples_dir, "sample_latents"))
    table = pd.read_parquet(stage_file(samples_dir, "sample_table"))
    missing = [name for name in settings.properties if name not in table.columns]
    if missing:
        raise SharpgenError(
            f"directions.properties: {', '.join(missing)} not measured by the sample stage "
            f"(available: {', '.join(c for c in table.columns if c != 'sample')})"
        )
    if settings.split_by is not None and settings.split_by not in table.columns:
        raise SharpgenError(f"directions.split_by: {settings.split_by!r} is not measured by the sample stage")
    split, skipped = None, {}
    if settings.split_by is not None:
        values = table[settings.split_by].to_numpy()
        shortfall = split_shortfall(settings.split_by, values, settings.label_fraction)
        if shortfall is None:
            split = fit_split(settings.split_by, latents, values, settings.heldout_fraction, seed, settings.svm_c)
        else:
            skipped["split"] = shortfall
    sides = sides_of(split, latents)
    side_keys = (ALL_LATENTS,) if split is None else SIDES
    for name in settings.properties:
        values = table[name].to_numpy()
        if min(labelled_per_class(values[sides == side], settings.label_fraction) for side in side_keys) < 2:
            skipped[name] = (
                f"{name} skipped: too few samples with a defined {name} for two per class on every side; no direction"
            )
    fitted = [name for name in settings.properties if name not in skipped]
    if not fitted:
        raise SharpgenError("fit_directions: no property is defined on enough samples (is the generator trained?)")
    plain = {
        name: {
            side: fit_direction(
                name, latents[sides == side], table[name].to_numpy()[sides == side], settings.label_fraction,
                settings.heldout_fraction, seed, settings.svm_c,
            )
            for side in side_keys
        }
        for name in fitted
    }  # fmt: skip
    directions = DirectionSet(split, plain)
    dev = pick_device(device)
    generator, gan_settings = load_generator(generator_path, dev)
    generator = for_inference(generator)  # the same function, 3x faster forward and backward on a CPU
    measured = list(dict.fromkeys([*settings.properties, *(c for c in table.columns if c != "sample")]))

    def measure(points: np.ndarray) -> pd.DataFrame:
        return latent_properties(generator, points, dev, sample_settings.threshold_gauss, sample_settings.pixel_mm)

    starts = np.random.default_rng(seed).standard_normal((settings.traversal_starts, latents.shape[1]))
    steps = traversal_steps(settings.max_step, settings.n_steps)
    spread = {name: float(table[name].std(ddof=0)) for name in measured}  # NaN, quietly, where none is defined
    traversals, curves, summary = [], [], {}
    kinds = KINDS if settings.local_steps > 0 and all(name in DIFFERENTIABLE for name in fitted) else SVM_KINDS
    if kinds == SVM_KINDS and settings.local_steps > 0:
        skipped["local"] = (
            "no local traversals: "
            + ", ".join(name for name in fitted if name not in DIFFERENTIABLE)
            + " has no soft gradient (generate and edit steer along the SVM directions)"
        )
    matrices = {kind: {} for kind in kinds}
    threshold = sample_settings.threshold_gauss / GAUSS_PER_NORMALIZED_UNIT
    sample_std = [spread[name] for name in fitted]
    own_slope = lambda name: summary[name]["plain"]["slopes_per_step"][name]  # noqa: E731 (plain kind runs first)
    jacobian = local_jacobian(generator, dev, threshold, directions, own_slope)

    bar = progress_bar(
        total=len(kinds) * len(fitted), desc="fit_directions", unit="traversal set", disable=not progress
    )
    for kind in kinds:
        for name in fitted:
            if kind == "local":
                traversal = follow_local(
                    measure, jacobian, starts, fitted, name, sample_std, settings.local_step, settings.local_steps
                )
            else:
                conditions = fitted if kind == "conditional" else ()
                try:
                    normals = directions.normals(name, starts, conditions)
                except SharpgenError:  # the others' directions span this one: no conditional direction exists
                    skipped[f"{name} {kind}"] = (
                        f"{name}: no {kind} direction; its direction lies in the span of the other properties' "
                        "directions (in these samples they move together)"
                    )
                    matrices[kind][name] = {other: math.nan for other in fitted}
                    summary.setdefault(name, {})[kind] = {
                        "median_spearman": math.nan, "median_spearman_upward": math.nan, "slopes_per_step": {}
                    }  # fmt: skip
                    bar.update(1)
                    continue
                traversal = traverse(measure, starts, normals, steps, directions.keep_sides)
            traversal.insert(2, "side", directions.side_of(starts)[traversal["start"].to_numpy()])
            slopes = median_slopes(traversal, measured)
            own = {other: slopes[other] for other in fitted}
            matrices[kind][name] = entanglement_row(own, name, spread)
            summary.setdefault(name, {})[kind] = {
                "median_spearman": median_spearman(traversal, name),
                "median_spearman_upward": median_spearman(traversal[traversal["step"] >= 0], name),
                "slopes_per_step": slopes,
            }
            curve = calibration_curves(traversal, measured)
            for frame in (traversal, curve):
                frame.insert(0, "kind", kind)
                frame.insert(0, "direction", name)
            traversals.append(traversal)
            curves.append(curve)
            bar.update(1)
    bar.close()
    document = directions_to_json(directions, dataclasses.asdict(settings))
    document["skipped"] = skipped
    document["measurement"] = {
        "threshold_gauss": sample_settings.threshold_gauss,
        "pixel_mm": sample_settings.pixel_mm,
        "image_size": int(gan_settings["image_size"]),
    }
    for name, entry in document["directions"].items():
        entry["conditional_on"] = [other for other in fitted if other != name]
        entry["traversal"] = summary[name]
        entry["sample_std"] = spread[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(pd.concat(traversals, ignore_index=True), stage_file(out_dir, "traversals"))
    write_parquet_atomic(pd.concat(curves, ignore_index=True), stage_file(out_dir, "calibration"))
    entanglement = {"properties": fitted, "steps": steps.tolist(), "local_step": settings.local_step, **matrices}
    write_text_atomic(stage_file(out_dir, "entanglement"), json.dumps(entanglement, indent=2) + "\n")
    write_text_atomic(stage_file(out_dir, "directions"), json.dumps(document, indent=2) + "\n")
    return document
