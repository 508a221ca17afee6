"""Embedding index: cosine search over patches, metadata filters, persistence, approximate kinds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sharpgen.config import build_settings
from sharpgen.errors import SharpgenError
from sharpgen.retrieval.index import (
    Filters,
    IndexSettings,
    build_index,
    build_index_from_files,
    parse_times,
    read_index,
    search,
    write_index,
)
from sharpgen.retrieval.physics_vector import PROPERTY_TARGETS, hybrid_vectors, property_targets

N, DIM = 600, 16


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A patch table like normalize's: 60 HARPs x 10 records, 12 min apart, latitudes in both hemispheres."""
    harp = np.repeat(np.arange(1000, 1060), 10)
    times = pd.Timestamp("2011-01-01") + pd.to_timedelta(np.arange(N) * 12, unit="min")
    latitude = np.where(harp % 2 == 0, 1.0, -1.0) * (harp % 40)
    latitude[7] = np.nan
    return pd.DataFrame({
        "harpnum": harp,
        "t_rec": times.strftime("%Y.%m.%d_%H:%M:%S_TAI"),
        "lat_fwt": latitude,
        "split": np.where(harp % 10 == 0, "test", np.where(harp % 10 == 1, "val", "train")),
        "tuf": np.ones(N),
    })  # fmt: skip


@pytest.fixture(scope="module")
def exact(embeddings, table):
    return build_index(embeddings, table, build_settings(IndexSettings, kind="exact"))


def recall_at(k: int, found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth, strict=True)]))


def test_exact_search_returns_the_query_itself_first_with_cosine_one(exact, embeddings):
    result = search(exact, embeddings[[3, 250, 599]], k=5)
    assert result.rows.shape == (3, 5) and list(result.rows[:, 0]) == [3, 250, 599]
    np.testing.assert_allclose(result.similarity[:, 0], 1.0, atol=1e-5)
    assert (np.diff(result.similarity, axis=1) <= 1e-6).all()


def test_similarity_is_the_cosine_and_ignores_the_norm(exact, embeddings):
    result = search(exact, 10.0 * embeddings[0], k=N)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(result.similarity[0], (unit @ unit[0])[result.rows[0]], atol=1e-5)


def test_rows_are_the_patch_rows_of_the_table_not_positions(embeddings, table):
    subset = table.iloc[100:200]
    index = build_index(embeddings[100:200], subset, build_settings(IndexSettings, kind="exact"))
    assert search(index, embeddings[150], k=1).rows[0, 0] == 150


def test_time_filter_keeps_only_patches_inside_the_range(exact, embeddings, table):
    start, end = "2011.01.01_10:00:00_TAI", "2011-01-01T20:00:00"
    result = search(exact, embeddings[:4], k=20, filters=Filters(time_range=(start, end)))
    times = parse_times(table["t_rec"].to_numpy()[result.rows.ravel()])
    assert (times >= pd.Timestamp("2011-01-01 10:00")).all() and (times <= pd.Timestamp("2011-01-01 20:00")).all()
    assert result.rows.shape == (4, 20)


def test_harp_split_and_latitude_filters_exclude_other_rows(exact, embeddings, table):
    by_harp = search(exact, embeddings[:3], k=30, filters={"harpnums": [1003, 1017]})
    assert set(table["harpnum"].to_numpy()[by_harp.rows.ravel()]) <= {1003, 1017} and by_harp.rows.shape == (3, 20)
    by_split = search(exact, embeddings[:3], k=50, filters=Filters(splits=("val", "test")))
    assert set(table["split"].to_numpy()[by_split.rows.ravel()]) <= {"val", "test"}
    south = search(exact, embeddings[:3], k=50, filters=Filters(latitude=(-30, -10)))
    assert ((table["lat_fwt"].to_numpy()[south.rows] >= -30) & (table["lat_fwt"].to_numpy()[south.rows] <= -10)).all()
    band = search(exact, embeddings[:3], k=50, filters=Filters(abs_latitude=(0, 5)))
    assert (np.abs(table["lat_fwt"].to_numpy()[band.rows]) <= 5).all()  # the NaN latitude never passes
    assert 7 not in search(exact, embeddings[7], k=N, filters=Filters(abs_latitude=(0, 90))).rows


