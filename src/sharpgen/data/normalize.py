"""The ``normalize`` stage: raw FITS records -> ``data/patches.zarr`` + ``data/patches.parquet`` with Dask.

Records are processed in chunks of ``chunk_size``: each Dask task reads its FITS files, normalizes them,
computes physical properties on the native field (G, Mm) and paper properties on the normalized patch, and
writes its rows straight into the matching Zarr chunk. Only the small per-chunk property tables travel back,
so peak memory does not grow with the number of records. Row i of the table describes patch i.

The Zarr store is built under a temporary name and renamed into place when complete; the table is written
last, atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from ..atomic import TEMP_PREFIX, write_parquet_atomic, write_text_atomic
from ..errors import SharpgenError
from ..physics import paper_properties, physical_properties
from ..progress import progress_bar
from ..run import stage_file
from ..units import GAUSS_PER_NORMALIZED_UNIT
from .fitsio import read_sharp
from .scaling import CLIP_GAUSS, MODES, normalize_field, normalized_pixel_mm

if TYPE_CHECKING:
    from ..run import RunLayout

SPLITS = ("train", "val", "test")
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class SplitFractions:
    """Train/val/test fractions of HARPs (schema ``normalize.split``; the config checks that they sum to 1)."""

    SECTION: ClassVar[str] = "normalize.split"

    train: float
    val: float
    test: float

    def as_tuple(self) -> tuple[float, float, float]:
        """The fractions in :data:`SPLITS` order."""
        return tuple(getattr(self, name) for name in SPLITS)


@dataclass(frozen=True)
class NormalizeSettings:
    """Settings of the ``normalize`` stage (schema section ``normalize`` plus the top-level ``image_size``)."""

    SECTION: ClassVar[str] = "normalize"
    CONFIG_KEYS: ClassVar[dict[str, str]] = {"image_size": "image_size"}

    mode: str
    image_size: int
    scale_mm: float
    fill: str
    chunk_size: int
    threshold_gauss: float
    split: SplitFractions


def assign_splits(harpnums: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split label per row such that every HARP lies in exactly one of train/val/test.

    HARPs are shuffled with ``seed`` and cut by cumulative fractions of the number of HARPs.
    """
    unique = np.unique(np.asarray(harpnums))
    order = np.random.default_rng(seed).permutation(unique.size)
    bounds = np.round(np.cumsum(fractions) * unique.size).astype(int)
    label_of_rank = np.array(SPLITS)[np.searchsorted(bounds, np.arange(unique.size), side="right").clip(max=2)]
    label_of_harp = dict(zip(unique[order], label_of_rank, strict=True))
    return np.array([label_of_harp[h] for h in np.asarray(harpnums)], dtype=object)


def normalize_chunk(
    rows: pd.DataFrame, start: int, raw_dir: str, zarr_path: str, settings: NormalizeSettings
) -> pd.DataFrame:
    """Normalize records ``rows`` into Zarr rows ``start:start+len(rows)``; return their property table."""
    import zarr

    size = settings.image_size
    patches = np.zeros((len(rows), size, size), dtype=np.float32)
    table = []
    for i, row in enumerate(rows.itertuples(index=False)):
        record = read_sharp(Path(raw_dir) / row.file)
        native_mm = record.pixel_size_mm
        latitude = float(row.lat_fwt) if np.isfinite(row.lat_fwt) else None
        patches[i] = normalize_field(record.field, native_mm, settings.mode, size, settings.scale_mm, settings.fill)
        physical = physical_properties(
            record.field[None], *native_mm, threshold_gauss=settings.threshold_gauss, latitude_deg=latitude
        )
        sx, sy = normalized_pixel_mm(settings.mode, record.field.shape, native_mm, size, settings.scale_mm)
        entry = {
            "row": start + i,
            "naxis1": record.field.shape[1],
            "naxis2": record.field.shape[0],
            "native_pixel_x_mm": native_mm[0],
            "native_pixel_y_mm": native_mm[1],
            "pixel_x_mm": sx,
            "pixel_y_mm": sy,
        }
        entry.update({name: float(values[0]) for name, values in physical.items()})
        table.append(entry)
    paper = paper_properties(patches, threshold=settings.threshold_gauss / GAUSS_PER_NORMALIZED_UNIT)
    zarr.open_array(zarr_path, mode="r+")[start : start + len(rows)] = patches
    frame = pd.DataFrame(table)
    for name, values in paper.items():
        frame[name] = values
    return frame


