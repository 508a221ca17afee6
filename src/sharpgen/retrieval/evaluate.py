"""The ``evaluate_retrieval`` stage: do generated queries find real patches with the same physics?

Q generated patches (the first Q of ``samples/``, i.e. random latents) are the queries. Each is matched to the
real patches of the dataset by four methods:

- ``ssl``: the run's index (what ``sharpgen query`` does): the SSL embedding, by default beside the patch's
  measured physics (``index.physics_weight``, :mod:`~sharpgen.retrieval.physics_vector`);
- ``ssl_embedding`` (only where the index is hybrid): the SSL embedding alone, cosine nearest neighbours: what the
  encoder has learnt, without the measured physics;
- ``pixel``: Euclidean nearest neighbours of the raw normalized pixels;
- ``pca``: Euclidean nearest neighbours in the space of the first ``pca_components`` principal components of
  the real training patches;
- ``random``: real patches drawn at random (seeded): the correlation any method must beat.

For each method and property (``tuf``, ``psep``, ``r_paper``, ``tpf``, ``tnf``; paper units, measured the same
way on the normalized query and match patches), the Pearson and Spearman correlations between query and top-1
match, and between query and the mean of the top-k matches (the paper reports top-1 Pearson 0.78 / Spearman 0.79
for ``tuf``); and the orientation a physicist searches by (:func:`orientation_agreement`): the fraction of
top-1 matches whose leading polarity (sign of ``lead_pol``) and tilt sign (sign of ``tilt_paper``) are the
query's, the tilt sign also over the queries tilted more than 10 degrees.

Beyond the generated queries:

- ``embedding``: the effective rank (RankMe, :func:`~sharpgen.retrieval.models.effective_rank`) of the index
  embeddings, and the spread of the SSL top-1 cosine across queries (a score that does not discriminate spans
  a few thousandths);
- ``same_region`` (:func:`same_region_recall`): each real patch of a HARP the encoder was not trained on
  (val/test split) that has other observations in the index is a query; recall@1 and @5 is the fraction of
  queries with another observation of their HARP among their first 1 / 5 matches (the query itself excluded),
  for SSL, the baselines and the physical-property searches of fig. 10. Any source with repeated HARP numbers
  has it (the synthetic ``series``, a JSOC record set with a cadence); without, ``n_queries`` is 0.

Writes ``evaluation.json``, ``evaluation_scatter.png`` (query vs. top-1 match, one panel per property and
method) and ``examples.png`` (a few queries with their SSL matches, the paper's retrieval figure).
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
EMBEDDING_ONLY = "ssl_embedding"
"""The SSL embedding searched alone, reported beside ``ssl`` where the index is hybrid."""
PHYSICAL_METHODS = ("physical", "physical_mahalanobis")
"""Same-region searches in physical-property space (fig. 10): standardized Euclidean, Mahalanobis."""
EXAMPLE_QUERIES, EXAMPLE_MATCHES = 4, 8
RECALL_AT = (1, 5)
"""Ranks at which same-region recall is reported."""
TRAINING_SPLIT = "train"
"""The split the encoder and the PCA are fitted on: its patches are never same-region queries."""
ORIENTATION = {"lead_polarity": "lead_pol", "tilt_sign": "tilt_paper"}
"""Orientation agreement: name -> the paper property whose sign is compared between query and match."""
TILT_SIGN_DEFINED_DEG = 10.0
"""Queries tilted more than this (degrees, either way) also get their own tilt-sign agreement."""


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


def _cosine_nearest(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` ``database`` vectors of highest cosine with each query."""
    from .index import unit_rows

    return _flat_nearest(unit_rows(database), unit_rows(queries, what="queries"), k)


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


def _sign_agreement(query: np.ndarray, match: np.ndarray) -> tuple[float, int]:
    """Fraction of pairs whose signs are equal, over the pairs where both are defined and non-zero; their count."""
    query, match = np.sign(query), np.sign(match)
    ok = np.isfinite(query) & np.isfinite(match) & (query != 0) & (match != 0)
    return (float(np.mean(query[ok] == match[ok])) if ok.any() else math.nan), int(ok.sum())


