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
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic
from ..errors import SharpgenError
from ..jsonsafe import json_safe
from ..plotting import draw_patch, get_pyplot, save_figure
from ..properties import HISTOGRAM_PROPERTIES, PROPERTIES
from ..run import RETRIEVER, STEERING, RunLayout
from . import latent as latent_figures

if TYPE_CHECKING:  # pandas and scipy load only when a figure is drawn: `sharpgen --help` lists FIGURES fast
    import pandas as pd

PROPERTY_LABELS = {name: row.label for name, row in PROPERTIES.items()}
LOG_PROPERTIES = frozenset(name for name, row in PROPERTIES.items() if row.log_scale)
"""Properties spanning decades: histogrammed in log bins of their positive values (zeros counted apart)."""

REAL_COLOR, GENERATED_COLOR = "tab:blue", "tab:orange"

STAGE_NOTES = {
    "retrieve": "SHARP CEA records\n(JSOC, FITS folder or synthetic)",
    "normalize": "clip to ±1 kG, S×S patches\n+ physical properties",
    "train_gan": "GAN: z ~ N(0, I) → patch",
    "sample": "latents → patches\n+ their properties",
    "fit_directions": "linear SVM per property\n→ latent directions",
    "train_ssl": "SimSiam encoder\nof real patches",
    "build_index": "embeddings + FAISS index\n(nearest real match)",
    "evaluate_retrieval": "generated queries → real matches,\nscored against baselines",
}
"""One-line description of each known rule, printed under its name in the matplotlib pipeline schematic."""


# --------------------------------------------------------------------------------------------- input checks


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise SharpgenError(
            f"{what} lacks the column(s) {', '.join(missing)} (has: {', '.join(map(str, table.columns))})"
        )
    if len(table) == 0:
        raise SharpgenError(f"{what} is empty")


def _require_patches(patches, what: str) -> np.ndarray:
    array = np.asarray(patches, dtype=np.float32)
    if array.ndim != 3 or array.shape[1] != array.shape[2] or array.shape[0] == 0:
        raise SharpgenError(f"{what} must be a non-empty (N, S, S) stack of square patches, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SharpgenError(f"{what} contains NaN or infinite values")
    return array


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _smooth(values: np.ndarray, window: int, median: bool = True) -> np.ndarray:
    """Centred rolling median (robust to the spikes of adversarial losses) or mean (for 0/1-like accuracies)."""
    import pandas as pd

    rolling = pd.Series(values).rolling(window, center=True, min_periods=1)
    return (rolling.median() if median else rolling.mean()).to_numpy()


def _plain_log_ticks(axis, decades: float) -> None:
    """Label a log-scaled ``axis`` (``ax.xaxis`` or ``ax.yaxis``) with plain numbers (0.02, not 2e-02): powers of
    ten, and when it spans under about a decade and a half, also 2, 3 and 5 times them."""
    from matplotlib.ticker import FuncFormatter

    minor = "235" if decades < 1.5 else ""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in minor else ""))
    axis.set_tick_params(which="both", labelsize=7)


# --------------------------------------------------------------------------------------- fig. 1: pipeline