@pytest.mark.parametrize("exact_below", [20000, 0])  # exact over the selected vectors / flat index + ID selector
def test_combined_filters_match_a_brute_force_search(exact_below, embeddings, table):
    index = build_index(embeddings, table, build_settings(IndexSettings, kind="exact", exact_below=exact_below))
    filters = Filters(splits=("train",), abs_latitude=(10, 35), time_range=(None, "2011.01.04_00:00:00_TAI"))
    result = search(index, embeddings[:5], k=7, filters=filters)
    keep = np.flatnonzero(
        (table["split"] == "train")
        & table["lat_fwt"].abs().between(10, 35)
        & (parse_times(table["t_rec"]) <= pd.Timestamp("2011-01-04"))
    )
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = keep[np.argsort(-(unit[:5] @ unit[keep].T), axis=1)[:, :7]]
    np.testing.assert_array_equal(result.rows, expected)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "pqfs"])
def test_index_round_trips_through_disk(kind, embeddings, table, tmp_path):
    index = build_index(embeddings, table, build_settings(IndexSettings, kind=kind, hnsw_m=8, ivf_nlist=8))
    write_index(index, tmp_path / "index")
    again = read_index(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["index.faiss", "index.json", "index_rows.parquet"]
    assert again.settings == index.settings and again.dim == DIM and len(again) == N
    pd.testing.assert_frame_equal(again.rows, index.rows, check_dtype=False)
    filters = Filters(splits=("train",), time_range=("2011.01.02_00:00:00_TAI", None))
    before, after = (
        search(index, embeddings[:9], k=5, filters=filters),
        search(again, embeddings[:9], k=5, filters=filters),
    )
    np.testing.assert_array_equal(before.rows, after.rows)


@pytest.mark.parametrize(
    "settings",
    [
        build_settings(IndexSettings, kind="hnsw", hnsw_m=16, hnsw_ef_search=64),
        build_settings(IndexSettings, kind="ivf", ivf_nprobe=32),
        build_settings(IndexSettings, kind="pqfs"),
    ],
)
def test_approximate_indexes_have_high_recall(settings, table):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((5000, DIM)).astype(np.float32)
    big_table = pd.DataFrame({"split": np.where(np.arange(5000) % 4 == 0, "val", "train")})
    truth = search(build_index(data, big_table), data[:200] + 0.1, k=10)
    approx = build_index(data, big_table, settings)
    assert recall_at(10, search(approx, data[:200] + 0.1, k=10).rows, truth.rows) >= 0.95
    # Filtered (25 % selected, above exact_below=0 so the approximate path with a selector runs).
    strict = dataclasses.replace(settings, exact_below=0)
    approx = build_index(data, big_table, strict)
    filters = Filters(splits=("val",))
    truth = search(build_index(data, big_table), data[:200] + 0.1, k=10, filters=filters)
    found = search(approx, data[:200] + 0.1, k=10, filters=filters)
    assert (big_table["split"].to_numpy()[found.rows] == "val").all() and found.rows.shape == (200, 10)
    assert recall_at(10, found.rows, truth.rows) >= 0.9


@pytest.mark.parametrize(
    "settings",
    [
        build_settings(IndexSettings, kind="hnsw", hnsw_m=4, hnsw_ef_search=1, exact_below=0),
        build_settings(IndexSettings, kind="pqfs", exact_below=0),
    ],
)
def test_selective_filter_on_an_approximate_index_is_never_short(settings, embeddings, table):
    index = build_index(embeddings, table, settings)
    result = search(index, embeddings[:20], k=10, filters=Filters(harpnums=(1042,)))
    assert result.rows.shape == (20, 10) and set(result.rows.ravel()) == set(range(420, 430))


def test_user_mistakes_are_one_line_errors(exact, embeddings, table, tmp_path):
    with pytest.raises(SharpgenError, match=r"expected \(n, 16\)"):
        search(exact, np.zeros((2, 8)), k=3)
    with pytest.raises(SharpgenError, match="no indexed patch passes the filters"):
        search(exact, embeddings[0], k=3, filters=Filters(harpnums=(1,)))
    with pytest.raises(SharpgenError, match="'index.kind': 'lsh' is not one of"):
        build_settings(IndexSettings, kind="lsh")
    with pytest.raises(SharpgenError, match="pq_m = 5 must divide the embedding dimension 16"):
        build_index(embeddings, table, build_settings(IndexSettings, kind="pqfs", pq_m=5))
    with pytest.raises(SharpgenError, match="unknown filter"):
        search(exact, embeddings[0], filters={"harp": [1]})
    with pytest.raises(SharpgenError, match="must match row for row"):
        build_index(embeddings, table.iloc[:10])
    with pytest.raises(SharpgenError, match="not a complete index"):
        read_index(tmp_path)
    with pytest.raises(SharpgenError, match="cannot read start time"):
        search(exact, embeddings[0], filters=Filters(time_range=("yesterday", None)))
    with pytest.raises(SharpgenError, match="no latitude column"):
        search(build_index(embeddings, table[["harpnum"]]), embeddings[0], filters=Filters(latitude=(0, 10)))
    with pytest.raises(SharpgenError, match="all-zero"):
        search(exact, np.zeros(DIM))


def test_index_stage_reads_embeddings_and_patch_table(embeddings, table, tmp_path):
    np.save(tmp_path / "embeddings.npy", embeddings)
    table.to_parquet(tmp_path / "patches.parquet")
    plain = build_settings(IndexSettings, physics_weight=0.0)
    build_index_from_files(tmp_path / "embeddings.npy", tmp_path / "patches.parquet", tmp_path / "index", plain)
    index = read_index(tmp_path / "index")
    assert list(index.rows.columns) == ["row", "harpnum", "t_rec", "split", "time", "latitude"]
    assert index.rows["time"].iloc[5] == pd.Timestamp("2011-01-01 01:00")
    assert index.physics is None and index.dim == DIM  # the embeddings alone
    with pytest.raises(SharpgenError, match="run the embed stage first"):
        build_index_from_files(tmp_path / "missing.npy", tmp_path / "patches.parquet", tmp_path / "index")


def physics_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the measured properties a hybrid index reads, seeded."""
    rng = np.random.default_rng(1)
    return table.assign(
        tuf=rng.uniform(0.001, 0.1, N), tpf=rng.uniform(0.001, 0.05, N), tnf=rng.uniform(0.001, 0.05, N),
        psep=rng.uniform(0.05, 0.6, N), r_paper=rng.uniform(0.0, 10.0, N), lead_pol=rng.uniform(-20, 20, N),
        tilt_paper=rng.uniform(-60, 60, N),
    )  # fmt: skip


def test_a_hybrid_index_tells_apart_patches_that_look_alike_by_their_physics(embeddings, table, tmp_path):
    """With index.physics_weight > 0 each indexed vector is the embedding beside the patch's measured physics
    (standardized with the train split): of two patches with one embedding, the one whose properties are the
    query's ranks first, which the embedding alone cannot tell."""
    table = physics_table(table)
    twins = embeddings.copy()
    twins[1] = twins[0]  # rows 0 and 1 look alike to the encoder
    np.save(tmp_path / "embeddings.npy", twins)
    table.to_parquet(tmp_path / "patches.parquet")
    build_index_from_files(tmp_path / "embeddings.npy", tmp_path / "patches.parquet", tmp_path / "index", image_size=64)
    index = read_index(tmp_path / "index")
    train = property_targets(table[table["split"] == "train"], 64)
    assert index.physics["targets"] == list(PROPERTY_TARGETS)
    np.testing.assert_allclose(index.physics["mean"], train.mean(axis=0))
    np.testing.assert_allclose(index.physics["std"], train.std(axis=0))
    assert index.dim == 24  # 16 + 7, padded to a multiple of 8
    settings = index.settings
    for row in (0, 1):
        query = hybrid_vectors(
            twins[row : row + 1], property_targets(table.iloc[[row]], 64), index.physics, settings.physics_weight,
            settings.orientation_weight,
        )  # fmt: skip
        found = search(index, query, k=2)
        assert found.rows[0, 0] == row and found.similarity[0, 0] == pytest.approx(1.0, abs=1e-5)
        assert found.similarity[0, 1] < 0.99
    with pytest.raises(SharpgenError, match="needs the patches' image_size"):
        build_index_from_files(tmp_path / "embeddings.npy", tmp_path / "patches.parquet", tmp_path / "index")
