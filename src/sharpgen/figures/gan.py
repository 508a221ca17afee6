"""GAN figures: real vs generated patches (fig. 2), property distributions (fig. 3), power spectra (fig. 11-lite) and
training curves. Patches are normalized fields, 1 unit = 1 kG; lengths in Mm."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SharpgenError
from ..plotting import draw_patch, get_pyplot, save_figure
from ..properties import HISTOGRAM_PROPERTIES
from .common import (
    GENERATED_COLOR,
    LOG_PROPERTIES,
    PROPERTY_LABELS,
    REAL_COLOR,
    fmt,
    plain_log_ticks,
    require_columns,
    require_patches,
    smooth,
)

if TYPE_CHECKING:
    import pandas as pd


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
    real, generated = require_patches(real, "real patches"), require_patches(generated, "generated patches")
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

    require_columns(real, properties, "the real property table")
    require_columns(generated, properties, "the generated property table")
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
            plain_log_ticks(axis.xaxis, edges[-1] - edges[0])
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
        notes = [f"KS = {fmt(distance['ks'])}", f"W1/std = {fmt(distance['w1_over_std'])}"]
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
    ks = ", ".join(f"{name} {fmt(numbers['properties'][name]['ks'])}" for name in properties)
    figure.suptitle(f"Properties, {real_label} vs generated. KS: {ks}", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    save_figure(figure, path)
    return numbers


# ------------------------------------------------------------------------- extremes: sunspots, balance, tails


def _quantile_panel(axis, real: np.ndarray, generated: np.ndarray, name: str, tails: dict, log: bool) -> None:
    """Q-Q plot of ``name``: generated vs real quantiles 1..99 %, the 1:1 line with a +-15 % band, 1st and 99th
    percentiles marked."""
    from ..gan.fidelity import TAIL_QUANTILES

    real, generated = real[np.isfinite(real)], generated[np.isfinite(generated)]
    label = PROPERTY_LABELS.get(name, name)
    if not (real.size and generated.size):  # e.g. no patch of a barely trained generator has two polarities
        empty = "real" if not real.size else "generated"
        axis.text(0.5, 0.5, f"{label}:\nundefined on every {empty} patch", ha="center", va="center",
                  transform=axis.transAxes, fontsize=9)  # fmt: skip
        axis.set_axis_off()
        return
    levels = np.linspace(0.01, 0.99, 99)
    rq, gq = np.quantile(real, levels), np.quantile(generated, levels)
    axis.plot(rq, gq, color=GENERATED_COLOR, lw=1.6, label="generated vs real quantile, 1 % .. 99 %")
    low, high = min(rq.min(), gq.min()), max(rq.max(), gq.max())
    line = np.geomspace(low, high, 50) if log and low > 0 else np.linspace(low, high, 50)
    axis.plot(line, line, color="0.4", lw=0.8, ls="--", label="same distribution")
    axis.fill_between(line, line * 0.85, line * 1.15, color="0.6", alpha=0.2, lw=0, label="±15 %")
    for q, marker in zip(TAIL_QUANTILES, ("v", "^"), strict=True):
        percent = round(100 * q)
        key, ordinal = f"q{percent:02d}", "st" if percent == 1 else "th"
        axis.plot(tails[f"real_{key}"], tails[f"generated_{key}"], marker, color="k", ms=6,
                  label=f"{percent}{ordinal} percentile: {tails[f'{key}_relative']:+.0%}")  # fmt: skip
    if log and low > 0:
        axis.set_xscale("log")
        axis.set_yscale("log")
    axis.set_xlabel(f"real: {label}", fontsize=8)
    axis.set_ylabel(f"generated: {label}", fontsize=8)
    axis.legend(fontsize=6.5, loc="upper left")
    axis.tick_params(labelsize=7)


def plot_extremes(
    real: pd.DataFrame, generated: pd.DataFrame, path: str | os.PathLike, real_label: str = "real"
) -> dict:
    """What a solar physicist looks at first, real vs generated, both measured on patches (tables with the
    columns of :func:`sharpgen.data.measure.patch_properties`): the peak |B| of each patch (sunspots reach the
    1 kG clip), the strong-flux imbalance (``fixed_scale`` runs; a real active region is nearly balanced), and
    Q-Q plots of the unsigned flux and the polarity separation (physical units when the tables have them) with
    their 1st and 99th percentiles. Returns :func:`sharpgen.gan.fidelity.extremes` plus the KS of peak and
    imbalance.
    """
    from ..gan.fidelity import STRONG_IMBALANCE, SUNSPOT_PEAK_KG, distribution_distance, extremes

    require_columns(real, ("peak", "tuf", "psep"), "the real property table")
    require_columns(generated, ("peak", "tuf", "psep"), "the generated property table (rerun sample)")
    numbers = {"n_real": len(real), "n_generated": len(generated), **extremes(real, generated)}
    pyplot = get_pyplot()
    figure, axes = pyplot.subplots(2, 2, figsize=(10.0, 8.4))
    peak_axis, balance_axis, flux_axis, separation_axis = axes.ravel()
    sets = ((real, REAL_COLOR, real_label, True), (generated, GENERATED_COLOR, "generated", False))

    peak = numbers["peak"]
    numbers["peak"]["ks"] = distribution_distance(real["peak"], generated["peak"])["ks"]
    edges = np.linspace(0.0, 1000.0, 41)
    for table, color, label, filled in sets:
        density, _ = np.histogram(np.clip(table["peak"].to_numpy() * 1000.0, 0, 1000), bins=edges, density=True)
        peak_axis.stairs(density, edges, fill=filled, color=color, alpha=0.45 if filled else 1.0, lw=1.4,
                         label=f"{label} (N={len(table)})")  # fmt: skip
    peak_axis.axvline(SUNSPOT_PEAK_KG * 1000, color="k", lw=0.8, ls="--")
    peak_axis.text(
        0.03, 0.96,
        f"peak ≥ {SUNSPOT_PEAK_KG * 1000:.0f} G: {peak['real_sunspot_fraction']:.0%} real, "
        f"{peak['generated_sunspot_fraction']:.0%} generated\nmedian peak: {peak['real_median_kg'] * 1000:.0f} G "
        f"real, {peak['generated_median_kg'] * 1000:.0f} G generated (KS {fmt(peak['ks'])})",
        transform=peak_axis.transAxes, va="top", fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "0.8"},
    )  # fmt: skip
    peak_axis.set_xlabel("peak |B| of the patch [G] (clipped at 1000 G)", fontsize=8)
    peak_axis.set_ylabel("density [1/G]", fontsize=8)
    peak_axis.legend(fontsize=7, loc="center left")
    peak_axis.tick_params(labelsize=7)

    if "imbalance" in numbers:
        balance = numbers["imbalance"]
        balance["ks"] = distribution_distance(real["imbalance"], generated["imbalance"])["ks"]
        edges = np.linspace(-1.0, 1.0, 41)
        for table, color, label, filled in sets:
            values = table["imbalance"].to_numpy(dtype=np.float64)
            density, _ = np.histogram(values[np.isfinite(values)], bins=edges, density=True)
            balance_axis.stairs(density, edges, fill=filled, color=color, alpha=0.45 if filled else 1.0, lw=1.4,
                                label=label)  # fmt: skip
        for side in (-1, 1):
            balance_axis.axvspan(side * STRONG_IMBALANCE, side * 1.0, color="0.85", zorder=0)
        balance_axis.text(
            0.03, 0.96,
            f"median |imbalance|: {balance['real_median_abs']:.2f} real, {balance['generated_median_abs']:.2f} "
            f"generated\n|imbalance| > {STRONG_IMBALANCE}: {balance['real_strong_fraction']:.0%} real, "
            f"{balance['generated_strong_fraction']:.0%} generated (KS {fmt(balance['ks'])})",
            transform=balance_axis.transAxes, va="top", fontsize=7.5,
            bbox={"facecolor": "white", "edgecolor": "0.8"},
        )  # fmt: skip
        balance_axis.set_xlabel("strong-flux imbalance (Φ+ − Φ−) / (Φ+ + Φ−)", fontsize=8)
        balance_axis.set_ylabel("density", fontsize=8)
        balance_axis.tick_params(labelsize=7)
    else:
        balance_axis.text(0.5, 0.5, "flux imbalance needs physical units\n(normalize.mode: fixed_scale)",
                          ha="center", va="center", transform=balance_axis.transAxes, fontsize=9)  # fmt: skip
        balance_axis.set_axis_off()

    tails = numbers["tails"]
    for axis, names in ((flux_axis, ("usflux", "tuf")), (separation_axis, ("psep_mm", "psep"))):
        name = next(name for name in names if name in tails)
        _quantile_panel(
            axis, real[name].to_numpy(dtype=np.float64), generated[name].to_numpy(dtype=np.float64), name,
            tails[name], log=name in LOG_PROPERTIES,
        )  # fmt: skip
    figure.suptitle(
        f"Sunspots, flux balance and tails, {real_label} vs generated: peak ≥ 900 G "
        f"{peak['sunspot_points']:+.0f} points; 1st/99th percentile of "
        + ", ".join(f"{name} {tails[name]['q01_relative']:+.0%}/{tails[name]['q99_relative']:+.0%}"
                    for name in ("tuf", "psep") if name in tails),
        fontsize=9.5,
    )  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    save_figure(figure, path)
    return numbers


# ------------------------------------------------------------------------------------ fig. 7: SSL embedding


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

    real, generated = require_patches(real, "real patches"), require_patches(generated, "generated patches")
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
    plain_log_ticks(bottom.yaxis, float(np.log10(shown.max() / shown.min())) if shown.size else 9.0)
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
        f"Radial power spectra ({size} px). Spectral slope, mean: real {fmt(slopes['real_mean'])}, "
        f"generated {fmt(slopes['generated_mean'])} (KS {fmt(slopes['ks'])})",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers


# ---------------------------------------------------------------------------------------- training curves

GAN_LOG_COLUMNS = ("step", "d_loss", "g_loss", "real_acc", "fake_acc")


def plot_gan_training(log: pd.DataFrame, path: str | os.PathLike) -> dict:
    """GAN training curves from ``gan/train_log.csv``: losses, and the discriminator's accuracy on real and fake.

    Thin lines are every step, thick lines a centred rolling median (losses) or mean (accuracies) over about 2 % of
    the run.
    """
    require_columns(log, GAN_LOG_COLUMNS, "the GAN training log")
    steps = log["step"].to_numpy()
    window = max(1, len(log) // 50)
    pyplot = get_pyplot()
    figure, (losses, accuracy) = pyplot.subplots(2, 1, figsize=(7.0, 5.5), sharex=True)
    final = {}
    for axis, columns in ((losses, ("d_loss", "g_loss")), (accuracy, ("real_acc", "fake_acc"))):
        for name, color in zip(columns, (REAL_COLOR, GENERATED_COLOR), strict=True):
            values = log[name].to_numpy(dtype=np.float64)
            trend = smooth(values, window, median=axis is losses)
            final[name] = float(trend[-1])
            axis.plot(steps, values, color=color, lw=0.5, alpha=0.3)
            axis.plot(steps, trend, color=color, lw=1.6, label=name)
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
        f"GAN training: {numbers['steps']} steps in {fmt(seconds / 60, 1)} min; final d_loss "
        f"{fmt(final['d_loss'])}, g_loss {fmt(final['g_loss'])}",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return numbers
