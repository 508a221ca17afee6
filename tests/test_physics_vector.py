"""The physical-property vector and the hybrid search vectors built of it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sharpgen.errors import SharpgenError
from sharpgen.retrieval.physics_vector import (
    DIPOLE_X,
    DIPOLE_Y,
    PROPERTY_TARGETS,
    hybrid_vectors,
    property_targets,
    train_scale,
)


def properties(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "tuf": rng.uniform(0.001, 0.1, n), "tpf": rng.uniform(0.001, 0.05, n), "tnf": rng.uniform(0.001, 0.05, n),
        "psep": rng.uniform(0.05, 0.6, n), "r_paper": rng.uniform(0, 10, n), "lead_pol": rng.uniform(-20, 20, n),
        "tilt_paper": rng.uniform(-60, 60, n), "split": np.where(np.arange(n) % 5 == 0, "test", "train"),
    })  # fmt: skip


def test_the_scale_is_the_train_splits():
    table = properties(50)
    table.loc[table["split"] == "test", "tuf"] = 100.0  # held-out rows must not move the standardization
    scale = train_scale(table, 64)
    train = property_targets(table[table["split"] == "train"], 64)
    assert scale["targets"] == list(PROPERTY_TARGETS)
    np.testing.assert_allclose(scale["mean"], train.mean(axis=0))
    np.testing.assert_allclose(scale["std"], train.std(axis=0))


def test_hybrid_vectors_are_the_unit_embedding_then_the_weighted_standardized_physics():
    table = properties(40)
    scale = train_scale(table, 64)
    embeddings = np.random.default_rng(1).standard_normal((40, 13))
    raw = property_targets(table, 64)
    raw[3, PROPERTY_TARGETS.index("psep")] = math.nan  # a unipolar patch: no separation
    vectors = hybrid_vectors(embeddings, raw, scale, weight=0.7, orientation_weight=2.0)
    assert vectors.shape == (40, 24) and vectors.dtype == np.float32  # 13 + 7, padded to a multiple of 8
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :13], axis=1), 1.0, rtol=1e-6)
    assert not vectors[:, 20:].any()
    block = (raw - np.array(scale["mean"])) / np.array(scale["std"]) * 0.7 / math.sqrt(7)
    block[:, [DIPOLE_X, DIPOLE_Y]] *= 2.0
    block = np.nan_to_num(block)  # an undefined property sits at the train mean
    np.testing.assert_allclose(vectors[:, 13:20], block, rtol=1e-5, atol=1e-6)
    assert vectors[3, 13 + PROPERTY_TARGETS.index("psep")] == 0.0
    with pytest.raises(SharpgenError, match="all-zero"):
        hybrid_vectors(np.zeros((1, 13)), raw[:1], scale, 0.7, 2.0)