@contextlib.contextmanager
def dask_client(scheduler_address: str | None, workers: int) -> Iterator:
    """A ``distributed.Client``: connected to ``scheduler_address``, or to a new LocalCluster of ``workers``."""
    from distributed import Client, LocalCluster

    if scheduler_address:
        try:
            client = Client(scheduler_address, timeout="20s")
        except OSError as exc:
            raise SharpgenError(f"cannot reach the Dask scheduler at {scheduler_address} ({exc})") from exc
        except (ValueError, TypeError) as exc:  # a malformed address: no port, unknown scheme
            raise SharpgenError(
                f"not a Dask scheduler address: {scheduler_address!r} ({exc}; expected e.g. tcp://10.0.0.5:8786)"
            ) from exc
        with client:
            yield client
        return
    with (
        single_threaded_blas(),
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Set one BLAS/OpenMP thread for processes started inside the block (restored afterwards).

    Each Dask worker is one single-threaded process. Snakemake exports ``OMP_NUM_THREADS=<rule threads>`` to
    its jobs and Dask passes it on: N workers x N BLAS threads oversubscribe the cores (measured 2.5x slower).
    """
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _usable_records(manifest_path: Path) -> pd.DataFrame:
    if not manifest_path.is_file():
        raise SharpgenError(f"{manifest_path}: no raw manifest (run the retrieve stage first)")
    manifest = pd.read_parquet(manifest_path)
    usable = manifest[manifest["status"] == "ok"]
    if usable.empty:
        raise SharpgenError(f"{manifest_path}: no usable record (every record was rejected or failed)")
    return usable.sort_values(["harpnum", "t_rec", "record"], kind="stable").reset_index(drop=True)


def build_dataset(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: NormalizeSettings,
    seed: int,
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Normalize every usable record of ``raw_dir`` into ``out_dir/patches.zarr`` + ``out_dir/patches.parquet``,
    and record how in ``out_dir/normalization.json`` (:class:`Normalization`).

    Returns the table (row i describes patch i). Rows are ordered by HARP number, then T_REC.
    """
    import zarr
    from distributed import as_completed

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    records = _usable_records(stage_file(raw_dir, "raw_manifest"))
    size, chunk = settings.image_size, settings.chunk_size
    out_dir.mkdir(parents=True, exist_ok=True)
    final_zarr = stage_file(out_dir, "patches")
    tmp_zarr = out_dir / f"{TEMP_PREFIX}{final_zarr.name}"
    shutil.rmtree(tmp_zarr, ignore_errors=True)
    zarr.create_array(
        store=str(tmp_zarr),
        shape=(len(records), size, size),
        chunks=(chunk, size, size),
        dtype="float32",
        fill_value=0.0,
        zarr_format=3,
    )
    starts = range(0, len(records), chunk)
    with dask_client(scheduler_address, workers) as client:
        task = functools.partial(
            normalize_chunk,
            raw_dir=str(raw_dir.resolve()),
            zarr_path=str(tmp_zarr.resolve()),
            settings=settings,
        )
        futures = client.map(task, [records.iloc[s : s + chunk] for s in starts], list(starts), pure=False)
        parts = []
        bar = progress_bar(total=len(records), desc="normalize", unit="patch", disable=not progress)
        for future in as_completed(futures):
            part = future.result()
            parts.append(part)
            bar.update(len(part))
            future.release()
        bar.close()
    properties = pd.concat(parts).sort_values("row").drop(columns="row").reset_index(drop=True)
    # Columns measured here (native shape, properties) replace any of the same name in the manifest.
    table = pd.concat([records.drop(columns=properties.columns, errors="ignore"), properties], axis=1)
    table["split"] = assign_splits(table["harpnum"].to_numpy(), settings.split.as_tuple(), seed)
    shutil.rmtree(final_zarr, ignore_errors=True)
    os.replace(tmp_zarr, final_zarr)
    Normalization.of_settings(settings).write(stage_file(out_dir, "normalization"))
    write_parquet_atomic(table, stage_file(out_dir, "patch_table"))
    return table


@dataclass(frozen=True)
class Normalization:
    """How a run turned a field in G into a patch: the content of ``data/normalization.json``.

    ``pixel_mm`` is the side of a patch pixel in Mm (``scale_mm`` in ``fixed_scale`` mode; None in ``resize``
    mode, where it differs per patch); ``clip_gauss`` the clip of the field in G; ``threshold_gauss`` the
    strong-field threshold the properties are measured with, in G; ``fill`` what pads a ``fixed_scale`` patch
    (None in ``resize`` mode; a record written before the key existed was padded with ``zero``).
    """

    mode: str
    image_size: int
    pixel_mm: float | None
    clip_gauss: float
    threshold_gauss: float
    fill: str | None = "zero"

    @classmethod
    def of_settings(cls, settings: NormalizeSettings) -> Normalization:
        """What the ``normalize`` stage with ``settings`` does."""
        fixed = settings.mode == "fixed_scale"
        return cls(
            settings.mode,
            settings.image_size,
            settings.scale_mm if fixed else None,
            CLIP_GAUSS,
            settings.threshold_gauss,
            settings.fill if fixed else None,
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> Normalization:
        """Read ``data/normalization.json``; one :class:`SharpgenError` line when it is not one."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
            record = cls(**values)
        except (OSError, ValueError, TypeError) as exc:
            raise SharpgenError(f"{path}: not a normalization record ({exc}); rerun the normalize stage") from None
        if record.mode not in MODES or record.clip_gauss != CLIP_GAUSS:
            raise SharpgenError(f"{path}: mode {record.mode!r}, clip {record.clip_gauss} G cannot be reproduced here")
        return record

    @classmethod
    def of_run(cls, layout: RunLayout, configfile: str | os.PathLike | None = None) -> Normalization:
        """The normalization of the run in ``layout``. A ``configfile`` (given to a command that normalizes a
        user's FITS) must agree with it: a differing key is a one-line :class:`SharpgenError`."""
        from ..config import load_config

        record = cls.read(layout.require("normalization"))
        if configfile is None:
            return record
        config = load_config(configfile)
        section = config["normalize"]
        pairs = [
            ("normalize.mode", section["mode"], record.mode),
            ("image_size", config["image_size"], record.image_size),
            ("normalize.threshold_gauss", section["threshold_gauss"], record.threshold_gauss),
        ]
        if record.pixel_mm is not None:
            pairs.append(("normalize.scale_mm", section["scale_mm"], record.pixel_mm))
            pairs.append(("normalize.fill", section["fill"], record.fill))
        for key, said, held in pairs:
            if said != held if isinstance(said, str) else not math.isclose(said, held, rel_tol=1e-9):
                raise SharpgenError(
                    f"{configfile}: {key} is {said} but the run in {layout.results_dir} used {held} "
                    f"({layout.path('normalization')}); leave out --configfile to use the run's normalization"
                )
        return record

    def write(self, path: str | os.PathLike) -> None:
        """Write the record as JSON, atomically."""
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    def normalize(self, field_gauss: np.ndarray, native_pixel_mm: tuple[float, float]) -> np.ndarray:
        """One native field (G, pixels of ``native_pixel_mm = (sx, sy)`` Mm) as an ``(S, S)`` patch like the run's."""
        return normalize_field(field_gauss, native_pixel_mm, self.mode, self.image_size, self.pixel_mm, self.fill)
