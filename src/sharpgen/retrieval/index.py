"""The ``index`` stage: a FAISS index over patch embeddings, with metadata filters at query time.

Similarity is the cosine: embeddings are L2-normalized and indexed with the L2 metric, so the ranking is
both the cosine ranking and the Euclidean ranking of the normalized vectors (the README figure's "SSL
latent - Euclidean"); ``search`` returns ``cosine = 1 - |a - b|**2 / 2``. SimSiam's loss is a cosine,
so the norm of an embedding carries no trained meaning. With ``physics_weight`` > 0 (the default) the indexed vectors
are hybrid: each unit embedding followed by the patch's standardized measured properties
(:mod:`sharpgen.retrieval.physics_vector`; :func:`build_index_from_files` builds them, ``index.json`` keeps their
standardization, :class:`~sharpgen.retrieval.search.Retriever` builds a query's alike).

Kinds:

- ``exact``: ``IndexFlatL2``, brute force (~25-30 ms per query for 1e6 x 100-d on one core; fine up to ~1e5-1e6).
- ``hnsw``: ``IndexHNSWFlat`` (``hnsw_m`` links per node, ``hnsw_ef_construction``, ``hnsw_ef_search``).
  For millions of patches; see ``benchmarks/bench_index.py`` for latency and recall@10.
- ``ivf``: ``IndexIVFFlat`` with ``ivf_nlist`` k-means cells (0 = ``4 sqrt(N)``), ``ivf_nprobe`` visited.
- ``pqfs``: every vector also as a 4-bit product-quantization code of ``pq_m`` sub-vectors (``IndexPQFastScan``,
  scanned with SIMD: ~1.5 ms per query for 1e6 x 100-d on one core, whatever the data), whose best
  ``refine_k_factor * k`` candidates are re-ranked exactly (``IndexRefineFlat``). Unlike HNSW it keeps its
  recall on unstructured data (recall@10 0.98 on isotropic Gaussian 1e6 x 100-d, where HNSW reaches 0.65).
  FAISS's fast scan takes no ID selector, so a filtered search over more than ``exact_below`` rows searches
  the whole index for more candidates and drops those that fail the filter.

Filters (time range, HARP numbers, latitude bands, splits) become a bitmap of the indexed rows, passed to
FAISS as an ``IDSelectorBitmap``. Approximate kinds lose recall under a selective filter, so a filtered
search whose selection holds at most ``exact_below`` rows is exact over the selected vectors (of any kind;
the selected vectors are kept for the last few filters, so repeated queries with one filter cost ~3 ms per
100k selected 100-d rows on one core, about what HNSW with a selector costs there at much lower recall), the HNSW
``efSearch`` / IVF ``nprobe`` grow as the selected fraction shrinks, and any query that still comes back
with fewer than ``k`` hits is redone exactly over the selection. Results are therefore never short unless
fewer than ``k`` rows pass the filters.

On disk (``write_index``/``read_index``), a directory holds ``index.faiss`` (``faiss.write_index``),
``index_rows.parquet`` (one row per indexed vector, in FAISS id order: ``row`` = the patch's row in
``patches.zarr``/``patches.parquet``, and those of ``record``, ``harpnum``, ``t_rec``, ``time`` (datetime,
parsed from ``t_rec``), ``latitude`` (deg, from ``lat_fwt``) and ``split`` that the patch table has) and
``index.json`` (kind, settings, counts), each written atomically, ``index.json`` last.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_parquet_atomic, write_text_atomic
from ..config import PQ_CENTROIDS, build_settings
from ..errors import SharpgenError
from ..run import ARTEFACTS

KINDS = ("exact", "hnsw", "ivf", "pqfs")
INDEX_FILE, ROWS_FILE, INFO_FILE = (ARTEFACTS[key].name for key in ("index_faiss", "index_rows", "index_info"))
METADATA_COLUMNS = ("record", "harpnum", "t_rec", "split")
LATITUDE_COLUMNS = ("latitude", "lat_fwt")
"""Where the latitude (deg) of a patch is read from, first match wins."""
_SELECTION_CACHE_SIZE = 8
_SELECTION_CACHE_BYTES = 256 * 2**20
"""The selections (ids, bitmap, vectors of up to ``exact_below`` rows) of the last few filters are kept for the
next queries: at most this many filters and (beyond the newest) about this many bytes."""


@dataclass(frozen=True)
class IndexSettings:
    """Settings of the ``index`` stage (schema section ``index``)."""

    SECTION: ClassVar[str] = "index"

    kind: str
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    ivf_nlist: int
    ivf_nprobe: int
    pq_m: int
    refine_k_factor: int
    exact_below: int
    physics_weight: float
    orientation_weight: float


@dataclass(frozen=True)
class Filters:
    """Which indexed patches a search may return; ``None`` = no constraint. All given constraints must hold.

    - ``time_range``: ``(start, end)`` inclusive, JSOC (``2011.02.15_00:12:00_TAI``) or ISO strings or
      datetimes (TAI, as T_REC); either end may be ``None``;
    - ``harpnums``: HARP numbers to keep;
    - ``latitude``: ``(min, max)`` signed heliographic latitude in degrees, inclusive (south < 0);
    - ``abs_latitude``: ``(min, max)`` of ``|latitude|`` in degrees, inclusive (an active-latitude band of both
      hemispheres);
    - ``splits``: dataset splits to keep (``train``, ``val``, ``test``).

    Patches without a time (latitude) fail a time (latitude) filter.
    """

    time_range: tuple | None = None
    harpnums: tuple[int, ...] | None = None
    latitude: tuple[float, float] | None = None
    abs_latitude: tuple[float, float] | None = None
    splits: tuple[str, ...] | None = None

    def __post_init__(self):
        # Tuples keep the filter hashable (masks are cached by filter).
        for name in ("time_range", "harpnums", "latitude", "abs_latitude", "splits"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                    value = (value,)
                object.__setattr__(self, name, tuple(value))
        for name in ("time_range", "latitude", "abs_latitude"):
            value = getattr(self, name)
            if value is not None and len(value) != 2:
                raise SharpgenError(f"filter {name}: give a (min, max) pair, got {value!r}")
        if self.time_range is not None:
            start, end = _timestamp(self.time_range[0], "start"), _timestamp(self.time_range[1], "end")
            if start is not None and end is not None and start > end:
                raise SharpgenError(f"filter time_range: start {self.time_range[0]} is after end {self.time_range[1]}")
        for name, low in (("latitude", -90.0), ("abs_latitude", 0.0)):
            band = getattr(self, name)
            if band is None:
                continue
            if not all(isinstance(v, numbers.Real) and low <= v <= 90.0 for v in band):
                raise SharpgenError(f"filter {name} {_band(band)}: both ends must lie in [{low:g}, 90] degrees")
            if band[0] > band[1]:
                raise SharpgenError(f"filter {name} {_band(band)}: the minimum is above the maximum")

    def describe(self) -> str:
        """The given constraints in words, e.g. ``abs_latitude 10 to 30, splits test``."""
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            pair = item.name in ("time_range", "latitude", "abs_latitude")
            parts.append(f"{item.name} {_band(value) if pair else ' '.join(map(str, value))}")
        return ", ".join(parts) or "none"

    @classmethod
    def from_mapping(cls, mapping: Mapping | None) -> Filters:
        """Build from a mapping with the field names above (e.g. parsed from JSON)."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise SharpgenError(f"unknown filter(s) {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")
        return cls(**mapping)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass
class EmbeddingIndex:
    """A FAISS index (ids 0..N-1) and ``rows``, the metadata of each id (position i = FAISS id i)."""

    index: object
    rows: pd.DataFrame
    settings: IndexSettings
    dim: int
    physics: dict | None = None
    """The physics block's standardization (:func:`~sharpgen.retrieval.physics_vector.train_scale`) when the
    indexed vectors are hybrid (built by :func:`build_index_from_files` with ``settings.physics_weight`` > 0), else
    None: then the vectors are the embeddings alone, whatever the settings say."""
    _selections: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class SearchResult:
    """``rows[i, j]``: the patch row of the j-th match of query i; ``similarity``: its cosine (descending)."""

    rows: np.ndarray
    similarity: np.ndarray


def parse_times(values) -> pd.Series:
    """T_REC strings (JSOC ``2011.02.15_00:12:00_TAI`` or ISO) -> datetime64 (NaT where unparseable)."""
    text = pd.Series(values, dtype="object").astype("string").str.strip()
    jsoc = pd.to_datetime(text.str.replace("_TAI", "", regex=False), format="%Y.%m.%d_%H:%M:%S", errors="coerce")
    iso = pd.to_datetime(text.where(jsoc.isna()), format="ISO8601", errors="coerce")
    return jsoc.fillna(iso).astype("datetime64[ns]")


def _timestamp(value, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else parse_times([value]).iloc[0]
    if pd.isna(moment):
        raise SharpgenError(
            f"filter time_range: cannot read {name} time {value!r} (use 2011.02.15_00:12:00_TAI or ISO)"
        )
    return pd.Timestamp(moment)


def _band(pair) -> str:
    return " to ".join(f"{v:g}" if isinstance(v, numbers.Real) else str(v) for v in pair)


def index_rows_table(table: pd.DataFrame) -> pd.DataFrame:
    """The metadata kept per indexed patch: ``row`` (from a ``row`` column, else the table's index) and
    ``record``, ``harpnum``, ``t_rec``, ``time``, ``latitude``, ``split`` where the table has them."""
    rows = pd.DataFrame({"row": (table["row"] if "row" in table else pd.Series(table.index)).to_numpy(np.int64)})
    for name in METADATA_COLUMNS:
        if name in table:
            rows[name] = table[name].to_numpy()
    if "t_rec" in table:
        rows["time"] = parse_times(table["t_rec"].to_numpy()).to_numpy()
    for name in LATITUDE_COLUMNS:
        if name in table:
            rows["latitude"] = table[name].to_numpy(np.float64)
            break
    return rows


def unit_rows(vectors, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """``(n, d)`` float32 rows scaled to unit L2 norm (a 1-D vector is one row), ``dim`` wide if given; a user error
    for NaN, infinity or an all-zero row (``what`` names them in the message)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        expected = f"(n, {dim})" if dim is not None else "(n, d)"
        raise SharpgenError(f"{what} of shape {np.shape(vectors)}: expected {expected} embeddings")
    if not np.isfinite(array).all():
        raise SharpgenError(f"{what}: embeddings contain NaN or infinity")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise SharpgenError(f"{what}: {int((norms == 0).sum())} all-zero embedding(s) have no direction")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _pq_subvectors(dim: int, requested: int) -> int:
    """``requested`` (which must divide ``dim``), or 0 = the largest divisor of ``dim`` up to ``dim / 2``."""
    if requested:
        if dim % requested:
            raise SharpgenError(f"index setting pq_m = {requested} must divide the embedding dimension {dim}")
        return requested
    return max(m for m in range(1, dim // 2 + 1) if dim % m == 0) if dim > 1 else 1


PQ_TRAINING_ROWS = 200_000
"""Product quantizers are trained on at most this many embeddings (a seeded sample)."""


def _auto_nlist(n: int) -> int:
    # 4 sqrt(N) cells, but at least 39 training points per cell (FAISS warns below that).
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_index(
    embeddings, table: pd.DataFrame, settings: IndexSettings | None = None, threads: int | None = None
) -> EmbeddingIndex:
    """Index ``(N, D)`` ``embeddings`` whose i-th row belongs to the patch described by ``table`` row i.

    ``settings`` None takes the schema's defaults of the ``index`` section.
    """
    settings = settings or build_settings(IndexSettings)
    import faiss

    if threads is not None:
        faiss.omp_set_num_threads(threads)
    vectors = unit_rows(embeddings)
    if len(vectors) == 0:
        raise SharpgenError("no embeddings to index")
    if len(table) != len(vectors):
        raise SharpgenError(f"{len(vectors)} embeddings but {len(table)} metadata rows: they must match row for row")
    n, dim = vectors.shape
    if settings.kind == "exact":
        index = faiss.IndexFlatL2(dim)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_L2)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
    elif settings.kind == "pqfs":
        if n < PQ_CENTROIDS:
            raise SharpgenError(f"index kind pqfs needs at least {PQ_CENTROIDS} embeddings, got {n}; use exact")
        coarse = faiss.IndexPQFastScan(dim, _pq_subvectors(dim, settings.pq_m), 4)
        sample = np.random.default_rng(23).permutation(n)[:PQ_TRAINING_ROWS] if n > PQ_TRAINING_ROWS else slice(None)
        coarse.train(vectors[sample])
        index = faiss.IndexRefineFlat(coarse)
        index.k_factor = settings.refine_k_factor
    else:
        nlist = settings.ivf_nlist or _auto_nlist(n)
        if nlist > n:
            raise SharpgenError(f"index setting ivf_nlist = {nlist} exceeds the {n} embeddings")
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)
        index.cp.seed = 23
        index.cp.max_points_per_centroid = 64  # k-means on <= 64 nlist sampled points: minutes -> seconds at 1e6
        index.train(vectors)
        index.nprobe = min(settings.ivf_nprobe, nlist)
    index.add(vectors)
    if settings.kind == "ivf":
        index.make_direct_map()  # reconstruct() for exact searches over a filtered selection
    return EmbeddingIndex(index, index_rows_table(table).reset_index(drop=True), settings, dim)


def write_index(index: EmbeddingIndex, out_dir: str | os.PathLike) -> Path:
    """Persist ``index`` in ``out_dir`` (``index.faiss``, ``index_rows.parquet``, then ``index.json``)."""
    import faiss

    out_dir = Path(out_dir)
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        faiss.write_index(index.index, str(tmp))
    write_parquet_atomic(index.rows, out_dir / ROWS_FILE)
    info = {
        "kind": index.settings.kind,
        "settings": asdict(index.settings),
        "n": len(index),
        "dim": index.dim,
        "metric": "cosine (L2 on L2-normalized embeddings)",
        "physics": index.physics,
        "faiss_version": faiss.__version__,
    }
    write_text_atomic(out_dir / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return out_dir


def read_index(out_dir: str | os.PathLike) -> EmbeddingIndex:
    """Load an index written by ``write_index``."""
    import faiss

    out_dir = Path(out_dir)
    missing = [name for name in (INFO_FILE, INDEX_FILE, ROWS_FILE) if not (out_dir / name).is_file()]
    if missing:
        raise SharpgenError(f"{out_dir}: not a complete index (missing {', '.join(missing)}); rebuild it")
    info = json.loads((out_dir / INFO_FILE).read_text(encoding="utf-8"))
    index = faiss.read_index(str(out_dir / INDEX_FILE))
    rows = pd.read_parquet(out_dir / ROWS_FILE)
    if index.ntotal != len(rows) or index.ntotal != info["n"] or index.d != info["dim"]:
        raise SharpgenError(f"{out_dir}: index.faiss, index_rows.parquet and index.json disagree; rebuild the index")
    settings = build_settings(IndexSettings, info["settings"])  # an index written before physics: embeddings only
    return EmbeddingIndex(index, rows, settings, int(info["dim"]), info.get("physics"))


def _column(rows: pd.DataFrame, name: str, filter_name: str) -> np.ndarray:
    if name not in rows:
        raise SharpgenError(f"filter {filter_name}: the index has no {name} column (its patch table lacked it)")
    return rows[name].to_numpy()


def filter_mask(index: EmbeddingIndex, filters: Filters) -> np.ndarray:
    """Boolean mask over the indexed rows (FAISS ids) of those that pass ``filters``."""
    rows = index.rows
    mask = np.ones(len(rows), dtype=bool)
    if filters.time_range is not None:
        start, end = (
            _timestamp(value, which) for value, which in zip(filters.time_range, ("start", "end"), strict=True)
        )
        times = _column(rows, "time", "time_range").astype("datetime64[ns]")
        mask &= ~np.isnat(times)
        if start is not None:
            mask &= times >= start.to_datetime64()
        if end is not None:
            mask &= times <= end.to_datetime64()
    if filters.harpnums is not None:
        mask &= np.isin(_column(rows, "harpnum", "harpnums"), np.asarray(filters.harpnums, dtype=np.int64))
    for name, absolute in (("latitude", False), ("abs_latitude", True)):
        band = getattr(filters, name)
        if band is not None:
            latitude = _column(rows, "latitude", name).astype(np.float64)
            latitude = np.abs(latitude) if absolute else latitude
            mask &= (latitude >= float(band[0])) & (latitude <= float(band[1]))  # NaN fails both
    if filters.splits is not None:
        mask &= np.isin(_column(rows, "split", "splits").astype(str), np.asarray(filters.splits, dtype=str))
    return mask


@dataclass(frozen=True)
class _Selection:
    """What a search needs of one filter, computed once: ids, bitmap, and the vectors of a small selection."""

    ids: np.ndarray
    bitmap: np.ndarray
    vectors: np.ndarray | None


def _selection(index: EmbeddingIndex, filters: Filters) -> _Selection:
    key = (filters, index.settings.exact_below)
    cached = index._selections.get(key)
    if cached is not None:
        index._selections.move_to_end(key)
        return cached
    mask = filter_mask(index, filters)
    ids = np.flatnonzero(mask)
    if ids.size == 0:
        raise SharpgenError(f"no indexed patch passes the filters ({filters.describe()}); widen them")
    small = ids.size <= index.settings.exact_below
    vectors = index.index.reconstruct_batch(ids) if small else None
    selection = _Selection(ids, np.packbits(mask, bitorder="little"), vectors)
    index._selections[key] = selection
    while len(index._selections) > 1 and (
        len(index._selections) > _SELECTION_CACHE_SIZE
        or sum(_bytes(cached) for cached in index._selections.values()) > _SELECTION_CACHE_BYTES
    ):
        index._selections.popitem(last=False)
    return selection


def _bytes(selection: _Selection) -> int:
    vectors = 0 if selection.vectors is None else selection.vectors.nbytes
    return selection.ids.nbytes + selection.bitmap.nbytes + vectors


def _exact_over(index: EmbeddingIndex, queries: np.ndarray, k: int, ids: np.ndarray, vectors=None, chunk=262144):
    """Exact top-k among the FAISS ``ids`` (their ``vectors``, else reconstructed chunk by chunk): squared L2."""
    import faiss

    heap = faiss.ResultHeap(len(queries), k)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        base = vectors[start : start + chunk] if vectors is not None else index.index.reconstruct_batch(part)
        distances, local = faiss.knn(queries, base, min(k, len(part)))
        labels = np.where(local >= 0, part[np.maximum(local, 0)], -1)
        if local.shape[1] < k:  # pad a short last chunk
            pad = k - local.shape[1]
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        heap.add_result(np.ascontiguousarray(distances, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I


def _search_params(index: EmbeddingIndex, k: int, selector, fraction: float):
    import faiss

    settings = index.settings
    if settings.kind == "hnsw":
        ef = max(settings.hnsw_ef_search, k)
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(math.ceil(ef / fraction), 16 * ef)))
    if settings.kind == "pqfs":
        return faiss.IndexRefineSearchParameters(k_factor=float(settings.refine_k_factor))
    if settings.kind == "ivf":
        nprobe = math.ceil(settings.ivf_nprobe / fraction)
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(min(nprobe, index.index.nlist)))
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def _post_filtered(index: EmbeddingIndex, queries: np.ndarray, k: int, selection: _Selection, fraction: float):
    """Top-k of the rows in ``selection``, from an unfiltered search for about ``2 k / fraction`` candidates;
    rows with fewer than k passing candidates come back padded with id -1 (the caller redoes them exactly)."""
    wanted = min(len(index), math.ceil(2 * k / fraction))
    distances, ids = index.index.search(queries, wanted, params=_search_params(index, wanted, None, 1.0))
    safe = np.maximum(ids, 0)
    passed = (ids >= 0) & ((selection.bitmap[safe >> 3] >> (safe & 7)) & 1).astype(bool)
    order = np.argsort(~passed, axis=1, kind="stable")[:, :k]  # passing candidates first, best first
    kept = np.take_along_axis(passed, order, axis=1)
    return (
        np.where(kept, np.take_along_axis(distances, order, axis=1), np.inf).astype(np.float32),
        np.where(kept, np.take_along_axis(ids, order, axis=1), -1),
    )


def search(index: EmbeddingIndex, queries, k: int = 9, filters: Filters | Mapping | None = None) -> SearchResult:
    """The ``k`` most similar indexed patches to each query embedding, among those passing ``filters``.

    ``queries``: ``(Q, D)`` or ``(D,)`` embeddings (normalized here). Returns ``(Q, k')`` arrays with
    ``k' = min(k, number of rows passing the filters)``, best match first.
    """
    import faiss

    if k < 1:
        raise SharpgenError(f"k = {k}: ask for at least one match")
    q = unit_rows(queries, index.dim, "queries")
    if isinstance(filters, Mapping):
        filters = Filters.from_mapping(filters)
    selection = None if filters is None or filters.is_empty() else _selection(index, filters)
    selected = len(index) if selection is None else len(selection.ids)
    k = min(k, selected)
    if selection is None:
        distances, ids = index.index.search(q, k, params=_search_params(index, k, None, 1.0))
    elif selection.vectors is not None:
        distances, ids = _exact_over(index, q, k, selection.ids, selection.vectors)
    elif index.settings.kind == "pqfs":  # FAISS's fast scan takes no selector
        distances, ids = _post_filtered(index, q, k, selection, selected / len(index))
    else:
        selector = faiss.IDSelectorBitmap(len(index), faiss.swig_ptr(selection.bitmap))
        distances, ids = index.index.search(q, k, params=_search_params(index, k, selector, selected / len(index)))
    short = (ids < 0).any(axis=1)
    if short.any():  # an approximate search came back short: exact over the selection
        every = np.arange(len(index)) if selection is None else selection.ids
        distances[short], ids[short] = _exact_over(index, q[short], k, every)
    rows = index.rows["row"].to_numpy()[ids]
    return SearchResult(rows=rows, similarity=(1.0 - distances / 2.0).astype(np.float32))


def build_index_from_files(
    embeddings_path: str | os.PathLike,
    table_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: IndexSettings | None = None,
    threads: int | None = None,
    image_size: int | None = None,
) -> EmbeddingIndex:
    """The stage: ``embeddings.npy`` (row i = patch i) + ``patches.parquet`` -> an index in ``out_dir``. With
    ``settings.physics_weight`` > 0 the indexed vectors are the hybrid ones of
    :func:`~sharpgen.retrieval.physics_vector.hybrid_vectors` (the patch table's measured properties of S x S
    patches, ``image_size`` S, beside each embedding)."""
    from .physics_vector import hybrid_vectors, property_targets, train_scale

    settings = settings or build_settings(IndexSettings)
    embeddings_path, table_path = Path(embeddings_path), Path(table_path)
    for path, stage in ((embeddings_path, "embed"), (table_path, "normalize")):
        if not path.is_file():
            raise SharpgenError(f"{path}: not found (run the {stage} stage first)")
    embeddings, table = np.load(embeddings_path, mmap_mode="r"), pd.read_parquet(table_path)
    physics = None
    if settings.physics_weight > 0:
        if image_size is None:
            raise SharpgenError("a hybrid index (index.physics_weight > 0) needs the patches' image_size")
        physics = train_scale(table, image_size)
        embeddings = hybrid_vectors(
            embeddings, property_targets(table, image_size), physics, settings.physics_weight,
            settings.orientation_weight,
        )  # fmt: skip
    index = build_index(embeddings, table, settings, threads)
    index.physics = physics
    write_index(index, out_dir)
    return index
