"""sharpgen in a notebook: open a finished run, generate patches by targets given as astropy Quantities, find their
real matches, measure maps or files. Results are SunPy Maps and pandas tables.

The CLI's code paths, not twins of them: a request is checked by :mod:`sharpgen.latent.requests` (the same
messages as ``sharpgen generate``), steered and written by :func:`sharpgen.latent.generate.steer_and_write`, searched
and written by :func:`sharpgen.retrieval.search.write_query_results`, measured by
:func:`sharpgen.data.measure.fits_properties`. Every file lands where the CLI would put it (or ``out_dir``).
See docs/tutorial.md.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SharpgenError
from .properties import PROPERTIES
from .run import RunLayout

__all__ = ["Generated", "Run", "measure", "open_run", "property_unit"]


def property_unit(name: str):
    """The astropy unit of property ``name`` in the property table (:mod:`sharpgen.properties`); dimensionless
    for fractions, patch diagonals and ratios."""
    import astropy.units as u

    if name not in PROPERTIES:
        raise SharpgenError(f"{name!r}: unknown property (valid: {', '.join(PROPERTIES)})")
    try:
        return u.Unit(PROPERTIES[name].unit.replace("px", "pix").replace("²", "2"))
    except ValueError:
        return u.dimensionless_unscaled


def _in_table_units(name: str, value) -> float:
    """``value`` (a Quantity, or a number already in the table's unit) as a number in ``name``'s unit."""
    import astropy.units as u

    if not isinstance(value, u.Quantity) or name not in PROPERTIES:
        return value  # numbers and unknown names go to the request validator as they are
    unit = property_unit(name)
    try:
        return float(value.to_value(unit))
    except u.UnitConversionError:
        shown = unit.to_string() or "dimensionless"
        raise SharpgenError(f"target {name}: {value} is not in units of {shown} ({PROPERTIES[name].unit})") from None


def _assignments(values: Mapping[str, object]) -> list[str]:
    """``{"usflux": 3e22 * u.Mx}`` -> ``["usflux=3e+22"]``: the ``NAME=VALUE`` form the CLI's validator reads."""
    return [f"{name}={_in_table_units(name, value)!r}" for name, value in values.items()]


@dataclass(frozen=True)
class Generated:
    """Generated patches: ``maps`` (SunPy Maps, field in G), ``table`` (one row per patch: file, converged,
    ``target_*``/``achieved_*``/``error_*`` and every measured property), their ``(N, 100)`` ``latents``, and
    ``out_dir`` holding the FITS files, PNG and CSV."""

    maps: list
    table: pd.DataFrame
    latents: np.ndarray
    out_dir: Path

    @property
    def files(self) -> list[Path]:
        """The FITS files of :attr:`maps`, in order."""
        return [self.out_dir / name for name in self.table["file"]]


class Run:
    """A finished run's results directory (``results_dir`` of its config). Models load on first use."""

    def __init__(self, results_dir: str | os.PathLike, device: str = "auto"):
        self.layout = RunLayout(results_dir)
        if not self.layout.results_dir.is_dir():
            raise SharpgenError(f"{results_dir}: no such results directory (the results_dir of a finished run)")
        self.device = device

    def __repr__(self) -> str:
        return f"sharpgen.open_run({str(self.layout.results_dir)!r})"

    @functools.cached_property
    def steering(self):
        """The generator, directions and samples (:class:`sharpgen.latent.generate.Steering`)."""
        from .latent.generate import load_steering

        return load_steering(self.layout.results_dir, device=self.device)

    @functools.cached_property
    def retriever(self):
        """The encoder, index and real patches (:class:`sharpgen.retrieval.search.Retriever`)."""
        from .retrieval.search import Retriever

        return Retriever.from_run(self.layout.results_dir, device=self.device)

    @property
    def directions(self) -> list[str]:
        """Properties with a latent direction: what :meth:`generate` can target or keep (plus their twins)."""
        return list(self.steering.directions)

    def generate(
        self,
        n: int = 4,
        seed: int = 0,
        keep: Sequence[str] = (),
        tolerance: float = 0.05,
        out_dir: str | os.PathLike | None = None,
        method: str = "local",
        **targets,
    ) -> Generated:
        """``n`` patches that meet ``targets`` (keywords: ``usflux=3e22 * u.Mx``, ``psep_mm=40 * u.Mm``,
        ``tuf=0.05``; a number is taken in the property table's unit) while the ``keep`` properties hold their
        starting values: ``sharpgen generate`` with the same checks, messages and steering ``method``, written
        into ``out_dir`` (default ``<run>/generated``)."""
        from .latent.generate import starting_latents, steer_and_write
        from .latent.requests import check_out_dir, steer_request

        request = steer_request(_assignments(targets), list(keep), tolerance, method=method)
        out = check_out_dir(out_dir or self.layout.user_folder("generate"))
        starts = starting_latents(self.steering, request.targets, n, seed, request.keep)
        result = steer_and_write(self.steering, starts, request, out, "generated")
        return _generated(result.summary, result.latents, out)

    def query(
        self,
        queries,
        k: int = 9,
        out_dir: str | os.PathLike | None = None,
        maps: bool = False,
        one_per_harp: bool = False,
        **filters,
    ) -> pd.DataFrame:
        """The ``k`` real patches nearest each query: a :class:`Generated`, a SunPy Map, a FITS path (field in G,
        normalized as the run normalized its data) or a list of maps or paths. ``filters`` as
        :class:`sharpgen.retrieval.index.Filters` (``time_range``, ``harpnums``, ``latitude``, ``abs_latitude``,
        ``splits``). Returns ``sharpgen query``'s table (one row per query and match, written to
        ``matches.csv`` and ``query.png`` in ``out_dir``, default ``<run>/query``); with ``maps=True`` a
        ``map`` column holds each match as a SunPy Map of its real record (native field in G, its own WCS); with
        ``one_per_harp=True`` only the best observation of each HARP."""
        from .latent.requests import check_out_dir, check_search
        from .retrieval.index import Filters
        from .retrieval.search import write_query_results

        search_filters = Filters(**filters)
        out = check_out_dir(out_dir or self.layout.user_folder("query"))
        check_search(self.retriever, k, search_filters)
        patches, table = self._query_patches(queries)
        matches = write_query_results(out, self.retriever, patches, table, k, search_filters, one_per_harp)
        if maps:
            matches["map"] = self._match_maps(matches["row"].to_numpy())
        return matches

    def _query_patches(self, queries) -> tuple[np.ndarray, pd.DataFrame]:
        """Normalized ``(N, S, S)`` query patches and their table (``label`` + properties)."""
        from .gan.sample import generate

        if isinstance(queries, Generated):
            table = self.steering.measure(queries.latents).reset_index(drop=True)
            table.insert(0, "label", [path.stem for path in queries.files])
            return generate(self.steering.generator, queries.latents, self.steering.device), table
        from .data.fitsio import check_field_file
        from .data.normalize import Normalization
        from .retrieval.search import fits_queries

        items = [queries] if isinstance(queries, str | os.PathLike) or _is_map(queries) else list(queries)
        if not items:
            raise SharpgenError("no query given: pass a Generated result, a SunPy Map, a FITS path or a list of them")
        normalization = Normalization.of_run(self.layout)
        with tempfile.TemporaryDirectory(prefix="sharpgen-query-") as tmp:
            paths = _as_fits_paths(items, Path(tmp))
            for path in paths:
                check_field_file(path)
            patches, table = fits_queries(paths, normalization)
        table["label"] = [_label(item, i) for i, item in enumerate(items)]
        return patches, table

    def _match_maps(self, rows: np.ndarray) -> list:
        """SunPy Maps of the real records behind dataset ``rows``: their native field in G and their own WCS
        (where and when each region was), read from the run's ``raw/`` folder."""
        import sunpy.map

        raw = self.layout.results_dir / "raw"
        maps = []
        for row in rows:
            name = self.retriever.table["file"].iloc[int(row)]
            found = sorted(raw.glob(f"*/{name}"))
            if not found:
                raise SharpgenError(f"{name}: the record of dataset row {row} is not under {raw}; rerun retrieve")
            maps.append(sunpy.map.Map(found[0]))
        return maps


def _is_map(item) -> bool:
    return hasattr(item, "meta") and hasattr(item, "data") and hasattr(item, "save")


def _label(item, index: int) -> str:
    if _is_map(item):
        return str(item.meta.get("t_rec") or item.meta.get("date-obs") or f"map {index}")
    return str(item)


def _as_fits_paths(items: Iterable, folder: Path) -> list[Path]:
    """FITS paths of ``items``: paths as given, SunPy Maps saved (with their header) into ``folder``."""
    paths = []
    for i, item in enumerate(items):
        if _is_map(item):
            path = folder / f"map_{i:03d}.fits"
            with warnings.catch_warnings():  # SunPy drops the long HIERARCH keys (targets): not needed to measure
                warnings.simplefilter("ignore")
                item.save(path)
            paths.append(path)
        elif isinstance(item, str | os.PathLike):
            paths.append(Path(item))
        else:
            raise SharpgenError(f"query {i}: {type(item).__name__} is neither a SunPy Map nor a FITS path")
    return paths


def _generated(summary: pd.DataFrame, latents: np.ndarray, out_dir: Path) -> Generated:
    import sunpy.map

    maps = [sunpy.map.Map(out_dir / name) for name in summary["file"]]
    return Generated(maps=maps, table=summary, latents=np.asarray(latents), out_dir=Path(out_dir))


def open_run(results_dir: str | os.PathLike, device: str = "auto") -> Run:
    """The finished run in ``results_dir``; ``device``: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``."""
    return Run(results_dir, device=device)


def measure(source, size: int = 128, threshold_gauss: float = 150.0) -> pd.Series:
    """Every property of a SunPy Map or a SHARP FITS file (field in G, CEA pixels), as ``sharpgen properties``
    measures it: physical ones on the native field, paper ones on the ``size``-px paper-normalized patch, with
    the strong-field ``threshold_gauss`` in G. Returns a Series of astropy Quantities (units from the property
    table) indexed by property name, plus the file, shape and pixel size."""
    import astropy.units as u

    from .data.measure import fits_properties

    with tempfile.TemporaryDirectory(prefix="sharpgen-measure-") as tmp:
        (path,) = _as_fits_paths([source], Path(tmp))
        row = fits_properties(path, size=size, threshold_gauss=threshold_gauss)
    if _is_map(source):
        row["file"] = _label(source, 0)
    values = {}
    for key, value in row.items():
        if key in PROPERTIES:
            values[key] = value * property_unit(key)
        elif key == "header_usflux":
            values[key] = value * u.Mx
        elif key.endswith("_mm"):
            values[key] = value * u.Mm
        elif key.endswith("_deg"):
            values[key] = value * u.deg
        else:
            values[key] = value
    return pd.Series(values, dtype=object)
