"""Figures of the latent directions (paper figs. 4-6): latent space with the SVM boundary, traversal grids,
property-vs-step calibration curves, the entanglement matrices, plain vs. conditional editing, and the label
score of the steering.

Each ``plot_*`` function takes arrays/tables, writes one PNG atomically and returns the key numbers it shows.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import SharpgenError
from ..latent.directions import DirectionSet
from ..plotting import draw_patch, get_pyplot, save_figure

Generate = Callable[[np.ndarray], np.ndarray]
"""``(N, 100)`` latents -> ``(N, S, S)`` normalized patches."""
Measure = Callable[[np.ndarray], pd.DataFrame]


def plot_latent_space(
    directions: DirectionSet,
    latents: np.ndarray,
    values: pd.DataFrame,
    patches: np.ndarray,
    properties: Sequence[str],
    path: str | os.PathLike,
    thumbnails: int = 12,
) -> dict:
    """Paper fig. 4: per property, the sampled latents at (signed distance to the property's SVM boundary on
    their side, signed distance to the split boundary), coloured by the property, with thumbnails of a few
    generated patches. The vertical line is the property's boundary, the horizontal one the split's."""
    missing = [name for name in properties if name not in directions or name not in values]
    if missing:
        raise SharpgenError(f"latent-space figure: no direction or values for {', '.join(missing)}")
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(1, len(properties), figsize=(4.2 * len(properties), 4.2), squeeze=False)
    sides = directions.side_of(latents)
    vertical = directions.split.score(latents) if directions.split is not None else np.zeros(len(latents))
    shown = np.random.default_rng(0).choice(len(latents), size=min(thumbnails, len(latents)), replace=False)
    numbers = {}
    for axis, name in zip(axes[0], properties, strict=True):
        score = np.empty(len(latents))
        for side in directions.sides:
            on_side = sides == side
            score[on_side] = directions.plain[name][side].score(latents[on_side])
        color = np.log10(np.clip(values[name].to_numpy(dtype=np.float64), 1e-6, None))
        points = axis.scatter(score, vertical, c=color, s=3, cmap="viridis", linewidths=0)
        figure.colorbar(points, ax=axis, label=f"log10 {name}", fraction=0.046)
        width, height = 0.12 * max(np.ptp(score), 1e-6), 0.07 * max(np.ptp(vertical), 1e-6)
        for i in shown:  # thumbnails centred on their latents, in data coordinates
            bounds = [score[i] - width / 2, vertical[i] - height / 2, width, height]
            draw_patch(axis.inset_axes(bounds, transform=axis.transData), patches[i])
        axis.axvline(0.0, color="k", linewidth=0.8)
        axis.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
        accuracy = directions.accuracy(name)
        axis.set_title(f"{name}: held-out SVM accuracy {accuracy:.2f}", fontsize=9)
        axis.set_xlabel(f"distance to the {name} boundary (latent units)", fontsize=8)
        axis.set_ylabel("distance to the polarity boundary" if directions.split is not None else "", fontsize=8)
        numbers[name] = {"heldout_accuracy": accuracy}
    figure.suptitle("latent space of the generator: SVM boundaries (solid) and polarity split (dashed)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


TRAVERSAL_QUANTILES = np.linspace(0.05, 0.95, 9)
"""Frames of a traversal row: these quantiles of the property along the start's path."""
PATH_POINTS = 81
"""Latents measured along each SVM direction, from ``-max_step`` to ``+max_step``, to place the frames."""

Path = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""property -> ``(positions (K,), latents (K, 100))``: its traversal from the figure's start, in order."""


def svm_paths(directions: DirectionSet, start: np.ndarray, max_step: float, conditions: Sequence[str] = ()) -> Path:
    """Traversals along each property's SVM direction on ``start``'s side (with ``conditions``, the conditional
    one), ``PATH_POINTS`` steps in ``[-max_step, max_step]`` latent units, kept on that side."""
    start = np.asarray(start, dtype=np.float64).reshape(1, -1)
    steps = np.linspace(-max_step, max_step, PATH_POINTS)

    def path(name: str) -> tuple[np.ndarray, np.ndarray]:
        return steps, directions.stepped(name, np.repeat(start, len(steps), axis=0), steps, conditions)

    return path


