"""Figures written by the stages: patch grids (PNG), always atomically, with a non-interactive backend."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .atomic import atomic_path


def get_pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (figures are only ever written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def draw_patch(axis, patch: np.ndarray):
    """Show one normalized patch (1 unit = 1 kG) on ``axis``: gray from -1 kG (black) to +1 kG (white), row 0 at
    the bottom (north up, as a CEA map), no axes. Returns the image (for a colour bar)."""
    axis.set_axis_off()
    return axis.imshow(patch, cmap="gray", vmin=-1.0, vmax=1.0, origin="lower", interpolation="nearest")


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a matplotlib ``figure`` to the PNG ``path`` atomically, then close it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi)
    finally:
        get_pyplot().close(figure)


def save_patch_grid(
    patches: np.ndarray,
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    columns: int | None = None,
    title: str | None = None,
) -> None:
    """Write ``(N, S, S)`` normalized patches (1 unit = 1 kG) as a grid of magnetograms to the PNG ``path``.

    Gray scale from -1 kG (black) to +1 kG (white), row 0 at the bottom (north up, as a CEA map); one title
    per panel when ``titles`` is given.
    """
    pyplot = get_pyplot()
    patches = np.asarray(patches)
    n = len(patches)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.3 * bool(title)))
    for i, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.set_axis_off()
        if i < n:
            draw_patch(axis, patches[i])
            if titles is not None:
                axis.set_title(titles[i], fontsize=6)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
