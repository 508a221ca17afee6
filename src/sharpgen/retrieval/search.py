"""Retrieval of real SHARP patches that look like a query patch (``sharpgen query`` and the explorer).

A query patch (generated from targets or a latent, or a user's FITS file normalized like the dataset) is embedded by
the run's SSL encoder and searched in its FAISS index (:mod:`sharpgen.retrieval.index`). A match is a row of the
normalized dataset: its metadata (record, HARP and NOAA numbers, T_REC, latitude, split) come from
``data/patches.parquet``, the similarity is the cosine of the two search vectors: the SSL embeddings, by default
beside the patches' measured physics (the hybrid search of :mod:`sharpgen.retrieval.physics_vector`). Its properties
are measured on its normalized patch exactly as a query's are (:func:`sharpgen.data.measure.patch_properties` with the
run's normalization), so query and match columns compare like with like; the physical properties the normalize stage
measured on the native-resolution field follow as ``native_<name>`` (``native_usflux`` is typically 1.25x the patch's
``usflux``, 2x above 3e22 Mx, where the native patch holds flux outside the 64 px field of view).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.measure import patch_properties
from ..data.normalize import Normalization
from ..properties import PROPERTIES
from ..run import RETRIEVER, RunLayout
from .index import EmbeddingIndex, Filters, read_index, search

MATCH_METADATA = ("record", "harpnum", "noaa_ar", "t_rec", "lat_fwt", "lon_fwt", "split")
"""Columns of ``patches.parquet`` reported with every match, where the run has them."""
NATIVE_PROPERTIES = tuple(name for name, row in PROPERTIES.items() if not row.paper_units)
"""Physical properties that ``patches.parquet`` holds as measured on the native field: ``native_<name>`` in a match."""
NATIVE_PREFIX = "native_"
PANEL_MATCHES, PANEL_QUERIES = 16, 16
"""``query.png`` draws at most this many matches per query and this many queries; ``matches.csv`` has them all."""


@dataclass
class Retriever:
    """A finished run's encoder, index and patch table: embed query patches and return their real matches."""

    encoder: object
    index: EmbeddingIndex
    table: pd.DataFrame
    patches: object  # (N, S, S) Zarr array of the normalized real patches (1 unit = 1 kG)
    normalization: Normalization
    measured: dict[int, dict[str, float]] = field(default_factory=dict, repr=False)
    """Properties of the real patches measured so far, by row: a patch is measured once, however often matched."""

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "auto") -> Retriever:
        """Load the encoder, the index and the dataset of the run in ``run_dir`` (:data:`sharpgen.run.RETRIEVER`)."""
        import zarr

        from .embed import load_encoder

        layout = RunLayout(run_dir)
        layout.require_all(RETRIEVER)
        encoder = load_encoder(layout.path("encoder"), device)
        patches = zarr.open_array(str(layout.path("patches")), mode="r")
        table = pd.read_parquet(layout.path("patch_table"))
        normalization = Normalization.read(layout.path("normalization"))
        return cls(encoder, read_index(layout.path("index")), table, patches, normalization)

    @property
    def image_size(self) -> int:
        """Side (px) of the patches the encoder embeds."""
        return int(self.encoder.image_size)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """``(N, D)`` search vectors of ``(N, S, S)`` normalized patches, as the index holds them: the SSL
        embeddings, beside the patches' measured physics where the index is hybrid (``index.physics_weight``)."""
        from .embed import embed_patches
        from .physics_vector import hybrid_vectors, property_targets

        patches = np.asarray(patches, dtype=np.float32)
        embeddings = embed_patches(self.encoder, patches)
        if self.index.physics is None:
            return embeddings
        settings = self.index.settings
        properties = property_targets(self.measure(patches), self.image_size)
        return hybrid_vectors(
            embeddings, properties, self.index.physics, settings.physics_weight, settings.orientation_weight
        )

    def search(
        self,
        patches: np.ndarray,
        k: int = 9,
        filters: Filters | Mapping | None = None,
        one_per_harp: bool = False,
    ) -> list[pd.DataFrame]:
        """The ``k`` best real matches of each ``(N, S, S)`` query patch, one table per query.

        Columns: ``rank`` (1 = best), ``row`` (of ``patches.zarr``/``patches.parquet``), ``similarity``
        (cosine), the metadata of :data:`MATCH_METADATA` that the run's table has, the properties measured on the
        match's normalized patch (:meth:`measure`) and ``native_<name>`` of :data:`NATIVE_PROPERTIES`.
        ``one_per_harp``: only the best observation of each HARP (a SHARP series observes one region many
        times; its later records would fill the top k with one region), so fewer than ``k`` when fewer HARPs
        pass the filters; records without a HARP number count one each.
        """
        embeddings = self.embed(patches)
        if not one_per_harp:
            result = search(self.index, embeddings, k=k, filters=filters)
            pairs = zip(result.rows, result.similarity, strict=True)
        else:
            regions = self.region_keys()
            pairs = [self._best_per_harp(embedding, k, filters, regions) for embedding in embeddings]
        return [self.matches(rows, similarity) for rows, similarity in pairs]

    def _best_per_harp(
        self, embedding: np.ndarray, k: int, filters, region: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and similarities of the ``k`` best matches of one query ``embedding`` from distinct regions
        (``region``: :meth:`region_keys`): the search widens (4x at a time) until ``k`` regions are found or
        every row passing the filters is seen."""
        fetch = k
        while True:
            fetch = min(4 * fetch, len(self.index))
            result = search(self.index, embedding[None], k=fetch, filters=filters)
            rows, similarity = result.rows[0], result.similarity[0]
            _, first = np.unique(region[rows], return_index=True)
            best = np.sort(first)[:k]  # the first (most similar) row of each region, best first
            if len(best) == k or len(rows) < fetch or fetch == len(self.index):
                return rows[best], similarity[best]

    def region_keys(self) -> np.ndarray:
        """Per dataset row, the region it observes: its HARP number, or ``-1 - row`` where it has none (< 1)."""
        rows = np.arange(len(self.table))
        if "harpnum" not in self.table.columns:
            return -1 - rows
        harps = pd.to_numeric(self.table["harpnum"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
        return np.where(harps >= 1, harps, -1 - rows)

    def matches(self, rows: Sequence[int], similarity: Sequence[float]) -> pd.DataFrame:
        """The match table of dataset ``rows`` with their ``similarity`` (see :meth:`search`)."""
        rows = np.asarray(rows, dtype=np.int64)
        found = self.table.iloc[rows].reset_index(drop=True)
        frame = found[[c for c in MATCH_METADATA if c in found.columns]].copy()
        frame = pd.concat([frame, self.measured_rows(rows)], axis=1)
        for name in NATIVE_PROPERTIES:
            if name in found.columns:
                frame[NATIVE_PREFIX + name] = found[name].to_numpy()
        frame.insert(0, "similarity", np.asarray(similarity, dtype=np.float64))
        frame.insert(0, "row", rows)
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        return frame

    def measure(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Every property of ``(N, S, S)`` normalized patches as the run measures a query's: paper units, and
        physical ones (Mx, Mm, deg) on a ``fixed_scale`` run (:func:`sharpgen.data.measure.patch_properties`)."""
        norm = self.normalization
        return patch_properties(patches, norm.threshold_gauss, norm.pixel_mm)

    def measured_rows(self, rows: Sequence[int]) -> pd.DataFrame:
        """:meth:`measure` of the real patches of dataset ``rows``, one table row each, in the order of ``rows``."""
        rows = [int(row) for row in rows]
        new = sorted({row for row in rows if row not in self.measured})
        if new:
            values = self.measure(self.real_patches(new))
            for i, row in enumerate(new):
                self.measured[row] = {name: float(column[i]) for name, column in values.items()}
        if not rows:
            return pd.DataFrame(self.measure(np.zeros((0, *self.patches.shape[1:]), dtype=np.float32)))
        return pd.DataFrame([self.measured[row] for row in rows])

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


def fits_queries(paths: Sequence[str | os.PathLike], normalization) -> tuple[np.ndarray, pd.DataFrame]:
    """User FITS files (field in G) as queries: ``(N, S, S)`` patches normalized as the run did
    (``normalization``: its :class:`sharpgen.data.normalize.Normalization`) and their table (``label`` = the
    path, then the properties the run measures on its patches)."""
    from ..gan.invert import targets_from_fits

    patches, labels = targets_from_fits(paths, normalization)
    queries = pd.DataFrame(patch_properties(patches, normalization.threshold_gauss, normalization.pixel_mm))
    queries.insert(0, "label", labels)
    return patches, queries


def write_query_results(
    out_dir: str | os.PathLike,
    retriever: Retriever,
    query_patches: np.ndarray,
    queries: pd.DataFrame,
    k: int = 9,
    filters: Filters | Mapping | None = None,
    one_per_harp: bool = False,
) -> pd.DataFrame:
    """Search the matches of ``query_patches`` (``queries``: one row per patch, a ``label`` column and any
    measured properties; ``one_per_harp`` as :meth:`Retriever.search`) and write ``matches.csv`` (see
    :func:`match_table`) and ``query.png`` (:func:`save_query_panel`) into ``out_dir``; return the match table."""
    from ..atomic import write_csv_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matches = retriever.search(query_patches, k=k, filters=filters, one_per_harp=one_per_harp)
    table = match_table(queries, matches)
    write_csv_atomic(table, out_dir / "matches.csv")
    found = [retriever.real_patches(m["row"].to_numpy()[:PANEL_MATCHES]) for m in matches[:PANEL_QUERIES]]
    save_query_panel(out_dir / "query.png", query_patches, queries, found, matches)
    return table
