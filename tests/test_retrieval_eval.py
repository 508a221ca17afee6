"""Retrieval evaluation: correlations, the baselines' nearest neighbours, physical-property search."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sharpgen.errors import SharpgenError
from sharpgen.retrieval.evaluate import baseline_rows, correlations, physical_rows, score_matches

RNG = np.random.default_rng(3)
REAL = RNG.standard_normal((40, 8, 8)).astype(np.float32)


def test_correlations_use_finite_pairs_and_refuse_constant_input():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    result = correlations(x, 2 * x + 1)
    assert result == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0), "n": 4}
    assert correlations(x, -x)["spearman"] == pytest.approx(-1.0)
    assert math.isnan(correlations(x, np.ones(5))["pearson"])


@pytest.mark.parametrize("method", ["pixel", "pca"])
def test_pixel_and_pca_baselines_find_an_identical_patch_first(method):
    queries = REAL[[7, 21]] + 1e-4
    rows = baseline_rows(method, queries, REAL, np.ones(40, dtype=bool), k=3, components=10, seed=0)
    assert rows.shape == (2, 3) and list(rows[:, 0]) == [7, 21]


def test_random_baseline_is_seeded_and_in_range_and_unknown_methods_fail():
    rows = baseline_rows("random", REAL[:5], REAL, np.ones(40, dtype=bool), k=4, components=10, seed=1)
    again = baseline_rows("random", REAL[:5], REAL, np.ones(40, dtype=bool), k=4, components=10, seed=1)
    np.testing.assert_array_equal(rows, again)
    assert rows.shape == (5, 4) and rows.min() >= 0 and rows.max() < 40
    with pytest.raises(SharpgenError, match="unknown retrieval baseline"):
        baseline_rows("umap", REAL[:5], REAL, np.ones(40, dtype=bool), k=4, components=10, seed=1)


def test_matches_with_the_same_properties_score_one_and_random_ones_do_not():
    names = ["tuf", "psep", "r_paper", "tpf", "tnf"]
    real = pd.DataFrame(RNG.lognormal(size=(200, 5)), columns=names)
    queries = real.iloc[:50].reset_index(drop=True)
    perfect = score_matches(queries, real, np.tile(np.arange(50)[:, None], (1, 3)))
    assert all(perfect["top1"][name]["pearson"] == pytest.approx(1.0) for name in names)
    shuffled = score_matches(queries, real, RNG.integers(0, 200, size=(50, 3)))
    assert all(abs(shuffled["top1"][name]["spearman"]) < 0.5 for name in names)


def test_physical_search_returns_the_nearest_other_regions():
    names = ["tuf", "psep", "r_paper", "tpf", "tnf"]
    base = np.linspace(1.0, 2.0, 20)
    table = pd.DataFrame({name: base * (i + 1) for i, name in enumerate(names)})
    table.loc[3, "r_paper"] = np.nan  # undefined values do not break the search
    for metric in ("euclidean", "mahalanobis"):
        rows = physical_rows(table, np.array([0, 10]), k=2, metric=metric)
        assert rows.shape == (2, 2) and 0 not in rows[0] and 10 not in rows[1]
        assert set(rows[1]) == {9, 11}
    with pytest.raises(SharpgenError, match="unknown physical metric"):
        physical_rows(table, np.array([0]), k=2, metric="cosine")
