"""Retrieval of real SHARP patches that look like a query patch (``sharpgen query`` and the explorer).

A query patch (generated from targets or a latent, or a user's FITS file normalized like the dataset) is
embedded by the run's SimSiam encoder and searched in its FAISS index (:mod:`sharpgen.retrieval.index`). A match is a
row of the normalized dataset: its metadata (record, HARP and NOAA numbers, T_REC, latitude, split) and its
measured properties (paper units, and physical units where the run measured them) come from
``data/patches.parquet``, the similarity is the cosine of the two embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..properties import PROPERTIES
from ..run import RETRIEVER, RunLayout
from .index import EmbeddingIndex, Filters, read_index, search

MATCH_METADATA = ("record", "harpnum", "noaa_ar", "t_rec", "lat_fwt", "lon_fwt", "split")
MATCH_PROPERTIES = tuple(PROPERTIES)
"""Columns of ``patches.parquet`` reported with every match, where the run has them: every measured property."""
PANEL_MATCHES, PANEL_QUERIES = 16, 16
"""``query.png`` draws at most this many matches per query and this many queries; ``matches.csv`` has them all."""


@dataclass
class Retriever:
    """A finished run's encoder, index and patch table: embed query patches and return their real matches."""

    encoder: object
    index: EmbeddingIndex
    table: pd.DataFrame
    patches: object  # (N, S, S) Zarr array of the normalized real patches (1 unit = 1 kG)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "auto") -> Retriever:
        """Load the encoder, the index and the dataset of the run in ``run_dir`` (:data:`sharpgen.run.RETRIEVER`)."""
        import zarr

        from .embed import load_encoder

        layout = RunLayout(run_dir)
        layout.require_all(RETRIEVER)
        encoder = load_encoder(layout.path("encoder"), device)
        patches = zarr.open_array(str(layout.path("patches")), mode="r")
        return cls(encoder, read_index(layout.path("index")), pd.read_parquet(layout.path("patch_table")), patches)

    @property
    def image_size(self) -> int:
        """Side (px) of the patches the encoder embeds."""
        return int(self.encoder.image_size)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """``(N, D)`` embeddings of ``(N, S, S)`` normalized patches."""
        from .embed import embed_patches

        return embed_patches(self.encoder, np.asarray(patches, dtype=np.float32))

    def search(self, patches: np.ndarray, k: int = 9, filters: Filters | Mapping | None = None) -> list[pd.DataFrame]:
        """The ``k`` best real matches of each ``(N, S, S)`` query patch, one table per query.

        Columns: ``rank`` (1 = best), ``row`` (of ``patches.zarr``/``patches.parquet``), ``similarity``
        (cosine), the metadata and the properties of :data:`MATCH_METADATA` / :data:`MATCH_PROPERTIES` that
        the run's table has.
        """
        result = search(self.index, self.embed(patches), k=k, filters=filters)
        return [self.matches(rows, similarity) for rows, similarity in zip(result.rows, result.similarity, strict=True)]

    def matches(self, rows: Sequence[int], similarity: Sequence[float]) -> pd.DataFrame:
        """The match table of dataset ``rows`` with their ``similarity`` (see :meth:`search`)."""
        rows = np.asarray(rows, dtype=np.int64)
        columns = [c for c in (*MATCH_METADATA, *MATCH_PROPERTIES) if c in self.table.columns]
        frame = self.table.iloc[rows][columns].reset_index(drop=True)
        frame.insert(0, "similarity", np.asarray(similarity, dtype=np.float64))
        frame.insert(0, "row", rows)
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        return frame

    def real_patches(self, rows: Sequence[int]) -> np.ndarray:
        """``(len(rows), S, S)`` normalized real patches, in the order of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.image_size, self.image_size), dtype=np.float32)
        order = np.argsort(rows)
        patches = np.empty((rows.size, *self.patches.shape[1:]), dtype=np.float32)
        patches[order] = self.patches.get_orthogonal_selection((rows[order],))
        return patches


PANEL_PROPERTY = "tuf"
"""The property printed under every panel of the query figure."""


def match_table(queries: pd.DataFrame, matches: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One row per (query, match): ``query`` (index), ``query_label``, the query's properties as
    ``query_<name>`` and the match's columns (see :meth:`Retriever.search`)."""
    frames = []
    for i, frame in enumerate(matches):
        frame = frame.copy()
        frame.insert(0, "query_label", queries["label"].iloc[i])
        frame.insert(0, "query", i)
        for name in queries.columns.drop("label"):
            frame[f"query_{name}"] = queries[name].iloc[i]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _panel_title(prefix: str, row: Mapping) -> str:
    value = row.get(PANEL_PROPERTY, np.nan)
    return f"{prefix}\n{PANEL_PROPERTY}={value:.3g}" if np.isfinite(value) else prefix


def save_query_panel(
    path: str | os.PathLike,
    query_patches: np.ndarray,
    queries: pd.DataFrame,
    match_patches: Sequence[np.ndarray],
    matches: Sequence[pd.DataFrame],
) -> None:
    """The paper's retrieval figure: one row per query, the query patch first, then its matches best first,
    titled with HARP number, cosine similarity and ``tuf``; at most :data:`PANEL_QUERIES` rows of
    :data:`PANEL_MATCHES` matches."""
    from ..plotting import save_patch_grid

    query_patches, match_patches, matches = (x[:PANEL_QUERIES] for x in (query_patches, match_patches, matches))
    k = min(max(len(m) for m in matches), PANEL_MATCHES)
    blank = np.zeros_like(query_patches[0])
    panels, titles = [], []
    for i, (patch, found, table) in enumerate(zip(query_patches, match_patches, matches, strict=True)):
        panels.append(patch)
        titles.append(_panel_title(f"query {i}", queries.iloc[i].to_dict()))
        for j in range(k):
            if j < len(table):
                row = table.iloc[j].to_dict()
                panels.append(found[j])
                harp = f"HARP {int(row['harpnum'])}" if "harpnum" in row else f"row {int(row['row'])}"
                titles.append(_panel_title(f"{harp} cos {row['similarity']:.3f}", row))
            else:
                panels.append(blank)
                titles.append("")
    save_patch_grid(
        np.stack(panels), path, titles=titles, columns=k + 1, title="generated / user queries and their real matches"
    )


def write_query_results(
    out_dir: str | os.PathLike,
    retriever: Retriever,
    query_patches: np.ndarray,
    queries: pd.DataFrame,
    k: int = 9,
    filters: Filters | Mapping | None = None,
) -> pd.DataFrame:
    """Search the matches of ``query_patches`` (``queries``: one row per patch, a ``label`` column and any
    measured properties) and write ``matches.csv`` (see :func:`match_table`) and ``query.png``
    (:func:`save_query_panel`) into ``out_dir``; return the match table."""
    from ..atomic import write_csv_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matches = retriever.search(query_patches, k=k, filters=filters)
    table = match_table(queries, matches)
    write_csv_atomic(table, out_dir / "matches.csv")
    found = [retriever.real_patches(m["row"].to_numpy()[:PANEL_MATCHES]) for m in matches[:PANEL_QUERIES]]
    save_query_panel(out_dir / "query.png", query_patches, queries, found, matches)
    return table
