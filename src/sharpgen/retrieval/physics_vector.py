"""The physical-property vector of a patch: what the SSL encoder's property head predicts, and what the hybrid
search sets beside the SSL embedding.

:data:`PROPERTY_TARGETS` are the evaluated properties ``tuf``, ``tpf``, ``tnf``, ``psep`` and ``r_paper`` (paper
units, measured on the normalized patch) and the vector from the negative to the positive strong-field centroid
over the patch diagonal, ``dipole_x = lead_pol / diagonal`` (its sign: which polarity leads) and
``dipole_y = psep sin(tilt_paper)`` (its sign: the tilt's; a north-south mirror negates it). The vector carries
separation, leading polarity and tilt together and, unlike an angle, is continuous. Linear values, not logs: the
retrieval is judged by Pearson correlations of the values, which the strong regions dominate (as the head's
targets, default run, three seeds: top-1 Pearson tuf 0.88 vs 0.85 with log10 targets, tpf 0.79 vs 0.76; without
the dipole vector, leading-polarity agreement fell from 0.94 to 0.91).

The hybrid search vector (:func:`hybrid_vectors`, schema ``index.physics_weight``) is the L2-normalized SSL
embedding followed by these seven values, standardized with the train split's mean and std (undefined ones, a
unipolar patch's separation, at the mean, 0), the dipole components times ``index.orientation_weight``, the
whole block times ``physics_weight / sqrt(7)``. The index normalizes the result, so the similarity is the cosine
of the hybrid vectors: two patches must look alike *and* have alike flux, separation, R and orientation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..errors import SharpgenError

PROPERTY_TARGETS = ("tuf", "tpf", "tnf", "psep", "r_paper", "dipole_x", "dipole_y")
"""The physical-property vector, in this order (see the module docstring)."""
DIPOLE_X, DIPOLE_Y = PROPERTY_TARGETS.index("dipole_x"), PROPERTY_TARGETS.index("dipole_y")
PROPERTY_COLUMNS = ("tuf", "tpf", "tnf", "psep", "r_paper", "lead_pol", "tilt_paper")
"""The measured properties (patch-table or :func:`~sharpgen.data.measure.patch_properties` columns) it is built of."""


def property_targets(table: pd.DataFrame | dict, image_size: int) -> np.ndarray:
    """``(N, 7)`` raw :data:`PROPERTY_TARGETS` of the rows of a property table of S x S patches (``image_size``
    S), float64, NaN where a property is undefined."""
    missing = [name for name in PROPERTY_COLUMNS if name not in table]
    if missing:
        raise SharpgenError(f"the patch table lacks {', '.join(missing)}; rerun normalize")
    values = {name: np.asarray(table[name], dtype=np.float64) for name in PROPERTY_COLUMNS}
    values["dipole_x"] = values["lead_pol"] / (image_size * math.sqrt(2.0))
    values["dipole_y"] = values["psep"] * np.sin(np.radians(values["tilt_paper"]))
    return np.stack([values[name] for name in PROPERTY_TARGETS], axis=1)


def standardize(values: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """``(values - mean) / std`` per column, with ``mean`` and ``std`` (of the finite entries of ``values`` unless
    given; a column without spread gets std 1, one without finite entries mean 0); returns all three."""
    if mean is None or std is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column with no finite entry has no mean or spread
            mean, std = np.nan_to_num(np.nanmean(values, axis=0)), np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)
    return (values - mean) / std, np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)


def train_scale(table: pd.DataFrame, image_size: int) -> dict:
    """The standardization of the vector: ``{"targets", "mean", "std"}`` over the train-split rows of the patch
    table (all rows where it has no ``split``)."""
    train = table[table["split"] == "train"] if "split" in table else table
    _, mean, std = standardize(property_targets(train, image_size))
    return {"targets": list(PROPERTY_TARGETS), "mean": mean.tolist(), "std": std.tolist()}


DIM_MULTIPLE = 8
"""Hybrid vectors end in zero columns up to a multiple of this many dimensions (256 + 7 -> 264), so that a product
quantizer's sub-vectors (index kind ``pqfs``) divide them; zeros change no distance."""


def hybrid_vectors(
    embeddings: np.ndarray,
    properties: np.ndarray,
    scale: dict,
    weight: float,
    orientation_weight: float,
) -> np.ndarray:
    """``(N, D + 7 + padding)`` float32 hybrid search vectors of ``(N, D)`` SSL ``embeddings`` and the ``(N, 7)`` raw
    :data:`PROPERTY_TARGETS` of the same patches (``scale``: :func:`train_scale`); see the module docstring."""
    from .index import unit_rows

    embeddings = unit_rows(embeddings)
    standardized, _, _ = standardize(np.asarray(properties, dtype=np.float64), scale["mean"], scale["std"])
    block = np.nan_to_num(standardized, nan=0.0)
    block[:, [DIPOLE_X, DIPOLE_Y]] *= orientation_weight
    block *= weight / math.sqrt(len(PROPERTY_TARGETS))
    padding = np.zeros((len(block), -(embeddings.shape[1] + block.shape[1]) % DIM_MULTIPLE))
    return np.concatenate([embeddings, block, padding], axis=1).astype(np.float32)
