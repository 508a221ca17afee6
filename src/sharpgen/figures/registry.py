"""Figures of a pipeline run (numbered as in research/paper.md section 8) and the numbers they show.

Two layers:

- ``plot_*`` functions are pure: arrays and tables in, one PNG out (written atomically with the Agg backend,
  through :func:`sharpgen.plotting.save_figure`), and a small dict of the figure's key numbers returned (the
  same numbers appear in the figure's title). Bad input raises :class:`SharpgenError` with one line.
- :func:`make_figure` reads the artefacts of a results directory, calls one ``plot_*`` function and writes its
  numbers next to the PNG as JSON (``name.png`` -> ``name.json``). ``sharpgen figure NAME`` and the
  ``figure_*`` rules of ``workflow/rules/figures.smk`` call it; :data:`FIGURES` lists the names.

Units: patches are normalized fields, 1 unit = 1 kG, clipped to +-1 kG; the paper's properties are in its
normalized units (research/paper.md section 4a); lengths in Mm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_text_atomic
from ..errors import SharpgenError
from ..jsonsafe import json_safe
from ..run import RETRIEVER, STEERING, RunLayout
from . import latent as latent_figures
from .common import PROPERTY_LABELS
from .gan import (
    plot_extremes,
    plot_gan_training,
    plot_power_spectra,
    plot_property_distributions,
    plot_real_vs_generated,
)
from .pipeline import plot_pipeline
from .retrieval import embedding_layout, plot_embedding_map, plot_ssl_training

if TYPE_CHECKING:  # pandas and scipy load only when a figure is drawn: `sharpgen --help` lists FIGURES fast
    import pandas as pd


# ------------------------------------------------------------------------------------- from a results dir


def _read_table(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path, columns=columns) if path.suffix == ".parquet" else pd.read_csv(path)


def _open_patches(store: Path):
    import zarr

    return zarr.open_array(str(store), mode="r")


def _rows(store, rows: np.ndarray) -> np.ndarray:
    return np.asarray(store.get_orthogonal_selection((np.sort(rows), slice(None), slice(None))))


def _pick(candidates: np.ndarray, count: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(candidates)[:count])


def _real_rows(table: pd.DataFrame, split: str | None) -> tuple[np.ndarray, str]:
    if split and "split" in table.columns and (table["split"] == split).any():
        return np.flatnonzero(table["split"].to_numpy() == split), f"real ({split} split)"
    return np.arange(len(table)), "real"


def _pixel_mm(table: pd.DataFrame) -> float | None:
    """The common pixel side in Mm of fixed_scale patches; None when it differs per patch (resize mode)."""
    if "pixel_x_mm" not in table.columns or len(table) == 0:
        return None
    sizes = table["pixel_x_mm"].to_numpy(dtype=np.float64)
    return float(sizes[0]) if np.allclose(sizes, sizes[0], rtol=1e-6) else None


@dataclass(frozen=True)
class Options:
    """Choices of :func:`make_figure` (the CLI's options)."""

    seed: int = 0
    n_patches: int = 16
    max_patches: int = 2000
    split: str = "train"
    n_thumbnails: int = 36
    rulegraph: str | None = None
    renderer: str = "auto"


def _figure_pipeline(run: RunLayout, out: Path, options: Options) -> dict:
    if not options.rulegraph:
        raise SharpgenError("the pipeline figure needs --rulegraph FILE (the output of `snakemake --rulegraph`)")
    try:
        dot = Path(options.rulegraph).read_text(encoding="utf-8")
    except OSError as exc:
        raise SharpgenError(f"cannot read the rule graph {options.rulegraph}: {exc.strerror}") from None
    return plot_pipeline(dot, out, renderer=options.renderer)


def _figure_patches(run: RunLayout, out: Path, options: Options) -> dict:
    table = _read_table(run.path("patch_table"))
    real_rows, label = _real_rows(table, options.split)
    real = _rows(_open_patches(run.path("patches")), _pick(real_rows, options.n_patches, options.seed))
    fake_store = _open_patches(run.path("sample_patches"))
    fake = _rows(fake_store, _pick(np.arange(fake_store.shape[0]), options.n_patches, options.seed + 1))
    return {"real": label, **plot_real_vs_generated(real, fake, out, pixel_mm=_pixel_mm(table), real_label=label)}


def _figure_properties(run: RunLayout, out: Path, options: Options) -> dict:
    table = _read_table(run.path("patch_table"))
    rows, label = _real_rows(table, options.split)
    generated = _read_table(run.path("sample_table"))
    return plot_property_distributions(table.iloc[rows], generated, out, real_label=label)


def _figure_extremes(run: RunLayout, out: Path, options: Options) -> dict:
    import pandas as pd

    from ..data.measure import patch_properties
    from ..data.normalize import Normalization

    table = _read_table(run.path("patch_table"))
    rows, label = _real_rows(table, options.split)
    normalization = Normalization.read(run.path("normalization"))
    store = _open_patches(run.path("patches"))
    real = pd.DataFrame(  # measured on the patches, as the samples are (the table's physical values are native)
        patch_properties(
            _rows(store, _pick(rows, options.max_patches, options.seed)),
            normalization.threshold_gauss,
            normalization.pixel_mm,
        )
    )
    return {"real": label, **plot_extremes(real, _read_table(run.path("sample_table")), out, real_label=label)}


def _figure_embedding(run: RunLayout, out: Path, options: Options) -> dict:
    path = run.path("embeddings")
    embeddings = np.load(path)
    table = _read_table(run.path("patch_table"))
    if len(embeddings) != len(table):
        raise SharpgenError(
            f"{path} has {len(embeddings)} rows but the dataset {len(table)} patches; rerun build_index"
        )
    xy, explained, rows = embedding_layout(embeddings, options.n_thumbnails, options.seed)
    thumbnails = _rows(_open_patches(run.path("patches")), rows)
    if "usflux" in table.columns and (table["usflux"] > 0).all():
        color, color_label = np.log10(table["usflux"].to_numpy()), "log10 unsigned flux [Mx]"
    else:
        color, color_label = table["tuf"].to_numpy(), PROPERTY_LABELS["tuf"]
    return plot_embedding_map(xy, thumbnails, rows, out, color=color, color_label=color_label, explained=explained)


def _figure_spectra(run: RunLayout, out: Path, options: Options) -> dict:
    table = _read_table(run.path("patch_table"))
    real_rows, label = _real_rows(table, options.split)
    real = _rows(_open_patches(run.path("patches")), _pick(real_rows, options.max_patches, options.seed))
    fake_store = _open_patches(run.path("sample_patches"))
    fake = _rows(fake_store, _pick(np.arange(fake_store.shape[0]), options.max_patches, options.seed + 1))
    return {"real": label, **plot_power_spectra(real, fake, out, pixel_mm=_pixel_mm(table))}


def _figure_gan_training(run: RunLayout, out: Path, options: Options) -> dict:
    return plot_gan_training(_read_table(run.path("gan_log")), out)


def _figure_ssl_training(run: RunLayout, out: Path, options: Options) -> dict:
    return plot_ssl_training(_read_table(run.path("ssl_log")), out)


def _figure_retrieval_comparison(run: RunLayout, out: Path, options: Options) -> dict:
    from ..retrieval.evaluate import compare_searches
    from ..retrieval.search import Retriever

    retriever = Retriever.from_run(run.results_dir)
    rows, _ = _real_rows(retriever.table, "test")
    tuf = retriever.table["tuf"].to_numpy(dtype=np.float64)[rows]
    order = rows[np.argsort(np.where(np.isfinite(tuf), tuf, -np.inf), kind="stable")]
    picks = np.unique(order[[len(order) // 2, min(len(order) - 1, (9 * len(order)) // 10)]])
    return compare_searches(retriever, picks, min(5, len(retriever.table) - 1), out)


@dataclass(frozen=True)
class FigureSpec:
    """One figure :func:`make_figure` can draw: what it shows (for ``--help``), what draws it and the artefacts
    of the run it reads (keys of :data:`sharpgen.run.ARTEFACTS`: its rule's inputs)."""

    help: str
    draw: Callable[[RunLayout, Path, Options], dict]
    reads: tuple[str, ...]


FIGURES: dict[str, FigureSpec] = {
    "pipeline": FigureSpec(
        "fig. 1: the pipeline's Snakemake rule graph (needs --rulegraph; Graphviz if present, else matplotlib)",
        _figure_pipeline,
        (),
    ),
    "patches": FigureSpec(
        "fig. 2: random real patches (--split) next to random GAN samples, gray -1..+1 kG",
        _figure_patches,
        ("patches", "patch_table", "sample_patches"),
    ),
    "properties": FigureSpec(
        "fig. 3: histograms of tuf, psep, r_paper, tpf, tnf, area, real (--split) vs generated, with KS",
        _figure_properties,
        ("patch_table", "sample_table"),
    ),
    "extremes": FigureSpec(
        "peak |B| (sunspots), flux imbalance and the 1st/99th percentiles of flux and separation, real (--split) "
        "vs generated, both measured on patches",
        _figure_extremes,
        ("patches", "patch_table", "normalization", "sample_table"),
    ),
    "embedding": FigureSpec(
        "fig. 7: PCA map of the SSL embeddings of every real patch, coloured by flux, with thumbnails",
        _figure_embedding,
        ("embeddings", "patches", "patch_table"),
    ),
    "spectra": FigureSpec(
        "fig. 11 (lite): radial power spectra of real (--split) and generated patches, and their ratio",
        _figure_spectra,
        ("patches", "patch_table", "sample_patches"),
    ),
    "gan-training": FigureSpec(
        "GAN losses and discriminator accuracies per step (gan/train_log.csv)", _figure_gan_training, ("gan_log",)
    ),
    "ssl-training": FigureSpec(
        "SimSiam loss and collapse indicators per step (retrieval/ssl/train_log.csv)",
        _figure_ssl_training,
        ("ssl_log",),
    ),
    "retrieval-comparison": FigureSpec(
        "fig. 10: two real test-split regions (median and 90th-percentile tuf) searched by the SSL search and by "
        "physical properties (Euclidean, Mahalanobis)",
        _figure_retrieval_comparison,
        RETRIEVER,
    ),
    "latent-space": FigureSpec(
        "fig. 4: sampled latents by distance to the tuf/psep/r_paper SVM boundaries and the polarity split, "
        "with thumbnails (at most --max-patches)",
        latent_figures.figure_latent_space,
        (*STEERING, "sample_patches"),
    ),
    "traversals": FigureSpec(
        "fig. 5: the median-flux sample moved along every property's direction, measured values above",
        latent_figures.figure_traversals,
        STEERING,
    ),
    "calibration": FigureSpec(
        "fig. 5 (curves): change of each property along its direction vs. step, median and quartiles",
        latent_figures.figure_calibration,
        ("calibration",),
    ),
    "entanglement": FigureSpec(
        "the plain and conditional entanglement matrices (directions/entanglement.json)",
        latent_figures.figure_entanglement,
        ("entanglement",),
    ),
    "label-score": FigureSpec(
        "the label score: targets met and kept properties held, local vs svm steering (directions/label_score.json)",
        latent_figures.figure_label_score,
        ("label_score_summary",),
    ),
    "conditional-edit": FigureSpec(
        "fig. 6: r_paper edited along its plain direction vs. holding tuf, with both properties per step",
        latent_figures.figure_conditional_edit,
        STEERING,
    ),
}


def numbers_path(out: str | os.PathLike) -> Path:
    """Where :func:`make_figure` writes the numbers of the figure ``out``: the same name with ``.json``."""
    return Path(out).with_suffix(".json")


def make_figure(
    name: str, results_dir: str | os.PathLike, out: str | os.PathLike, options: Options | None = None
) -> dict:
    """Draw the figure ``name`` (a key of :data:`FIGURES`) of the run in ``results_dir`` into the PNG ``out``
    and write its numbers to :func:`numbers_path` (``out`` with ``.json``; NaN written as null). A missing
    artefact it reads is one :class:`SharpgenError` line naming the stage that writes it."""
    if name not in FIGURES:
        raise SharpgenError(f"unknown figure {name!r} (choose from {', '.join(FIGURES)})")
    if Path(out).suffix.lower() != ".png":
        raise SharpgenError(f"figures are PNG files; {out} does not end in .png")
    spec, run = FIGURES[name], RunLayout(results_dir)
    run.require_all(spec.reads)
    numbers = {"figure": name, **spec.draw(run, Path(out), options or Options())}
    write_text_atomic(numbers_path(out), json.dumps(json_safe(numbers), indent=2) + "\n")
    return numbers
