"""Figures of the latent directions: each writes a PNG and returns the numbers it shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sharpgen.errors import SharpgenError
from sharpgen.figures.latent import (
    plot_calibration,
    plot_conditional_edit,
    plot_entanglement,
    plot_latent_space,
    plot_traversal_grid,
    svm_paths,
)
from sharpgen.latent.directions import Direction, DirectionSet

SIZE = 16
PNG = b"\x89PNG\r\n\x1a\n"


def unit(index: int) -> np.ndarray:
    vector = np.zeros(100)
    vector[index] = 1.0
    return vector


def direction(name: str, index: int, sign: float = 1.0) -> Direction:
    return Direction(name, sign * unit(index), offset=0.0, accuracy=0.9, n_train=10, n_heldout=10)


# q grows with |z0| (folded by the split on z0's sign, like the flux), r follows z1 on both sides.
DIRECTIONS = DirectionSet(
    split=direction("lead_sign", 0),
    plain={
        "q": {"low": direction("q", 0, -1.0), "high": direction("q", 0)},
        "r": {"low": direction("r", 1), "high": direction("r", 1)},
    },
)


def generate(latents: np.ndarray) -> np.ndarray:
    """A blob whose amplitude is |z0| and whose size grows with z1."""
    latents = np.asarray(latents, dtype=np.float64)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    width = 2.0 + np.clip(latents[:, 1], -1.5, 3.0)
    blob = np.exp(-(xx**2 + yy**2)[None] / (2 * width[:, None, None] ** 2))
    return (np.tanh(np.abs(latents[:, 0]))[:, None, None] * blob).astype(np.float32)


def measure(latents: np.ndarray) -> pd.DataFrame:
    latents = np.asarray(latents, dtype=np.float64)
    return pd.DataFrame({"q": np.abs(latents[:, 0]), "r": latents[:, 1]})


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG


def test_traversal_frames_sit_at_quantiles_of_the_property_and_stalled_steps_count_once(tmp_path):
    start = 0.5 * unit(0)
    paths = svm_paths(DIRECTIONS, start, 2.0)
    numbers = plot_traversal_grid(
        generate, measure, paths, start, ["q", "r"], tmp_path / "t.png", quantiles=[0.05, 0.5, 0.95]
    )
    assert_png(tmp_path / "t.png")
    # q = |z0| on the high side: from 0.5 down it stops at z0 = 0 (half the path is one latent), up to 2.5
    q, q_steps = numbers["values"]["q"], numbers["steps"]["q"]
    assert q[0] < 0.2 and q[2] > 2.2  # the 5th and 95th percentiles of 0 to 2.5
    assert 1.0 < q[1] < 1.5  # the median of the distinct frames (~1.25), not of the path with its repeats (0.5)
    assert q == sorted(q) and q_steps == sorted(q_steps)
    r = numbers["values"]["r"]
    np.testing.assert_allclose(r, np.quantile(np.linspace(-2, 2, 81), [0.05, 0.5, 0.95]), atol=0.05)
    # r's direction (z1) leaves q alone: no drift; q's direction (z0) leaves r alone
    np.testing.assert_allclose(numbers["drift"]["r"]["q"], 0.0, atol=1e-9)


def test_quantile_frames_are_distinct_ordered_by_value_and_skip_undefined_points():
    from sharpgen.figures.latent import quantile_frames

    values = np.array([0.0, 0.0, 0.0, 0.0, np.nan, 1.0, 2.0, 3.0, 4.0])
    frames = quantile_frames(values, [0.0, 0.05, 0.5, 1.0])
    assert list(frames) == [0, 6, 8]  # 0.0 once (the first of the repeats), the median 2.0 and the top 4.0
    assert quantile_frames(np.full(4, np.nan)).size == 0


def test_frames_follow_the_rising_part_of_a_path_so_a_row_reads_in_path_order():
    """A thresholded property jumps back along a path (a distant blob crosses the threshold): the frames skip the
    jump and stay in path order, so the row reads left to right as one continuous move."""
    from sharpgen.figures.latent import quantile_frames, rising_points

    values = np.array([0.0, 1.0, 5.0, 2.0, 3.0, 4.0, 6.0, 5.5])
    assert list(rising_points(values)) == [0, 1, 3, 4, 5, 6]
    frames = quantile_frames(values, [0.0, 0.5, 1.0])
    assert list(frames) == [0, 3, 6]  # the median of 0, 1, 2, 3, 4, 6 is 2.5: 2.0 comes first
    assert list(rising_points(np.array([3.0, 2.0, 1.0]))) == [0]


def test_conditional_edit_reports_the_change_of_both_properties(tmp_path):
    numbers = plot_conditional_edit(
        generate, measure, DIRECTIONS, 0.5 * unit(0), "r", "q", np.linspace(-1, 1, 5), tmp_path / "c.png"
    )
    assert_png(tmp_path / "c.png")
    assert numbers["plain"]["r"] == pytest.approx(2.0) and numbers["conditional"]["q"] == pytest.approx(0.0)
    with pytest.raises(SharpgenError, match="needs directions"):
        plot_conditional_edit(generate, measure, DIRECTIONS, unit(0), "r", "missing", [0.0, 1.0], tmp_path / "x.png")


def test_latent_space_places_samples_by_boundary_distance(tmp_path):
    latents = np.random.default_rng(0).standard_normal((60, 100))
    numbers = plot_latent_space(
        DIRECTIONS, latents, measure(latents), generate(latents), ["q", "r"], tmp_path / "l.png", thumbnails=4
    )
    assert_png(tmp_path / "l.png")
    assert numbers == {"q": {"heldout_accuracy": 0.9}, "r": {"heldout_accuracy": 0.9}}
    with pytest.raises(SharpgenError, match="no direction or values for s"):
        plot_latent_space(DIRECTIONS, latents, measure(latents), generate(latents), ["s"], tmp_path / "x.png")


def test_calibration_and_entanglement_figures_show_the_stored_numbers(tmp_path):
    steps = np.linspace(-1, 1, 3)
    calibration = pd.DataFrame({
        "direction": "q", "kind": np.repeat(["plain", "conditional"], 3), "step": np.tile(steps, 2),
        "q_median": np.tile(steps, 2), "q_q25": np.tile(steps - 0.1, 2), "q_q75": np.tile(steps + 0.1, 2),
    })  # fmt: skip
    numbers = plot_calibration(calibration, ["q"], tmp_path / "cal.png")
    assert_png(tmp_path / "cal.png")
    assert numbers["q"]["plain"]["median_change"] == [-1.0, 0.0, 1.0]
    with pytest.raises(SharpgenError, match="missing columns"):
        plot_calibration(calibration.drop(columns="kind"), ["q"], tmp_path / "x.png")
    matrix = {"q": {"q": 1.0, "r": 0.5}, "r": {"q": -0.25, "r": 1.0}}
    entanglement = {"properties": ["q", "r"], "plain": matrix, "conditional": {k: dict(v) for k, v in matrix.items()}}
    entanglement["conditional"]["q"]["r"] = 0.05
    numbers = plot_entanglement(entanglement, tmp_path / "e.png")
    assert_png(tmp_path / "e.png")
    assert numbers["plain"]["median_abs_off_diagonal"] == pytest.approx(0.375)
    assert numbers["conditional"]["median_abs_off_diagonal"] == pytest.approx(0.15)
    assert set(numbers) == {"plain", "conditional"}  # a run without local traversals shows two panels
    entanglement["local"] = {"q": {"q": 1.0, "r": 0.02}, "r": {"q": 0.0, "r": 1.0}}
    numbers = plot_entanglement(entanglement, tmp_path / "e3.png")
    assert numbers["local"]["median_abs_off_diagonal"] == pytest.approx(0.01)


def test_conditional_edit_of_a_direction_equal_to_the_held_ones_shows_the_plain_row_and_says_why(tmp_path):
    same = DirectionSet(split=None, plain={"r": {"all": direction("r", 1)}, "s": {"all": direction("s", 1)}})
    numbers = plot_conditional_edit(
        generate, lambda z: measure(z).assign(s=lambda t: t["r"]), same, unit(0), "r", "s", np.linspace(-1, 1, 3),
        tmp_path / "c.png",
    )  # fmt: skip
    assert_png(tmp_path / "c.png")
    assert numbers["plain"]["r"] == pytest.approx(2.0) and numbers["conditional"] is None