def orientation_agreement(queries: pd.DataFrame, real: pd.DataFrame, rows: np.ndarray) -> dict:
    """Fraction of top-1 matches (``rows[:, 0]``) whose signs of :data:`ORIENTATION`'s properties equal the query's
    (leading polarity: which polarity lies west; tilt sign: whether the positive polarity lies north of the
    negative), over the pairs where both signs are defined and non-zero; with their count ``n_<name>``.

    Beside it, ``tilt_sign_beyond_<T>deg``: the tilt-sign agreement over the queries whose ``|tilt_paper|``
    exceeds :data:`TILT_SIGN_DEFINED_DEG` (T); nearer 0 degrees the sign turns on a pixel's shift of a centroid.
    """
    result = {}
    for name, column in ORIENTATION.items():
        query = queries[column].to_numpy(dtype=np.float64)
        result[name], result[f"n_{name}"] = _sign_agreement(query, real[column].to_numpy(dtype=np.float64)[rows[:, 0]])
    tilt = queries[ORIENTATION["tilt_sign"]].to_numpy(dtype=np.float64)
    clear = np.abs(tilt) > TILT_SIGN_DEFINED_DEG
    name = f"tilt_sign_beyond_{TILT_SIGN_DEFINED_DEG:g}deg"
    matched = real[ORIENTATION["tilt_sign"]].to_numpy(dtype=np.float64)[rows[clear, 0]]
    result[name], result[f"n_{name}"] = _sign_agreement(tilt[clear], matched)
    return result


def embedding_summary(embeddings: np.ndarray, top1_cosine: np.ndarray) -> dict:
    """Effective rank (RankMe) of the ``(N, D)`` index embeddings and the 10th/50th/90th percentiles of the
    top-1 cosine across queries, with ``cosine_spread`` = p90 - p10."""
    from .models import effective_rank

    p10, p50, p90 = np.percentile(np.asarray(top1_cosine, dtype=np.float64), [10, 50, 90])
    return {
        "effective_rank": effective_rank(np.asarray(embeddings, dtype=np.float64)),
        "dim": int(embeddings.shape[1]),
        "n": int(embeddings.shape[0]),
        "top1_cosine_p10": float(p10),
        "top1_cosine_p50": float(p50),
        "top1_cosine_p90": float(p90),
        "cosine_spread": float(p90 - p10),
    }


def same_region_queries(table: pd.DataFrame) -> np.ndarray:
    """Rows of the patches outside the training split whose HARP has at least one other patch in ``table``
    (HARP numbers below 1, a record without HARPNUM, are no region)."""
    if "harpnum" not in table:
        return np.zeros(0, dtype=np.int64)
    harps = table["harpnum"].to_numpy()
    _, inverse, counts = np.unique(harps, return_inverse=True, return_counts=True)
    held_out = (table["split"] != TRAINING_SPLIT).to_numpy() if "split" in table else np.ones(len(table), bool)
    return np.flatnonzero(held_out & (counts[inverse] > 1) & (harps > 0))


