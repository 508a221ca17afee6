"""Retrieval figures: the SSL embedding map (fig. 7) and the SimSiam training curves."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SharpgenError
from ..plotting import get_pyplot, save_figure
from .common import (
    REAL_COLOR,
    fmt,
    require_columns,
    require_patches,
    smooth,
)

if TYPE_CHECKING:
    import pandas as pd


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
    thumbnails = require_patches(thumbnails, "thumbnails") if len(thumbnail_rows) else np.zeros((0, 1, 1))
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
        f"(2 PCs: {fmt(100 * total, 0)}% of the variance); thumbnails ±1 kG",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    explained = [] if explained is None else [float(fraction) for fraction in explained]
    return {"n_points": len(xy), "n_thumbnails": len(thumbnail_rows), "explained_variance": explained}


# ----------------------------------------------------------------------------- fig. 11-lite: power spectra


SSL_LOG_COLUMNS = ("step", "loss", "output_std", "effective_rank")


def plot_ssl_training(log: pd.DataFrame, path: str | os.PathLike) -> dict:
    """SSL training curves from ``retrieval/ssl/train_log.csv``: loss and the two collapse indicators.

    ``loss``: the objective's (SimSiam's symmetrised negative cosine, -1 = both views agree perfectly; VICReg's
    invariance + variance + covariance, 0 at best). ``output_std``: about 1 for spread outputs, towards 0 for
    complete collapse. ``effective_rank``: RankMe of a batch of embeddings, how many directions they use;
    towards 1 is dimensional collapse. ``property_loss``, where the log has it (``ssl.property_weight`` > 0): the
    property head's mean squared error in standard deviations (1 = no better than the train-split mean), in a
    fourth panel. Epoch boundaries are thin vertical lines.
    """
    require_columns(log, SSL_LOG_COLUMNS, "the SSL training log")
    steps = log["step"].to_numpy()
    window = max(1, len(log) // 50)
    panels = {
        "loss": "loss",
        "output_std": "output_std (1 healthy, 0 collapsed)",
        "effective_rank": "effective rank, RankMe (1 = collapsed)",
    }
    if "property_loss" in log.columns and np.isfinite(log["property_loss"].to_numpy(dtype=np.float64)).any():
        panels["property_loss"] = "property MSE (std$^2$)"
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(7.0, 2.5 * len(panels) - 0.5), sharex=True)
    final = {}
    for axis, (name, label) in zip(axes, panels.items(), strict=True):
        values = log[name].to_numpy(dtype=np.float64)
        trend = smooth(values, window)
        final[name] = float(trend[-1])
        axis.plot(steps, values, color=REAL_COLOR, lw=0.5, alpha=0.35)
        axis.plot(steps, trend, color=REAL_COLOR, lw=1.6)
        axis.set_ylabel(label, fontsize=8)
        axis.tick_params(labelsize=7)
        if "epoch" in log.columns:
            for step in steps[np.flatnonzero(np.diff(log["epoch"].to_numpy()))]:
                axis.axvline(step + 0.5, color="0.85", lw=0.6, zorder=0)
    axes[1].axhline(1.0, color="0.5", lw=0.8, ls="--")
    axes[1].axhline(0.0, color="tab:red", lw=0.8, ls=":")
    axes[2].axhline(1.0, color="tab:red", lw=0.8, ls=":")
    axes[2].set_ylim(bottom=0)
    axes[-1].set_xlabel("training step", fontsize=8)
    epochs = int(log["epoch"].max()) + 1 if "epoch" in log.columns else None
    numbers = {"steps": int(steps.max()), "epochs": epochs, "final": final}
    figure.suptitle(
        f"SSL training: {numbers['steps']} steps; final loss {fmt(final['loss'], 3)}, output_std "
        f"{fmt(final['output_std'])}, effective rank {fmt(final['effective_rank'], 1)}"
        + (f", property MSE {fmt(final['property_loss'], 3)}" if "property_loss" in final else ""),
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers
