"""Retrieval evaluation: correlations, the baselines' nearest neighbours, physical-property search."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sharpgen.errors import SharpgenError
from sharpgen.retrieval.evaluate import (
    baseline_rows,
    correlations,
    embedding_summary,
    orientation_agreement,
    physical_rows,
    recall_at,
    same_region_queries,
    score_matches,
    without_self,
)

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


def test_embedding_summary_reports_the_effective_rank_and_the_spread_of_top1_cosines():
    embeddings = np.zeros((50, 20))
    embeddings[np.arange(50), np.arange(50) % 10] = 1.0  # ten orthogonal directions, equally used
    summary = embedding_summary(embeddings, np.linspace(0.5, 1.0, 101))
    assert summary["effective_rank"] == pytest.approx(10.0, rel=1e-6)
    assert summary["dim"] == 20 and summary["n"] == 50
    assert summary["top1_cosine_p10"] == pytest.approx(0.55) and summary["top1_cosine_p90"] == pytest.approx(0.95)
    assert summary["cosine_spread"] == pytest.approx(0.4)


def test_orientation_agreement_compares_the_signs_of_lead_pol_and_tilt():
    real = pd.DataFrame({"lead_pol": [3.0, -2.0, 5.0, np.nan], "tilt_paper": [10.0, 20.0, -5.0, 1.0]})
    queries = pd.DataFrame({"lead_pol": [1.0, 1.0, 1.0, 1.0], "tilt_paper": [4.0, 4.0, 4.0, 4.0]})
    agreement = orientation_agreement(queries, real, np.array([[0], [1], [2], [3]]))
    assert agreement["lead_polarity"] == pytest.approx(2 / 3) and agreement["n_lead_polarity"] == 3  # NaN skipped
    assert agreement["tilt_sign"] == pytest.approx(3 / 4) and agreement["n_tilt_sign"] == 4


def test_tilt_sign_agreement_is_also_reported_for_queries_tilted_beyond_10_degrees():
    real = pd.DataFrame({"lead_pol": [1.0, 1.0, 1.0, 1.0], "tilt_paper": [-30.0, -3.0, -2.0, np.nan]})
    queries = pd.DataFrame({"lead_pol": [1.0, 1.0, 1.0, 1.0], "tilt_paper": [-25.0, 15.0, 4.0, -12.0]})
    agreement = orientation_agreement(queries, real, np.array([[0], [1], [2], [3]]))
    assert agreement["tilt_sign"] == pytest.approx(1 / 3)  # the 4-degree query's mismatch counts here...
    assert agreement["tilt_sign_beyond_10deg"] == pytest.approx(1 / 2)  # ...not here; NaN matches skipped
    assert agreement["n_tilt_sign_beyond_10deg"] == 2


def test_same_region_queries_are_held_out_patches_whose_harp_has_other_observations():
    table = pd.DataFrame({
        "harpnum": [1, 1, 2, 2, 2, 3, 4, 0, 0],
        "split": ["train", "train", "test", "test", "test", "val", "val", "test", "test"],
    })  # fmt: skip
    # HARP 1 was trained on, 3 and 4 are alone, 0 is "no HARPNUM" (a FITS folder without the keyword)
    np.testing.assert_array_equal(same_region_queries(table), [2, 3, 4])


def test_recall_counts_queries_with_a_sibling_observation_among_their_first_k_matches():
    harpnums = np.array([7, 7, 8, 8, 9, 9])
    query_rows = np.array([0, 2, 4])
    found = without_self(np.array([[0, 3, 1], [3, 2, 5], [4, 0, 1]]), query_rows, k=2)
    np.testing.assert_array_equal(found, [[3, 1], [3, 5], [0, 1]])
    assert recall_at(found, query_rows, harpnums, ks=(1, 2)) == {"recall@1": pytest.approx(1 / 3), "recall@2": 2 / 3}


def test_match_properties_are_measured_on_the_patch_once_per_row(monkeypatch):
    from sharpgen.data.measure import patch_properties
    from sharpgen.data.normalize import Normalization
    from sharpgen.retrieval.search import Retriever

    rng = np.random.default_rng(0)
    patches = rng.normal(0, 0.3, (6, 16, 16)).astype(np.float32)
    norm = Normalization("fixed_scale", 16, 2.9154, 1000.0, 150.0)
    retriever = Retriever(None, None, pd.DataFrame({"harpnum": range(6)}), patches, norm)
    measured = []
    monkeypatch.setattr(retriever, "real_patches", lambda rows: measured.extend(rows) or patches[list(rows)])
    first = retriever.measured_rows([4, 1, 4])
    second = retriever.measured_rows([1, 2])
    assert sorted(measured) == [1, 2, 4]  # each row read and measured once
    expected = pd.DataFrame(patch_properties(patches[[4, 1, 4, 1, 2]], 150.0, 2.9154))
    pd.testing.assert_frame_equal(pd.concat([first, second], ignore_index=True), expected, check_exact=False)


def test_one_match_per_harp_keeps_each_regions_best_observation_in_rank_order():
    """A SHARP series observes one region many times: `query --one-per-harp` returns each HARP's most similar
    record once, in similarity order, as many as asked while HARPs remain (records without a HARP count singly)."""
    from sharpgen.config import build_settings
    from sharpgen.data.normalize import Normalization
    from sharpgen.retrieval.index import IndexSettings, build_index
    from sharpgen.retrieval.search import Retriever

    rng = np.random.default_rng(1)
    query = np.zeros(8, dtype=np.float32)
    query[0] = 1.0
    harps = np.array([7, 7, 7, 7, 3, 3, 9, 0, 0, 5])  # rows 7 and 8 have no HARP number
    closeness = np.linspace(0.99, 0.5, len(harps))  # row i is the i-th most similar to the query
    embeddings = np.zeros((len(harps), 8), dtype=np.float32)
    embeddings[:, 0] = closeness
    embeddings[:, 1:] = np.sqrt(1 - closeness**2)[:, None] * rng.dirichlet(np.ones(7), len(harps)) ** 0.5
    table = pd.DataFrame({"harpnum": harps, "t_rec": ["2011.01.01_00:00:00_TAI"] * len(harps), "split": "train"})
    patches = np.zeros((len(harps), 16, 16), dtype=np.float32)
    norm = Normalization("fixed_scale", 16, 2.9154, 1000.0, 150.0)
    index = build_index(embeddings, table, build_settings(IndexSettings, kind="exact"))
    retriever = Retriever(None, index, table, patches, norm)
    retriever.embed = lambda patches: np.repeat(query[None], len(patches), axis=0)
    retriever.real_patches = lambda rows: patches[list(rows)]

    (every,) = retriever.search(patches[:1], k=5)
    assert list(every["row"]) == [0, 1, 2, 3, 4]  # the plain search: one region fills the top 4
    (distinct,) = retriever.search(patches[:1], k=5, one_per_harp=True)
    assert list(distinct["row"]) == [0, 4, 6, 7, 8] and list(distinct["rank"]) == [1, 2, 3, 4, 5]
    assert distinct["similarity"].is_monotonic_decreasing
    (all_regions,) = retriever.search(patches[:1], k=9, one_per_harp=True)
    assert list(all_regions["harpnum"]) == [7, 3, 9, 0, 0, 5]  # fewer than k: only six regions exist
