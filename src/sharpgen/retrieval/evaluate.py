"""The ``evaluate_retrieval`` stage: do generated queries find real patches with the same physics?

Q generated patches (the first Q of ``samples/``, i.e. random latents) are the queries. Each is matched to the
real patches of the dataset by four methods:

- ``ssl``: the run's SimSiam embedding and index (what ``sharpgen query`` does);
- ``pixel``: Euclidean nearest neighbours of the raw normalized pixels;
- ``pca``: Euclidean nearest neighbours in the space of the first ``pca_components`` principal components of
  the real training patches;
- ``random``: real patches drawn at random (seeded): the correlation any method must beat.

For each method and property (``tuf``, ``psep``, ``r_paper``, ``tpf``, ``tnf``; paper units, as measured on
the query and on the match), the Pearson and Spearman correlations between query and top-1 match, and
between query and the mean of the top-k matches (the paper reports top-1 Pearson 0.78 / Spearman 0.79 for
``tuf``). Writes ``evaluation.json``, ``evaluation_scatter.png`` (query vs. top-1 match, one panel per
property and method) and ``examples.png`` (a few queries with their SSL matches, the paper's retrieval figure).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..atomic import write_text_atomic
from ..errors import SharpgenError
from ..properties import EVALUATED_PROPERTIES, PROPERTIES
from ..run import RunLayout, stage_file

METHODS = ("ssl", "pixel", "pca", "random")
EXAMPLE_QUERIES, EXAMPLE_MATCHES = 4, 8


@dataclass(frozen=True)
class RetrievalEvalSettings:
    """Settings of ``evaluate_retrieval`` (schema section ``retrieval_eval``)."""

    SECTION: ClassVar[str] = "retrieval_eval"

    n_queries: int
    k: int
    pca_components: int


def correlations(query: np.ndarray, match: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of the finite pairs, and their count (NaN below 3 pairs or no spread)."""
    from scipy import stats

    query, match = np.asarray(query, dtype=np.float64), np.asarray(match, dtype=np.float64)
    ok = np.isfinite(query) & np.isfinite(match)
    result = {"pearson": math.nan, "spearman": math.nan, "n": int(ok.sum())}
    if ok.sum() >= 3 and np.ptp(query[ok]) > 0 and np.ptp(match[ok]) > 0:
        result["pearson"] = float(stats.pearsonr(query[ok], match[ok]).statistic)
        result["spearman"] = float(stats.spearmanr(query[ok], match[ok]).statistic)
    return result