def local_paths(steering, start: np.ndarray, step: float, count: int) -> Path:
    """Local traversals (:func:`sharpgen.latent.steering.local_path`) of each property of ``steering``'s directions
    from ``start``: ``count`` steps of ``step`` sample standard deviations either way, holding the others."""
    from ..latent.steering import local_path

    names = list(steering.directions)
    spread = [steering.spread(name) for name in names]
    start = np.asarray(start, dtype=np.float64).reshape(1, -1)

    def path(name: str) -> tuple[np.ndarray, np.ndarray]:
        positions, latents = local_path(steering.jacobian, start, names, name, spread, step, count)
        return positions, latents[:, 0]

    return path


def rising_points(values: np.ndarray) -> np.ndarray:
    """Indices, in path order, of the longest run of a path's finite ``values`` that only rises (a longest
    strictly increasing subsequence; the first of equal candidates): the part of the path along which the
    property moves one way. A path stopped at the polarity boundary repeats a value, and a thresholded property
    jumps back where a distant blob crosses the threshold: neither enters."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    length = np.ones(finite.size, dtype=np.int64)
    before = np.full(finite.size, -1)
    for j in range(finite.size):
        for i in range(j):
            if values[finite[i]] < values[finite[j]] and length[i] + 1 > length[j]:
                length[j], before[j] = length[i] + 1, i
    chain = []
    k = int(np.argmax(length)) if finite.size else -1
    while k >= 0:
        chain.append(finite[k])
        k = before[k]
    return np.asarray(chain[::-1], dtype=np.int64)


def quantile_frames(values: np.ndarray, quantiles: Sequence[float] = TRAVERSAL_QUANTILES) -> np.ndarray:
    """Indices into a path's ``values`` of the frames nearest each quantile of the values along its rising part
    (:func:`rising_points`), one frame per point: increasing in value and in position along the path."""
    values = np.asarray(values, dtype=np.float64)
    rising = rising_points(values)
    if rising.size == 0:
        return np.zeros(0, dtype=np.int64)
    levels = np.quantile(values[rising], quantiles)
    picked = [int(rising[np.argmin(np.abs(values[rising] - level))]) for level in levels]
    return np.asarray(sorted(set(picked)), dtype=np.int64)


def plot_traversal_grid(
    generate: Generate,
    measure: Measure,
    paths: Path,
    start: np.ndarray,
    properties: Sequence[str],
    path: str | os.PathLike,
    position: str = "t",
    description: str = "",
    quantiles: Sequence[float] = TRAVERSAL_QUANTILES,
) -> dict:
    """Paper fig. 5, placed by value: one row per property. Along its traversal from ``start`` (``paths``) the
    frames are the latents at the ``quantiles`` of the property's values on the rising part of that path
    (:func:`quantile_frames`), so each row runs from low to high in path order and none is wasted where a path
    stalls (at the polarity boundary). Each
    frame is titled with the property's value, its ``position`` on the path and the largest relative change of
    any other row's property from ``start``'s value (the drift: a direction that moves only its own property
    shows small ones). ``description`` (what the paths are, and the unit of ``position``) ends the title."""
    pyplot = get_pyplot()
    start = np.asarray(start, dtype=np.float64).reshape(1, -1)
    base = measure(start).iloc[0]
    columns = len(quantiles)
    figure, axes = pyplot.subplots(
        len(properties), columns, figsize=(1.5 * columns, 1.9 * len(properties)), squeeze=False
    )
    numbers = {"quantiles": [float(q) for q in quantiles], "values": {}, "steps": {}, "drift": {}}
    for row, name in enumerate(properties):
        steps, latents = paths(name)
        table = measure(latents)
        frames = quantile_frames(table[name].to_numpy(dtype=np.float64), quantiles)
        patches = generate(latents[frames]) if frames.size else []
        drift = {}
        for other in properties:
            if other != name:
                with np.errstate(divide="ignore", invalid="ignore"):
                    drift[other] = (table[other].to_numpy(np.float64)[frames] - base[other]) / abs(base[other])
        for column in range(columns):
            axis = axes[row, column]
            if column >= frames.size:
                axis.axis("off")
                continue
            draw_patch(axis, patches[column])
            title = f"{name}={table[name].iloc[frames[column]]:.3g}, {position}={steps[frames[column]]:+.1f}"
            worst = max(drift, key=lambda o: np.nan_to_num(abs(drift[o][column]), nan=-1.0), default=None)
            if worst is not None and np.isfinite(drift[worst][column]):
                title += f"\n{worst} {drift[worst][column]:+.0%}"
            axis.set_title(title, fontsize=5.5)
        axes[row, 0].text(
            -0.15, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
        numbers["values"][name] = [float(v) for v in table[name].to_numpy(np.float64)[frames]]
        numbers["steps"][name] = [float(steps[i]) for i in frames]
        numbers["drift"][name] = {other: [float(v) for v in values] for other, values in drift.items()}
    title = (
        f"latent traversals: frames at the {quantiles[0]:.0%}-{quantiles[-1]:.0%} quantiles of each property along "
        f"the rising part of its path ({description}; second line: the largest change of another property)"
    )
    figure.suptitle(textwrap.fill(title, width=int(18 * 1.5 * columns)), fontsize=8)
    height = 1.9 * len(properties)  # inches; the margins in inches: the title, the row names
    figure.subplots_adjust(
        left=0.45 / (1.5 * columns), right=0.99, top=1 - 1.0 / height, bottom=0.05 / height, wspace=0.08, hspace=0.45
    )
    save_figure(figure, path)
    return numbers


def plot_calibration(calibration: pd.DataFrame, properties: Sequence[str], path: str | os.PathLike) -> dict:
    """Property change vs. step along its own direction: median and interquartile band over the random starts,
    plain (solid) and conditional (dashed) directions."""
    needed = {"direction", "kind", "step"}
    if not needed <= set(calibration.columns):
        raise SharpgenError(f"calibration table: missing columns {', '.join(sorted(needed - set(calibration)))}")
    pyplot = get_pyplot()
    columns = min(4, len(properties))
    rows = -(-len(properties) // columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    numbers = {}
    for axis, name in zip(axes.ravel(), properties, strict=False):
        for kind, style in (("plain", "-"), ("conditional", "--")):
            curve = calibration[(calibration["direction"] == name) & (calibration["kind"] == kind)]
            if curve.empty:
                continue
            axis.plot(
                curve["step"], curve[f"{name}_median"], style, color="C0" if kind == "plain" else "C1", label=kind
            )
            axis.fill_between(
                curve["step"], curve[f"{name}_q25"], curve[f"{name}_q75"], alpha=0.2,
                color="C0" if kind == "plain" else "C1",
            )  # fmt: skip
            numbers.setdefault(name, {})[kind] = {
                "step": curve["step"].tolist(), "median_change": curve[f"{name}_median"].tolist()
            }  # fmt: skip
        axis.axhline(0.0, color="0.6", linewidth=0.6)
        axis.set_title(f"{name} along its direction", fontsize=9)
        axis.set_xlabel("step (latent units)", fontsize=8)
        axis.set_ylabel(f"change of {name}", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(properties) :]:
        axis.set_axis_off()
    axes.ravel()[0].legend(fontsize=7)
    figure.suptitle("calibration: median and interquartile range over random starting latents", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


ENTANGLEMENT_KINDS = {
    "plain": "plain SVM directions",
    "conditional": "conditional SVM directions",
    "local": "local directions (generate, edit)",
}
"""The matrices of ``entanglement.json`` shown side by side (those present), and their panel titles."""


def plot_entanglement(entanglement: dict, path: str | os.PathLike) -> dict:
    """The entanglement matrices side by side (:data:`ENTANGLEMENT_KINDS`): the paper's plain SVM directions,
    their conditional versions and the local directions ``generate`` and ``edit`` use. Row = direction, column =
    property, slope in units of the property's sample spread relative to the row's own property (diagonal = 1)."""
    properties = entanglement["properties"]
    kinds = [kind for kind in ENTANGLEMENT_KINDS if kind in entanglement]
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(
        1, len(kinds), figsize=(3.0 + 0.55 * len(properties) * len(kinds), 0.5 * len(properties) + 2.2),
        squeeze=False,
    )  # fmt: skip
    axes = list(axes[0])
    numbers = {}
    for axis, kind in zip(axes, kinds, strict=True):
        matrix = np.array([[entanglement[kind][row][col] for col in properties] for row in properties], dtype=float)
        image = axis.imshow(matrix, cmap="RdBu_r", vmin=-1.5, vmax=1.5)
        for i in range(len(properties)):
            for j in range(len(properties)):
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        axis.set_xticks(range(len(properties)), properties, rotation=45, fontsize=8)
        axis.set_yticks(range(len(properties)), properties, fontsize=8)
        off = np.abs(matrix[~np.eye(len(properties), dtype=bool)])
        median = float(np.nanmedian(off)) if off.size else float("nan")
        axis.set_title(f"{ENTANGLEMENT_KINDS[kind]}\nmedian |off-diagonal| {median:.2f}", fontsize=9)
        axis.set_xlabel("property that changes", fontsize=8)
        numbers[kind] = {"median_abs_off_diagonal": median}
    axes[0].set_ylabel("direction moved along", fontsize=8)
    figure.colorbar(image, ax=list(axes), fraction=0.03, label="slope / own slope (in sample std)")
    save_figure(figure, path)
    return numbers


LABEL_SCORE_PANELS = (
    ("single", "met", "single targets met"),
    ("joint", "met", "joint targets met: quantile grid"),
    ("joint_support", "met", "joint targets met: on the joint support"),
    ("keep", "held", "kept property held, by moved property"),
)
"""The panels of :func:`plot_label_score`: ``(kind, fraction shown, title)``."""


def plot_label_score(document: dict, path: str | os.PathLike) -> dict:
    """The label score of ``directions/label_score.json`` (``score_directions``): per panel of
    :data:`LABEL_SCORE_PANELS`, the fraction of requests from random starts that met their targets (or held their
    kept property within the tolerance) per named property, one bar per steering method; joint and kept requests
    also among those the generator supports (dots: ``met_supported``, ``held_supported``). Titles give each
    method's mean."""
    methods = list(document["methods"])
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(1, len(LABEL_SCORE_PANELS), figsize=(16.0, 4.4), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    numbers = {method: {} for method in methods}
    for axis, (kind, key, title) in zip(axes[0], LABEL_SCORE_PANELS, strict=True):
        named = list(dict.fromkeys(n for method in methods for n in document["methods"][method].get(kind, {})))
        means = []
        for k, method in enumerate(methods):
            entries = document["methods"][method].get(kind, {})
            values = np.array([entries[n][key] if n in entries else np.nan for n in named], dtype=float)
            x = np.arange(len(named)) + (k - (len(methods) - 1) / 2) * width
            axis.bar(x, values, width, label=method)
            if kind != "single":
                supported = [entries[n].get(f"{key}_supported", np.nan) if n in entries else np.nan for n in named]
                axis.plot(x, supported, "k.", markersize=8, label="supported requests" if k == 0 else None)
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            numbers[method][f"{kind}_{key}"] = mean
            means.append(f"{method} {mean:.2f}")
        axis.set_xticks(range(len(named)), [n.replace(" x ", " x\n") for n in named], fontsize=8)
        axis.set_ylim(0.0, 1.05)
        axis.set_title(f"{title}\nmean: {', '.join(means)}", fontsize=9)
        axis.grid(axis="y", linewidth=0.4, alpha=0.5)
    axes[0][0].set_ylabel(f"fraction of requests within {document['tolerance']:.0%}", fontsize=8)
    handles, labels = axes[0][1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=8, frameon=False)
    figure.subplots_adjust(top=0.8, bottom=0.16, left=0.05, right=0.99, wspace=0.18)
    save_figure(figure, path)
    return numbers


def plot_conditional_edit(
    generate: Generate,
    measure: Measure,
    directions: DirectionSet,
    start: np.ndarray,
    primal: str,
    held: str,
    steps: np.ndarray,
    path: str | os.PathLike,
) -> dict:
    """Paper fig. 6: ``primal`` edited along its plain direction (top row) and along the direction that holds
    ``held`` (bottom row), each panel titled with both values, and the two properties vs. step below."""
    if primal not in directions or held not in directions:
        raise SharpgenError(f"conditional-edit figure: needs directions for {primal!r} and {held!r}")
    pyplot = get_pyplot()
    steps = np.asarray(steps, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64).reshape(1, -1)
    figure = pyplot.figure(figsize=(1.5 * len(steps), 6.2))
    grid = figure.add_gridspec(3, len(steps), height_ratios=[1, 1, 1.6])
    numbers, curves = {}, {}
    for row, (kind, conditions) in enumerate((("plain", ()), ("conditional", (held,)))):
        try:
            latents = directions.stepped(primal, np.repeat(start, len(steps), axis=0), steps, conditions)
        except SharpgenError:  # primal's direction is held's: nothing moves primal and holds held
            axis = figure.add_subplot(grid[row, :])
            axis.set_axis_off()
            axis.text(0.5, 0.5, f"no direction holds {held}: in this run {primal}'s direction is {held}'s",
                      ha="center", va="center", fontsize=9)  # fmt: skip
            numbers[kind] = None
            continue
        patches, table = generate(latents), measure(latents)
        for column, patch in enumerate(patches):
            axis = figure.add_subplot(grid[row, column])
            draw_patch(axis, patch)
            axis.set_title(
                f"{primal}={table[primal].iloc[column]:.3g}\n{held}={table[held].iloc[column]:.3g}", fontsize=6
            )
        curves[kind] = table
        change = {name: float(table[name].iloc[-1] - table[name].iloc[0]) for name in (primal, held)}
        numbers[kind] = change
    axis_primal = figure.add_subplot(grid[2, : len(steps) // 2])
    axis_held = figure.add_subplot(grid[2, len(steps) // 2 :])
    for kind, style in (("plain", "-o"), ("conditional", "--s")):
        if kind in curves:
            axis_primal.plot(steps, curves[kind][primal], style, markersize=3, label=kind)
            axis_held.plot(steps, curves[kind][held], style, markersize=3, label=kind)
    for axis, name in ((axis_primal, primal), (axis_held, held)):
        axis.set_xlabel("step (latent units)", fontsize=8)
        axis.set_ylabel(name, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7)
    figure.suptitle(f"editing {primal}: plain direction (top) vs. holding {held} (middle)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


LOCAL_FIGURE_STEPS = 10
"""Steps either way of each local traversal in the traversals figure (of ``directions.local_step`` each): +-2
standard deviations at the default 0.2. At +-4 the first-order holds drift apart and the far ends of some paths
leave the latents the generator was trained on (R tenfold, blocky textures)."""

TRAVERSAL_COLUMNS = 9
"""Patches per row of the conditional-edit figure (steps from -max_step to +max_step of the run's directions)."""


def _run_steering(run):
    from ..latent.generate import load_steering

    return load_steering(run.results_dir)


def _generate(steering) -> Generate:
    from ..gan.sample import generate

    return lambda latents: generate(steering.generator, latents, steering.device)


def _median_start(steering, name: str = "tuf") -> np.ndarray:
    """The sampled latent whose ``name`` is the median of the samples (a typical active region)."""
    values = steering.samples[name if name in steering.samples else steering.samples.columns[1]].to_numpy(float)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")
    return np.asarray(steering.sample_latents[order[np.isfinite(values).sum() // 2]], dtype=np.float64)


def _max_step(run) -> float:
    """The directions' ``max_step`` (latent units): how far the traversal figures step either way."""
    import json

    return float(json.loads(run.path("directions").read_text())["settings"]["max_step"])


def _steps(run) -> np.ndarray:
    return np.linspace(-_max_step(run), _max_step(run), TRAVERSAL_COLUMNS)


def figure_latent_space(run, out, options) -> dict:
    """``sharpgen figure latent-space``: :func:`plot_latent_space` of the first ``max_patches`` samples."""
    import zarr

    steering = _run_steering(run)
    stored = zarr.open_array(str(run.path("sample_patches")), mode="r")
    count = min(options.max_patches, len(steering.samples), stored.shape[0])
    shown = [name for name in ("tuf", "psep", "r_paper") if name in steering.directions] or list(steering.directions)
    patches = stored[:count]
    latents = np.asarray(steering.sample_latents[:count], dtype=np.float64)
    return plot_latent_space(steering.directions, latents, steering.samples.iloc[:count], patches, shown, out)


def figure_traversals(run, out, options) -> dict:
    """``sharpgen figure traversals``: :func:`plot_traversal_grid` from the median-flux sample, along the local
    directions ``generate`` and ``edit`` use (the SVM directions where the run has no local traversals)."""
    import json

    steering = _run_steering(run)
    properties = list(steering.directions)
    start = _median_start(steering)
    document = json.loads(run.path("directions").read_text())
    settings = document["settings"]
    if "local" in json.loads(run.path("entanglement").read_text()):
        step, count = settings["local_step"], LOCAL_FIGURE_STEPS
        paths = local_paths(steering, start, step, count)
        description = (
            f"local directions, holding the other rows' properties to first order; s: wanted change in sample std, "
            f"{-step * count:+.1f} to {step * count:+.1f}"
        )
        position = "s"
    else:
        paths = svm_paths(steering.directions, start, settings["max_step"])
        description = (
            f"SVM directions; t: step in latent units, {-settings['max_step']:+.1f} to {settings['max_step']:+.1f}"
        )
        position = "t"
    return plot_traversal_grid(
        _generate(steering), steering.measure, paths, start, properties, out, position, description
    )


def figure_calibration(run, out, options) -> dict:
    """``sharpgen figure calibration``: :func:`plot_calibration` of ``directions/calibration.parquet``."""
    calibration = pd.read_parquet(run.path("calibration"))
    return plot_calibration(calibration, list(dict.fromkeys(calibration["direction"])), out)


def figure_entanglement(run, out, options) -> dict:
    """``sharpgen figure entanglement``: :func:`plot_entanglement` of ``directions/entanglement.json``."""
    import json

    return plot_entanglement(json.loads(run.path("entanglement").read_text()), out)


def figure_label_score(run, out, options) -> dict:
    """``sharpgen figure label-score``: :func:`plot_label_score` of ``directions/label_score.json``."""
    import json

    return plot_label_score(json.loads(run.path("label_score_summary").read_text()), out)


def figure_conditional_edit(run, out, options) -> dict:
    """``sharpgen figure conditional-edit``: :func:`plot_conditional_edit` of ``r_paper`` holding ``tuf``
    (the first two directions when the run has not both)."""
    steering = _run_steering(run)
    names = list(steering.directions)
    primal, held = ("r_paper", "tuf") if {"r_paper", "tuf"} <= set(names) else (names[-1], names[0])
    if primal == held:
        raise SharpgenError("the conditional-edit figure needs at least two directions")
    return plot_conditional_edit(
        _generate(steering), steering.measure, steering.directions, _median_start(steering), primal, held,
        _steps(run), out,
    )  # fmt: skip
