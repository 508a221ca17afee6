"""What the figures of every stage share: property labels, colours, input checks and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SharpgenError
from ..properties import PROPERTIES

if TYPE_CHECKING:
    import pandas as pd

PROPERTY_LABELS = {name: row.label for name, row in PROPERTIES.items()}
LOG_PROPERTIES = frozenset(name for name, row in PROPERTIES.items() if row.log_scale)
"""Properties spanning decades: histogrammed in log bins of their positive values (zeros counted apart)."""

REAL_COLOR, GENERATED_COLOR = "tab:blue", "tab:orange"


def require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise SharpgenError(
            f"{what} lacks the column(s) {', '.join(missing)} (has: {', '.join(map(str, table.columns))})"
        )
    if len(table) == 0:
        raise SharpgenError(f"{what} is empty")


def require_patches(patches, what: str) -> np.ndarray:
    array = np.asarray(patches, dtype=np.float32)
    if array.ndim != 3 or array.shape[1] != array.shape[2] or array.shape[0] == 0:
        raise SharpgenError(f"{what} must be a non-empty (N, S, S) stack of square patches, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SharpgenError(f"{what} contains NaN or infinite values")
    return array


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def smooth(values: np.ndarray, window: int, median: bool = True) -> np.ndarray:
    """Centred rolling median (robust to the spikes of adversarial losses) or mean (for 0/1-like accuracies)."""
    import pandas as pd

    rolling = pd.Series(values).rolling(window, center=True, min_periods=1)
    return (rolling.median() if median else rolling.mean()).to_numpy()


def plain_log_ticks(axis, decades: float) -> None:
    """Label a log-scaled ``axis`` (``ax.xaxis`` or ``ax.yaxis``) with plain numbers (0.02, not 2e-02): powers of
    ten, and when it spans under about a decade and a half, also 2, 3 and 5 times them."""
    from matplotlib.ticker import FuncFormatter

    minor = "235" if decades < 1.5 else ""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in minor else ""))
    axis.set_tick_params(which="both", labelsize=7)