def _flat_nearest(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` Euclidean nearest ``database`` vectors of each query (exact FAISS search)."""
    import faiss

    index = faiss.IndexFlatL2(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows


def baseline_rows(
    method: str, query_patches: np.ndarray, real_patches: np.ndarray, train: np.ndarray, k: int, components: int,
    seed: int,
) -> np.ndarray:  # fmt: skip
    """``(Q, k)`` dataset rows matched to ``(Q, S, S)`` queries by a baseline ``method`` (pixel, pca, random).

    ``train``: boolean mask of the real patches the PCA is fitted on.
    """
    flat_real = real_patches.reshape(len(real_patches), -1)
    flat_query = query_patches.reshape(len(query_patches), -1)
    if method == "pixel":
        return _flat_nearest(flat_real, flat_query, k)
    if method == "pca":
        from sklearn.decomposition import PCA

        fit_on = flat_real[train] if train.sum() > components else flat_real
        pca = PCA(n_components=min(components, len(fit_on) - 1, flat_real.shape[1]), random_state=seed).fit(fit_on)
        return _flat_nearest(pca.transform(flat_real), pca.transform(flat_query), k)
    if method == "random":
        return np.random.default_rng(seed).integers(0, len(real_patches), size=(len(query_patches), k))
    raise SharpgenError(f"unknown retrieval baseline {method!r} (known: pixel, pca, random)")


def score_matches(queries: pd.DataFrame, real: pd.DataFrame, rows: np.ndarray) -> dict:
    """Per property, correlations of the queries' values with their top-1 match and with the top-k mean."""
    result = {"top1": {}, "topk_mean": {}}
    for name in EVALUATED_PROPERTIES:
        values = real[name].to_numpy(dtype=np.float64)
        query = queries[name].to_numpy(dtype=np.float64)
        result["top1"][name] = correlations(query, values[rows[:, 0]])
        result["topk_mean"][name] = correlations(query, np.nanmean(values[rows], axis=1))
    return result


def save_scatter(path: str | os.PathLike, queries: pd.DataFrame, real: pd.DataFrame, top1: dict, scores: dict) -> None:
    """Query vs. top-1 match, one row per property and one column per method, Pearson/Spearman annotated."""
    from ..plotting import get_pyplot, save_figure

    pyplot = get_pyplot()
    methods = list(top1)
    figure, axes = pyplot.subplots(
        len(EVALUATED_PROPERTIES),
        len(methods),
        figsize=(2.6 * len(methods), 2.4 * len(EVALUATED_PROPERTIES)),
        squeeze=False,
    )
    for i, name in enumerate(EVALUATED_PROPERTIES):
        query = queries[name].to_numpy(dtype=np.float64)
        match = real[name].to_numpy(dtype=np.float64)
        positive = np.concatenate([query, match])
        positive = positive[np.isfinite(positive) & (positive > 0)]
        limits = (positive.min(), positive.max()) if positive.size else (1e-3, 1.0)
        for j, method in enumerate(methods):
            axis = axes[i, j]
            axis.scatter(query, match[top1[method][:, 0]], s=4, alpha=0.5, color="C0", linewidths=0)
            if positive.size:
                axis.set_xscale("log")
                axis.set_yscale("log")
                axis.plot(limits, limits, color="0.5", linewidth=0.8)
            stat = scores[method]["top1"][name]
            axis.set_title(f"{method}: r={stat['pearson']:.2f} rho={stat['spearman']:.2f}", fontsize=8)
            axis.tick_params(labelsize=6)
            if j == 0:
                axis.set_ylabel(f"match {name}", fontsize=8)
            if i == len(EVALUATED_PROPERTIES) - 1:
                axis.set_xlabel(f"query {name}", fontsize=8)
    figure.suptitle("generated query vs. top-1 real match (paper units; r = Pearson, rho = Spearman)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def evaluate_retrieval(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: RetrievalEvalSettings,
    seed: int,
    device: str = "auto",
    threads: int = 1,
) -> dict:
    """Run the stage on the run in ``run_dir``; write into ``out_dir`` and return the ``evaluation.json``
    document."""
    import torch
    import zarr

    from .search import Retriever, save_query_panel

    torch.set_num_threads(threads)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    layout = RunLayout(run_dir)
    sampled = pd.read_parquet(layout.require("sample_table"))
    stored = zarr.open_array(str(layout.require("sample_patches")), mode="r")  # the first sample.stored_patches
    retriever = Retriever.from_run(run_dir, device)
    count = min(settings.n_queries, len(sampled), stored.shape[0])
    if count < 3:
        raise SharpgenError(f"only {count} stored samples: at least 3 queries are needed for a correlation")
    queries = sampled.iloc[:count].reset_index(drop=True)
    query_patches = np.asarray(stored[:count], dtype=np.float32)
    real = retriever.table
    missing = [name for name in EVALUATED_PROPERTIES if name not in real.columns or name not in queries.columns]
    if missing:
        raise SharpgenError(f"properties {', '.join(missing)} are missing from the real or the generated table")
    k = min(settings.k, len(real))
    real_patches = np.asarray(retriever.patches[:], dtype=np.float32)
    train = (real["split"] == "train").to_numpy() if "split" in real else np.ones(len(real), dtype=bool)
    top = {"ssl": np.stack([m["row"].to_numpy() for m in retriever.search(query_patches, k=k)])}
    for method in METHODS[1:]:
        top[method] = baseline_rows(method, query_patches, real_patches, train, k, settings.pca_components, seed)
    scores = {method: score_matches(queries, real, rows) for method, rows in top.items()}
    document = {
        "settings": asdict(settings),
        "seed": seed,
        "n_queries": count,
        "k": k,
        "n_real": len(real),
        "properties": list(EVALUATED_PROPERTIES),
        "methods": scores,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_scatter(stage_file(out_dir, "evaluation_scatter"), queries, real, top, scores)
    shown = min(EXAMPLE_QUERIES, count)
    example_matches = retriever.search(query_patches[:shown], k=min(EXAMPLE_MATCHES, len(real)))
    found = [retriever.real_patches(m["row"].to_numpy()) for m in example_matches]
    labelled = queries.iloc[:shown].assign(label=[f"query {i}" for i in range(shown)])
    save_query_panel(stage_file(out_dir, "retrieval_examples"), query_patches[:shown], labelled, found, example_matches)
    write_text_atomic(stage_file(out_dir, "evaluation"), json.dumps(document, indent=2) + "\n")
    return document


PHYSICAL_FEATURES = EVALUATED_PROPERTIES
"""Properties of the physical-space searches of :func:`compare_searches` (log-scale ones as log10(1 + x/x_med))."""


def physical_features(table: pd.DataFrame) -> np.ndarray:
    """``(N, 5)`` features of :data:`PHYSICAL_FEATURES`: as they are, or as ``log10(1 + x / median)`` for those
    that span decades (the property table's ``log_scale``); undefined values (NaN) become the column median."""
    columns = []
    for name in PHYSICAL_FEATURES:
        values = table[name].to_numpy(dtype=np.float64)
        median = np.nanmedian(values)
        if PROPERTIES[name].log_scale:
            values = np.log10(1.0 + np.clip(values, 0.0, None) / (median if median > 0 else 1.0))
        columns.append(np.where(np.isfinite(values), values, np.nanmedian(values)))
    return np.stack(columns, axis=1)


def physical_rows(table: pd.DataFrame, query_rows: np.ndarray, k: int, metric: str) -> np.ndarray:
    """``(Q, k)`` nearest dataset rows of dataset rows ``query_rows`` in physical-property space, excluding
    the query itself: ``euclidean`` on standardized features, or ``mahalanobis`` (whitened by the features'
    covariance over the dataset)."""
    features = physical_features(table)
    centred = features - features.mean(axis=0)
    if metric == "euclidean":
        scaled = centred / np.where(centred.std(axis=0) > 0, centred.std(axis=0), 1.0)
    elif metric == "mahalanobis":
        values, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
        scaled = centred @ vectors / np.sqrt(np.clip(values, 1e-12, None))
    else:
        raise SharpgenError(f"unknown physical metric {metric!r} (euclidean or mahalanobis)")
    rows = _flat_nearest(scaled, scaled[query_rows], k + 1)
    return np.array([[r for r in found if r != q][:k] for q, found in zip(query_rows, rows, strict=True)])


def compare_searches(retriever, query_rows: np.ndarray, k: int, path: str | os.PathLike) -> dict:
    """Paper fig. 10 (journal version): real patches ``query_rows`` searched three ways, one row each: the
    SSL embedding (cosine), physical properties (standardized Euclidean) and physical properties
    (Mahalanobis). Panels give the HARP number and ``tuf``; returns the matched rows per method."""
    from ..plotting import save_patch_grid

    table = retriever.table
    query_rows = np.asarray(query_rows, dtype=np.int64)
    queries = retriever.real_patches(query_rows)
    found = retriever.search(queries, k=k + 1)
    methods = {
        "SSL": np.array([[r for r in m["row"] if r != q][:k] for q, m in zip(query_rows, found, strict=True)]),
        "physical (Euclidean)": physical_rows(table, query_rows, k, "euclidean"),
        "physical (Mahalanobis)": physical_rows(table, query_rows, k, "mahalanobis"),
    }
    panels, titles = [], []
    for i, row in enumerate(query_rows):
        for method, rows in methods.items():
            panels.append(queries[i])
            titles.append(f"HARP {int(table['harpnum'].iloc[row])}\n{method}")
            panels.extend(retriever.real_patches(rows[i]))
            titles.extend(f"HARP {int(table['harpnum'].iloc[r])}\ntuf={table['tuf'].iloc[r]:.3g}" for r in rows[i])
    save_patch_grid(
        np.stack(panels), path, titles=titles, columns=k + 1,
        title="real queries (left) and their matches by SSL embedding and by physical properties",
    )  # fmt: skip
    return {
        "query_rows": query_rows.tolist(),
        "matches": {method: rows.tolist() for method, rows in methods.items()},
    }