def without_self(rows: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` of each row of ``(Q, k + 1)`` matches that is not the query's own row."""
    return np.array([[r for r in found if r != q][:k] for q, found in zip(query_rows, rows, strict=True)])


def recall_at(rows: np.ndarray, query_rows: np.ndarray, harpnums: np.ndarray, ks=RECALL_AT) -> dict:
    """Same-region recall@k: fraction of queries with another observation of their HARP among their first
    ``k`` matches ``rows`` (``(Q, K)``, the query's own row excluded)."""
    harpnums = np.asarray(harpnums)
    hit = harpnums[rows] == harpnums[query_rows][:, None]
    return {f"recall@{k}": float(hit[:, :k].any(axis=1).mean()) if len(rows) else math.nan for k in ks}


def same_region_recall(
    retriever, real_patches: np.ndarray, train: np.ndarray, components: int, seed: int,
    embeddings: np.ndarray | None = None,
) -> dict:  # fmt: skip
    """Query with every patch of :func:`same_region_queries`; recall@k (:data:`RECALL_AT`) of another
    observation of its HARP among the whole index, for SSL, the SSL ``embeddings`` of the real patches alone
    (:data:`EMBEDDING_ONLY`, when given), the pixel / PCA / random baselines and the physical-property searches
    (:data:`PHYSICAL_METHODS`)."""
    table = retriever.table
    query_rows = same_region_queries(table)
    document = {
        "n_queries": int(len(query_rows)),
        "n_harps": int(table["harpnum"].iloc[query_rows].nunique()) if len(query_rows) else 0,
        "query_splits": sorted(set(table["split"].iloc[query_rows])) if len(query_rows) else [],
        "methods": {},
    }
    if len(query_rows) == 0:
        return document
    k = min(max(RECALL_AT), len(table) - 1)
    found = retriever.search(real_patches[query_rows], k=k + 1)
    rows = {"ssl": without_self(np.stack([m["row"].to_numpy() for m in found]), query_rows, k)}
    if embeddings is not None:
        rows[EMBEDDING_ONLY] = without_self(_cosine_nearest(embeddings, embeddings[query_rows], k + 1), query_rows, k)
    for method in METHODS[1:]:
        candidates = baseline_rows(method, real_patches[query_rows], real_patches, train, k + 1, components, seed)
        rows[method] = without_self(candidates, query_rows, k)
    for method, metric in zip(PHYSICAL_METHODS, ("euclidean", "mahalanobis"), strict=True):
        rows[method] = physical_rows(table, query_rows, k, metric)
    harpnums = table["harpnum"].to_numpy()
    document["methods"] = {method: recall_at(found, query_rows, harpnums) for method, found in rows.items()}
    return document


def _method_header(method: str, document: dict) -> str:
    """A method's column header: orientation agreement with the top-1 and same-region recall@5."""
    agreement = document["methods"][method]["agreement"]
    recall = document["same_region"]["methods"].get(method, {}).get(f"recall@{max(RECALL_AT)}", math.nan)
    clear = agreement[f"tilt_sign_beyond_{TILT_SIGN_DEFINED_DEG:g}deg"]
    return (
        f"{method}\nlead pol. {agreement['lead_polarity']:.2f}, tilt sign {agreement['tilt_sign']:.2f}\n"
        f"(|tilt| > {TILT_SIGN_DEFINED_DEG:g} deg: {clear:.2f})\n"
        f"same-region recall@{max(RECALL_AT)} {recall:.2f}\n"
    )


def save_scatter(
    path: str | os.PathLike, queries: pd.DataFrame, real: pd.DataFrame, top1: dict, document: dict
) -> None:
    """Query vs. top-1 match, one row per property and one column per method, Pearson/Spearman annotated; the
    column headers give orientation agreement and same-region recall, the title the embedding's effective rank
    and top-1 cosine spread."""
    from matplotlib.ticker import NullFormatter

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
                for ticks in (axis.xaxis, axis.yaxis):  # labels on the decades only: psep spans one decade
                    ticks.set_minor_formatter(NullFormatter())
                axis.plot(limits, limits, color="0.5", linewidth=0.8)
            stat = document["methods"][method]["top1"][name]
            header = _method_header(method, document) if i == 0 else f"{method}: "
            axis.set_title(f"{header}r={stat['pearson']:.2f} rho={stat['spearman']:.2f}", fontsize=8)
            axis.tick_params(labelsize=6)
            if j == 0:
                axis.set_ylabel(f"match {name}", fontsize=8)
            if i == len(EVALUATED_PROPERTIES) - 1:
                axis.set_xlabel(f"query {name}", fontsize=8)
    embedding = document["embedding"]
    figure.suptitle(
        "generated query vs. top-1 real match (paper units; r = Pearson, rho = Spearman)\n"
        f"SSL embedding: effective rank {embedding['effective_rank']:.1f} of {embedding['dim']}; ssl top-1 similarity "
        f"{embedding['top1_cosine_p10']:.3f}-{embedding['top1_cosine_p90']:.3f} (10th-90th percentile); same-region "
        f"queries: {document['same_region']['n_queries']}",
        fontsize=10,
    )
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

    from .embed import embed_patches
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
    train = (real["split"] == TRAINING_SPLIT).to_numpy() if "split" in real else np.ones(len(real), dtype=bool)
    found = retriever.search(query_patches, k=k)
    top = {"ssl": np.stack([m["row"].to_numpy() for m in found])}
    embeddings = np.load(layout.require("embeddings"))
    alone = None
    if retriever.index.physics is not None:
        alone = embeddings
        top[EMBEDDING_ONLY] = _cosine_nearest(embeddings, embed_patches(retriever.encoder, query_patches), k)
    for method in METHODS[1:]:
        top[method] = baseline_rows(method, query_patches, real_patches, train, k, settings.pca_components, seed)
    scores = {
        method: {**score_matches(queries, real, rows), "agreement": orientation_agreement(queries, real, rows)}
        for method, rows in top.items()
    }
    top1_cosine = np.array([m["similarity"].iloc[0] for m in found])
    document = {
        "settings": asdict(settings),
        "seed": seed,
        "n_queries": count,
        "k": k,
        "n_real": len(real),
        "properties": list(EVALUATED_PROPERTIES),
        "embedding": embedding_summary(embeddings, top1_cosine),
        "methods": scores,
        "same_region": same_region_recall(retriever, real_patches, train, settings.pca_components, seed, alone),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_scatter(stage_file(out_dir, "evaluation_scatter"), queries, real, top, document)
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
    """Paper fig. 10 (journal version): real patches ``query_rows`` searched three ways, one row each: the SSL search
    (the run's index: cosine of the search vectors), physical properties (standardized Euclidean) and physical
    properties (Mahalanobis). Panels give the HARP number and ``tuf``; returns the matched rows per method."""
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
        title="real queries (left) and their matches by the SSL search (as sharpgen query) and by physical properties",
    )  # fmt: skip
    return {
        "query_rows": query_rows.tolist(),
        "matches": {method: rows.tolist() for method, rows in methods.items()},
    }