def parse_rulegraph(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes ``{id: rule name}`` and edges ``[(from_id, to_id)]`` of ``snakemake --rulegraph`` DOT text."""
    nodes = dict(re.findall(r'^\s*(\w+)\s*\[\s*label\s*=\s*"([^"]+)"', dot, flags=re.MULTILINE))
    edges = re.findall(r"^\s*(\w+)\s*->\s*(\w+)", dot, flags=re.MULTILINE)
    if not nodes:
        raise SharpgenError("no rules found in the rule graph (expected the DOT text of `snakemake --rulegraph`)")
    unknown = {node for edge in edges for node in edge} - set(nodes)
    if unknown:
        raise SharpgenError(f"the rule graph has edges to undeclared nodes: {', '.join(sorted(unknown))}")
    return nodes, edges


def _collapse_rules(nodes: dict[str, str], edges: list[tuple[str, str]]) -> tuple[dict[str, str], set]:
    """Drop the ``all`` target and merge every ``figure_*`` rule into one node: the schematic shows stages."""
    figures = {node for node, name in nodes.items() if name.startswith("figure_")}
    kept = {node: name for node, name in nodes.items() if name != "all" and node not in figures}
    if figures:
        kept["figures"] = f"figures ({len(figures)} rules)"
    merged = set()
    for source, target in edges:
        source, target = ("figures" if n in figures else n for n in (source, target))
        if source in kept and target in kept and source != target:
            merged.add((source, target))
    return kept, merged


def _transitive_reduction(edges: set) -> set:
    """Drop every edge ``a -> c`` that a longer path ``a -> b -> ... -> c`` implies (the graph is acyclic)."""
    successors: dict[str, set] = {}
    for source, target in edges:
        successors.setdefault(source, set()).add(target)

    def reachable(start: str, skip_direct: str) -> bool:
        todo = [n for n in successors.get(start, ()) if n != skip_direct]
        seen = set()
        while todo:
            node = todo.pop()
            if node == skip_direct:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(successors.get(node, ()))
        return False

    return {(source, target) for source, target in edges if not reachable(source, target)}


def _layers(nodes: dict[str, str], edges: set) -> dict[str, int]:
    """Longest-path layer of every node (sources at layer 0)."""
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for source, target in edges:
            if layer[target] < layer[source] + 1:
                layer[target], changed = layer[source] + 1, True
        if not changed:
            return layer
    raise SharpgenError("the rule graph has a cycle")


def plot_pipeline(rulegraph_dot: str, path: str | os.PathLike, renderer: str = "auto") -> dict:
    """Fig. 1: the pipeline as its Snakemake rule graph.

    ``renderer``: ``dot`` renders the DOT text with Graphviz (``dot -Tpng``, as snakemake's own ``--rulegraph``
    pictures look); ``matplotlib`` lays the stages out left to right (longest-path layers) with a note of what
    each known stage does, the ``all`` target dropped, the ``figure_*`` rules merged into one node, and no arrow
    that a longer path implies (transitive reduction: "runs after", not every file read); ``auto`` uses
    Graphviz when ``dot`` is on PATH, else matplotlib (Graphviz is never required).
    """
    nodes, edges = parse_rulegraph(rulegraph_dot)
    if renderer not in ("auto", "dot", "matplotlib"):
        raise SharpgenError(f"unknown renderer {renderer!r} (choose auto, dot or matplotlib)")
    dot_binary = shutil.which("dot")
    if renderer == "dot" and dot_binary is None:
        raise SharpgenError("renderer 'dot' needs Graphviz's `dot` on PATH; use --renderer matplotlib")
    numbers = {"rules": sorted(set(nodes.values()) - {"all"}), "edges": len(edges)}
    if renderer == "dot" or (renderer == "auto" and dot_binary):
        result = subprocess.run([dot_binary, "-Tpng", "-Gdpi=100"], input=rulegraph_dot.encode(), capture_output=True)
        if result.returncode != 0 or not result.stdout.startswith(b"\x89PNG"):
            raise SharpgenError(f"`dot -Tpng` failed: {result.stderr.decode(errors='replace').strip()[:300]}")
        write_bytes_atomic(path, result.stdout)
        return {**numbers, "renderer": "dot"}

    shown, merged = _collapse_rules(nodes, edges)
    if not shown:
        raise SharpgenError("the rule graph has no rule besides `all` to draw")
    layer = _layers(shown, merged)  # raises on a cycle, before the reduction could loop
    merged = _transitive_reduction(merged)
    columns: dict[int, list[str]] = {}
    for node in sorted(shown, key=lambda n: (layer[n], shown[n])):
        columns.setdefault(layer[node], []).append(node)
    # Order each column by the mean row of its predecessors (fewer crossings), then centre it.
    row: dict[str, float] = {}
    for depth in sorted(columns):
        members = columns[depth]
        if depth:
            parents = {n: [row[s] for s, t in merged if t == n and s in row] for n in members}
            members.sort(key=lambda n: (-np.mean(parents[n]) if parents[n] else 0.0, shown[n]))  # top row first
        for i, node in enumerate(members):
            row[node] = (len(members) - 1) / 2 - i
    width, height, dx, dy = 2.3, 0.95, 3.1, 1.35
    pyplot = get_pyplot()
    tallest = max(len(members) for members in columns.values())
    figure, axis = pyplot.subplots(figsize=(1.0 + 2.2 * len(columns), 1.2 + 1.05 * tallest))
    from matplotlib.patches import FancyBboxPatch

    for node, name in shown.items():
        x, y = layer[node] * dx, row[node] * dy
        axis.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.02,rounding_size=0.15",
                facecolor="#e8f0fb" if node != "figures" else "#f4f4f4",
                edgecolor="#4a6fa5",
                zorder=2,
            )
        )
        note = STAGE_NOTES.get(name, "plots → report" if node == "figures" else "")
        axis.text(x, y + (0.2 if note else 0.0), name, ha="center", va="center", fontsize=8.5, weight="bold", zorder=3)
        if note:
            axis.text(x, y - 0.16, note, ha="center", va="center", fontsize=6.3, linespacing=1.1, zorder=3)
    for source, target in sorted(merged):
        axis.annotate(
            "",
            xy=(layer[target] * dx - width / 2, row[target] * dy),
            xytext=(layer[source] * dx + width / 2, row[source] * dy),
            arrowprops={"arrowstyle": "-|>", "color": "0.45", "lw": 1.1, "shrinkA": 2, "shrinkB": 2},
            zorder=1,
        )
    axis.set_xlim(-width / 2 - 0.2, max(layer.values()) * dx + width / 2 + 0.2)
    axis.set_ylim(-(tallest - 1) / 2 * dy - height / 2 - 0.2, (tallest - 1) / 2 * dy + height / 2 + 0.2)
    axis.set_axis_off()
    axis.set_title(f"sharpgen pipeline: {len(numbers['rules'])} Snakemake rules, data flows left to right", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return {**numbers, "renderer": "matplotlib", "arrows": len(merged)}


# ------------------------------------------------------------------------------- fig. 2: real vs generated


def _scale_bar_mm(field_mm: float) -> float:
    """The largest of 10, 20, 50, 100, 200 Mm that is at most a third of the field of view."""
    choices = [mm for mm in (10, 20, 50, 100, 200) if mm <= field_mm / 3]
    return float(choices[-1]) if choices else field_mm / 3


def plot_real_vs_generated(
    real: np.ndarray,
    generated: np.ndarray,
    path: str | os.PathLike,
    pixel_mm: float | None = None,
    real_label: str = "real",
) -> dict:
    """Fig. 2: real patches (left) next to GAN samples (right), gray from -1 kG (black) to +1 kG (white).

    ``real``, ``generated``: ``(N, S, S)`` normalized patches (1 unit = 1 kG) of the same size S. ``pixel_mm``
    (fixed_scale runs): pixel side in Mm, drawn as a scale bar on the first real patch. The mean |B| of each set
    (over every pixel, in G) is printed above it.
    """
    real, generated = _require_patches(real, "real patches"), _require_patches(generated, "generated patches")
    if real.shape[1:] != generated.shape[1:]:
        raise SharpgenError(f"real patches are {real.shape[1]} px but generated ones {generated.shape[1]} px")
    size = real.shape[1]
    columns = max(1, math.ceil(math.sqrt(max(len(real), len(generated)))))
    rows = math.ceil(max(len(real), len(generated)) / columns)
    cell, gap, bar, top = 1.3, 0.35, 0.9, 0.65  # inches: one patch, between the sets, colour bar, titles
    width, height = 2 * columns * cell + gap + bar, rows * cell + top
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(
        rows,
        2 * columns + 1,
        figsize=(width, height),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * columns + [gap / cell] + [1] * columns, "wspace": 0.04, "hspace": 0.04},
    )
    figure.subplots_adjust(left=0.01, right=1 - bar / width, bottom=0.1 / height, top=1 - top / height)
    image = None
    for offset, patches in ((0, real), (columns + 1, generated)):
        for i, axis in enumerate(axes[:, offset : offset + columns].ravel()):
            axis.set_axis_off()
            if i < len(patches):
                image = draw_patch(axis, patches[i])
    for axis in axes[:, columns]:
        axis.set_axis_off()
    means = {"real": float(np.abs(real).mean()), "generated": float(np.abs(generated).mean())}
    for offset, text in (
        (0, f"{real_label} (mean |B| {means['real'] * 1000:.0f} G)"),
        (columns + 1, f"GAN samples (mean |B| {means['generated'] * 1000:.0f} G)"),
    ):
        first, last = axes[0, offset].get_position(), axes[0, offset + columns - 1].get_position()
        figure.text((first.x0 + last.x1) / 2, first.y1 + 0.12 / height, text, ha="center", va="bottom", fontsize=9)
    if pixel_mm:
        bar_mm = _scale_bar_mm(size * pixel_mm)
        bar_px = bar_mm / pixel_mm
        axes[0, 0].plot([1.5, 1.5 + bar_px], [1.5, 1.5], color="yellow", lw=2, solid_capstyle="butt")
        axes[0, 0].text(1.5 + bar_px / 2, 3.0, f"{bar_mm:g} Mm", color="yellow", fontsize=6, ha="center", va="bottom")
    last = axes[-1, -1].get_position()
    colour_axis = figure.add_axes(
        (1 - bar / width + 0.12 / width, last.y0, 0.12 / width, axes[0, -1].get_position().y1 - last.y0)
    )
    colorbar = figure.colorbar(image, cax=colour_axis, ticks=[-1, -0.5, 0, 0.5, 1])
    colorbar.set_label("$B_r$ [kG] (clipped at ±1 kG)", fontsize=7)
    colorbar.ax.tick_params(labelsize=6)
    scale = f", {pixel_mm:.3g} Mm per pixel" if pixel_mm else ""
    figure.suptitle(f"Real vs generated patches, {size}×{size} px{scale}", fontsize=10, y=1 - 0.08 / height, va="top")
    save_figure(figure, path, dpi=110)
    return {
        "image_size": size,
        "pixel_mm": pixel_mm,
        "n_real": len(real),
        "n_generated": len(generated),
        "real_mean_abs_kg": means["real"],
        "generated_mean_abs_kg": means["generated"],
    }


# --------------------------------------------------------------------------- fig. 3: property distributions


def plot_property_distributions(
    real: pd.DataFrame,
    generated: pd.DataFrame,
    path: str | os.PathLike,
    properties: Sequence[str] = HISTOGRAM_PROPERTIES,
    real_label: str = "real",
) -> dict:
    """Fig. 3: histograms (density) of each property, real vs generated, with the two-sample KS statistic.

    ``real``, ``generated``: tables with one row per patch and a column per property (paper units). Properties
    in :data:`LOG_PROPERTIES` are binned in log space over their positive values; the fraction of zeros and of
    undefined values (NaN, e.g. PSEP of a unipolar patch) is printed in the panel. The KS statistic and
    ``W1/std`` (Wasserstein-1 distance over the real values' standard deviation) use every finite value
    (:func:`sharpgen.gan.fidelity.distribution_distance`). Returns ``{property: distances}`` plus the counts.
    """
    from ..gan.fidelity import distribution_distance

    _require_columns(real, properties, "the real property table")
    _require_columns(generated, properties, "the generated property table")
    pyplot = get_pyplot()
    columns = 3
    rows = math.ceil(len(properties) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4.0 * columns, 3.0 * rows + 0.5), squeeze=False)
    numbers: dict = {"n_real": len(real), "n_generated": len(generated), "properties": {}}
    for axis, name in zip(axes.ravel(), properties, strict=False):
        r = real[name].to_numpy(dtype=np.float64)
        g = generated[name].to_numpy(dtype=np.float64)
        distance = distribution_distance(r, g)
        numbers["properties"][name] = distance
        finite = np.concatenate([r[np.isfinite(r)], g[np.isfinite(g)]])
        if finite.size == 0:
            axis.text(0.5, 0.5, "no finite values", transform=axis.transAxes, ha="center")
            axis.set_xlabel(PROPERTY_LABELS.get(name, name), fontsize=8)
            continue
        positive = finite[finite > 0]
        log = name in LOG_PROPERTIES and positive.size > 1 and positive.max() > positive.min()
        if log:  # density per dex of the positive values, so the shape does not depend on the bin widths
            edges = np.linspace(np.log10(positive.min()), np.log10(positive.max()), 41)
            axis.set_xscale("log")
            _plain_log_ticks(axis.xaxis, edges[-1] - edges[0])
        else:
            low, high = finite.min(), finite.max()
            edges = np.linspace(low, high if high > low else low + 1.0, 41)
        for values, color, label, filled in (
            (r, REAL_COLOR, f"{real_label} (N={len(r)})", True),
            (g, GENERATED_COLOR, f"generated (N={len(g)})", False),
        ):
            shown = values[np.isfinite(values)]
            shown = np.log10(shown[shown > 0]) if log else shown
            if shown.size:
                density, _ = np.histogram(shown, bins=edges, density=True)
                alpha = 0.45 if filled else 1.0
                x = 10.0**edges if log else edges
                axis.stairs(density, x, fill=filled, color=color, alpha=alpha, lw=1.4, label=label)
        notes = [f"KS = {_fmt(distance['ks'])}", f"W1/std = {_fmt(distance['w1_over_std'])}"]
        for tag, fraction in (
            ("undefined", (distance["real_nan_fraction"], distance["generated_nan_fraction"])),
            ("zero", (np.mean(r == 0), np.mean(g == 0)) if log else (0.0, 0.0)),
        ):
            if max(fraction) > 0:
                notes.append(f"{tag}: {fraction[0]:.0%} / {fraction[1]:.0%}")
        box = {"facecolor": "white", "edgecolor": "0.8", "alpha": 0.85}
        scaled = np.log10(positive) if log else finite
        right = np.median(scaled) < (scaled.min() + scaled.max()) / 2  # the notes go where the mass is not
        x, align = (0.97, "right") if right else (0.03, "left")
        axis.text(x, 0.96, "\n".join(notes), transform=axis.transAxes, ha=align, va="top", fontsize=7.5, bbox=box)
        axis.set_xlabel(PROPERTY_LABELS.get(name, name), fontsize=8)
        axis.set_ylabel("density per dex" if log else "density", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(properties) :]:
        axis.set_axis_off()
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.955), frameon=False)
    ks = ", ".join(f"{name} {_fmt(numbers['properties'][name]['ks'])}" for name in properties)
    figure.suptitle(f"Properties, {real_label} vs generated. KS: {ks}", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    save_figure(figure, path)
    return numbers


# ------------------------------------------------------------------------------------ fig. 7: SSL embedding


def embedding_layout(
    embeddings: np.ndarray, n_thumbnails: int = 36, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D PCA map of ``(N, D)`` embeddings and the rows to show as thumbnails.

    Rows are L2-normalized first (the index compares them by cosine similarity). Returns ``(xy, explained,
    rows)``: ``(N, 2)`` coordinates on the first two principal components, their fractions of the variance, and
    up to ``n_thumbnails`` rows spread over the map (in each cell of a grid over it, the point nearest the cell's
    centre; a seeded subset when more cells are occupied than thumbnails wanted).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] < 3 or embeddings.shape[1] < 2:
        raise SharpgenError(f"embeddings must be (N >= 3, D >= 2), got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise SharpgenError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    centred = unit - unit.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    variance = singular**2
    explained = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    grid = max(1, math.ceil(math.sqrt(n_thumbnails)))
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    cell = np.minimum(((xy - low) / span * grid).astype(int), grid - 1)
    centres = low + (cell + 0.5) * span / grid
    distance = np.linalg.norm((xy - centres) / span, axis=1)
    order = np.lexsort((distance, cell[:, 1], cell[:, 0]))
    keys = cell[order, 0] * grid + cell[order, 1]
    first = order[np.r_[True, keys[1:] != keys[:-1]]]
    if len(first) > n_thumbnails:
        first = np.random.default_rng(seed).choice(first, n_thumbnails, replace=False)
    return xy, explained, np.sort(first)


def plot_embedding_map(
    xy: np.ndarray,
    thumbnails: np.ndarray,
    thumbnail_rows: np.ndarray,
    path: str | os.PathLike,
    color: np.ndarray | None = None,
    color_label: str = "",
    explained: Sequence[float] | None = None,
) -> dict:
    """Fig. 7: real patches on the 2-D map of their SSL embeddings, with thumbnails of some of them.

    ``xy``: ``(N, 2)`` coordinates (e.g. from :func:`embedding_layout`); ``thumbnails``: ``(K, S, S)`` patches
    drawn at ``xy[thumbnail_rows]``; ``color``: optional ``(N,)`` value coloring the points (e.g. log10 of the
    unsigned flux); ``explained``: variance fractions of the two axes, for their labels.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise SharpgenError(f"map coordinates must be (N, 2), got shape {xy.shape}")
    thumbnail_rows = np.asarray(thumbnail_rows, dtype=int)
    thumbnails = _require_patches(thumbnails, "thumbnails") if len(thumbnail_rows) else np.zeros((0, 1, 1))
    if len(thumbnails) != len(thumbnail_rows) or (len(thumbnail_rows) and thumbnail_rows.max() >= len(xy)):
        raise SharpgenError(f"{len(thumbnails)} thumbnails for rows {thumbnail_rows.tolist()} of {len(xy)} points")
    if color is not None and len(color) != len(xy):
        raise SharpgenError(f"{len(color)} colour values for {len(xy)} points")
    from matplotlib.colors import Normalize
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    pyplot = get_pyplot()
    figure, axis = pyplot.subplots(figsize=(9.0, 7.5))
    points = axis.scatter(
        xy[:, 0], xy[:, 1], c=color if color is not None else "0.4", s=7, cmap="viridis", alpha=0.75, linewidths=0
    )
    if color is not None:
        colorbar = figure.colorbar(points, ax=axis, fraction=0.04, pad=0.02)
        colorbar.set_label(color_label, fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
    zoom = 30.0 / thumbnails.shape[-1] if len(thumbnails) else 1.0
    for row, patch in zip(thumbnail_rows, thumbnails, strict=True):
        image = OffsetImage(
            patch, cmap="gray", norm=Normalize(-1.0, 1.0), zoom=zoom, origin="lower", interpolation="nearest"
        )
        axis.add_artist(
            AnnotationBbox(image, xy[row], frameon=True, pad=0.1, bboxprops={"edgecolor": "0.3", "lw": 0.5})
        )
    labels = ("PC 1", "PC 2")
    if explained is not None:
        labels = tuple(
            f"{label} ({fraction:.0%} of the variance)" for label, fraction in zip(labels, explained, strict=True)
        )
    axis.set_xlabel(labels[0], fontsize=8)
    axis.set_ylabel(labels[1], fontsize=8)
    axis.tick_params(labelsize=7)
    total = float(sum(explained)) if explained is not None else float("nan")
    axis.set_title(
        f"SSL embeddings of {len(xy)} real patches, PCA of the L2-normalized vectors "
        f"(2 PCs: {_fmt(100 * total, 0)}% of the variance); thumbnails ±1 kG",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    explained = [] if explained is None else [float(fraction) for fraction in explained]
    return {"n_points": len(xy), "n_thumbnails": len(thumbnail_rows), "explained_variance": explained}


# ----------------------------------------------------------------------------- fig. 11-lite: power spectra


def plot_power_spectra(
    real: np.ndarray, generated: np.ndarray, path: str | os.PathLike, pixel_mm: float | None = None
) -> dict:
    """Fig. 11 (lite): azimuthally averaged power spectra of real and generated patches, and their ratio.

    ``real``, ``generated``: ``(N, S, S)`` normalized patches. Top: median (line) and interquartile range
    (band) over the patches of ``|FFT|^2`` per integer wavenumber k (cycles per patch; a top axis gives the
    wavelength in Mm when ``pixel_mm`` is known). Bottom: generated median / real median. The log-log slope of
    each patch's spectrum (:func:`sharpgen.gan.fidelity.power_spectrum_slopes`) is compared with the KS statistic.
    """
    from ..gan.fidelity import distribution_distance, power_spectrum_slopes, radial_power_spectra

    real, generated = _require_patches(real, "real patches"), _require_patches(generated, "generated patches")
    if real.shape[1:] != generated.shape[1:]:
        raise SharpgenError(f"real patches are {real.shape[1]} px but generated ones {generated.shape[1]} px")
    size = real.shape[1]
    if size < 8:
        raise SharpgenError(f"patches of {size} px are too small for a power spectrum (need at least 8 px)")
    k, real_power = radial_power_spectra(real)
    _, generated_power = radial_power_spectra(generated)
    numbers: dict = {"image_size": size, "n_real": len(real), "n_generated": len(generated), "k": k.tolist()}
    try:
        slopes = distribution_distance(power_spectrum_slopes(real), power_spectrum_slopes(generated))
    except ValueError:  # too few wavenumbers in the fit band for tiny patches
        slopes = {"real_mean": float("nan"), "generated_mean": float("nan"), "ks": float("nan")}
    numbers["slope"] = slopes
    pyplot = get_pyplot()
    figure, (top, bottom) = pyplot.subplots(
        2, 1, figsize=(6.5, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    medians = {}
    for power, color, label in ((real_power, REAL_COLOR, "real"), (generated_power, GENERATED_COLOR, "generated")):
        q25, q50, q75 = np.percentile(power, [25, 50, 75], axis=0)
        medians[label] = q50
        top.fill_between(k, np.maximum(q25, 1e-12), np.maximum(q75, 1e-12), color=color, alpha=0.25, lw=0)
        top.plot(k, np.maximum(q50, 1e-12), color=color, lw=1.6, label=f"{label} (N={len(power)}), median and IQR")
    top.set_xscale("log")
    top.set_yscale("log")
    top.set_ylabel("power $|\\hat B(k)|^2$ [kG$^2$]", fontsize=8)
    top.legend(fontsize=7)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = medians["generated"] / medians["real"]
    numbers["median_ratio"] = [float(value) for value in ratio]
    bottom.axhline(1.0, color="0.5", lw=0.8, ls="--")
    bottom.plot(k, ratio, color="k", lw=1.2)
    bottom.set_yscale("log")
    shown = ratio[np.isfinite(ratio) & (ratio > 0)]
    _plain_log_ticks(bottom.yaxis, float(np.log10(shown.max() / shown.min())) if shown.size else 9.0)
    bottom.set_ylabel("generated / real", fontsize=8)
    bottom.set_xlabel("wavenumber k [cycles per patch]", fontsize=8)
    for axis in (top, bottom):
        axis.tick_params(labelsize=7)
    if pixel_mm:
        field = size * pixel_mm

        def wavelength(x):  # k [cycles per patch] <-> wavelength [Mm]; its own inverse
            return field / np.maximum(x, 1e-9)

        secondary = top.secondary_xaxis("top", functions=(wavelength, wavelength))
        secondary.set_xlabel("wavelength [Mm]", fontsize=8)
        secondary.tick_params(labelsize=7)
    figure.suptitle(
        f"Radial power spectra ({size} px). Spectral slope, mean: real {_fmt(slopes['real_mean'])}, "
        f"generated {_fmt(slopes['generated_mean'])} (KS {_fmt(slopes['ks'])})",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


# ---------------------------------------------------------------------------------------- training curves

GAN_LOG_COLUMNS = ("step", "d_loss", "g_loss", "real_acc", "fake_acc")
SSL_LOG_COLUMNS = ("step", "loss", "output_std", "effective_rank")


def plot_gan_training(log: pd.DataFrame, path: str | os.PathLike) -> dict:
    """GAN training curves from ``gan/train_log.csv``: losses, and the discriminator's accuracy on real and fake.

    Thin lines are every step, thick lines a centred rolling median (losses) or mean (accuracies) over about 2 % of
    the run.
    """
    _require_columns(log, GAN_LOG_COLUMNS, "the GAN training log")
    steps = log["step"].to_numpy()
    window = max(1, len(log) // 50)
    pyplot = get_pyplot()
    figure, (losses, accuracy) = pyplot.subplots(2, 1, figsize=(7.0, 5.5), sharex=True)
    final = {}
    for axis, columns in ((losses, ("d_loss", "g_loss")), (accuracy, ("real_acc", "fake_acc"))):
        for name, color in zip(columns, (REAL_COLOR, GENERATED_COLOR), strict=True):
            values = log[name].to_numpy(dtype=np.float64)
            smooth = _smooth(values, window, median=axis is losses)
            final[name] = float(smooth[-1])
            axis.plot(steps, values, color=color, lw=0.5, alpha=0.3)
            axis.plot(steps, smooth, color=color, lw=1.6, label=name)
        axis.legend(fontsize=7)
        axis.tick_params(labelsize=7)
    losses.set_ylabel("loss", fontsize=8)
    accuracy.set_ylabel("discriminator accuracy", fontsize=8)
    accuracy.set_ylim(-0.03, 1.03)
    accuracy.axhline(0.5, color="0.6", lw=0.8, ls="--")
    accuracy.set_xlabel("training step", fontsize=8)
    seconds = float(log["seconds_per_step"].sum()) if "seconds_per_step" in log.columns else float("nan")
    numbers = {"steps": int(steps.max()), "train_seconds": seconds, "final": final}
    figure.suptitle(
        f"GAN training: {numbers['steps']} steps in {_fmt(seconds / 60, 1)} min; final d_loss "
        f"{_fmt(final['d_loss'])}, g_loss {_fmt(final['g_loss'])}",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


def plot_ssl_training(log: pd.DataFrame, path: str | os.PathLike) -> dict:
    """SimSiam training curves from ``retrieval/ssl/train_log.csv``: loss and the two collapse indicators.

    ``loss``: symmetrised negative cosine (-1 = both views agree perfectly). ``output_std``: about 1 for spread
    outputs, towards 0 for complete collapse. ``effective_rank``: how many directions the embeddings use;
    towards 1 is dimensional collapse. Epoch boundaries are thin vertical lines.
    """
    _require_columns(log, SSL_LOG_COLUMNS, "the SSL training log")
    steps = log["step"].to_numpy()
    window = max(1, len(log) // 50)
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(3, 1, figsize=(7.0, 7.0), sharex=True)
    final = {}
    for axis, name, label in zip(
        axes,
        ("loss", "output_std", "effective_rank"),
        ("loss (-1 = views agree)", "output_std (1 healthy, 0 collapsed)", "effective rank (1 = collapsed)"),
        strict=True,
    ):
        values = log[name].to_numpy(dtype=np.float64)
        smooth = _smooth(values, window)
        final[name] = float(smooth[-1])
        axis.plot(steps, values, color=REAL_COLOR, lw=0.5, alpha=0.35)
        axis.plot(steps, smooth, color=REAL_COLOR, lw=1.6)
        axis.set_ylabel(label, fontsize=8)
        axis.tick_params(labelsize=7)
        if "epoch" in log.columns:
            for step in steps[np.flatnonzero(np.diff(log["epoch"].to_numpy()))]:
                axis.axvline(step + 0.5, color="0.85", lw=0.6, zorder=0)
    axes[0].axhline(-1.0, color="0.5", lw=0.8, ls="--")
    axes[1].axhline(1.0, color="0.5", lw=0.8, ls="--")
    axes[1].axhline(0.0, color="tab:red", lw=0.8, ls=":")
    axes[2].axhline(1.0, color="tab:red", lw=0.8, ls=":")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("training step", fontsize=8)
    epochs = int(log["epoch"].max()) + 1 if "epoch" in log.columns else None
    numbers = {"steps": int(steps.max()), "epochs": epochs, "final": final}
    figure.suptitle(
        f"SimSiam training: {numbers['steps']} steps; final loss {_fmt(final['loss'], 3)}, output_std "
        f"{_fmt(final['output_std'])}, effective rank {_fmt(final['effective_rank'], 1)}",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


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
        "fig. 10: two real test-split regions (median and 90th-percentile tuf) searched by SSL embedding and by "
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
