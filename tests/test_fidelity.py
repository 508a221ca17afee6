"""Fidelity metrics: distribution distances, extremes, power-spectrum slopes, the classifier two-sample test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sharpgen.gan.fidelity import (
    classifier_two_sample_test,
    distribution_distance,
    extremes,
    power_spectrum_slopes,
)


def test_identical_samples_are_at_distance_zero_and_shifted_ones_are_not():
    rng = np.random.default_rng(0)
    values = rng.normal(size=500)
    same = distribution_distance(values, values)
    assert same["ks"] == 0.0 and same["w1"] == 0.0
    shifted = distribution_distance(values, values + 1.0)
    assert shifted["w1"] == pytest.approx(1.0) and shifted["ks"] > 0.3


def test_undefined_values_are_counted_not_compared():
    result = distribution_distance([1.0, 2.0, np.nan, np.nan], [1.0, 2.0])
    assert result["real_nan_fraction"] == 0.5 and result["generated_nan_fraction"] == 0.0 and result["ks"] == 0.0
    assert np.isnan(distribution_distance([np.nan], [1.0])["ks"])


@pytest.mark.parametrize("slope", [-2.0, -3.0])
def test_power_law_fields_give_their_spectral_slope(slope):
    size = 128
    rng = np.random.default_rng(1)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size) * size, np.fft.fftfreq(size) * size, indexing="ij"))
    amplitude = np.where(k > 0, k, np.inf) ** (slope / 2)
    phases = np.exp(2j * np.pi * rng.random((20, size, size)))
    fields = np.real(np.fft.ifft2(amplitude * phases))
    np.testing.assert_allclose(np.median(power_spectrum_slopes(fields)), slope, atol=0.15)


def test_flat_patches_have_no_slope():
    assert np.isnan(power_spectrum_slopes(np.zeros((2, 32, 32)))).all()


def spot_patches(n, seed, texture=0.0, size=16):
    """``(n, size, size)`` bipoles at random places; ``texture`` adds a +-texture kG checkerboard inside them."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((size, size))
    checker = np.where((rows + cols) % 2, 1.0, -1.0)
    patches = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        r, c = rng.uniform(4, size - 4, 2)
        spot = np.exp(-((rows - r) ** 2 + (cols - c - 2) ** 2) / 4) - np.exp(
            -((rows - r) ** 2 + (cols - c + 2) ** 2) / 4
        )
        patches[i] = np.clip(
            rng.uniform(0.3, 1.2) * spot * (1 + texture * checker) + rng.normal(0, 0.02, spot.shape), -1, 1
        )
    return patches


FAST = {"folds": 3, "batch_size": 16}  # 16 px patches, few of them: more, smaller steps


def test_classifier_cannot_tell_two_samples_of_one_distribution_apart():
    result = classifier_two_sample_test(spot_patches(150, 1), spot_patches(150, 2), seed=0, recipe=FAST)
    assert abs(result["accuracy"] - 0.5) < 0.12 and len(result["fold_accuracies"]) == 3


def test_classifier_tells_textured_regions_from_smooth_ones_and_is_deterministic():
    smooth, textured = spot_patches(150, 1), spot_patches(150, 2, texture=0.5)
    result = classifier_two_sample_test(smooth, textured, seed=0, recipe=FAST)
    assert result["accuracy"] > 0.95 and result["n_per_class"] == 150
    assert (
        classifier_two_sample_test(smooth, textured, seed=0, recipe=FAST)["fold_accuracies"]
        == result["fold_accuracies"]
    )


def test_classifier_refuses_patches_of_different_sizes():
    with pytest.raises(ValueError, match="one size"):
        classifier_two_sample_test(np.zeros((20, 16, 16)), np.zeros((20, 8, 8)))


def test_extremes_count_sunspots_strong_imbalance_and_compare_tails():
    real = pd.DataFrame(
        {"peak": [1.0, 0.95, 0.5, 0.2], "imbalance": [0.1, -0.05, 0.6, 0.0], "tuf": np.linspace(1, 2, 4)}
    )
    generated = pd.DataFrame(
        {"peak": [0.6, 0.92, 0.5, 0.4], "imbalance": [-0.8, 0.7, 0.2, np.nan], "tuf": np.linspace(1, 2, 4) * 0.5}
    )
    result = extremes(real, generated)
    assert result["peak"]["real_sunspot_fraction"] == 0.5 and result["peak"]["generated_sunspot_fraction"] == 0.25
    assert result["peak"]["sunspot_points"] == pytest.approx(-25.0)
    assert result["imbalance"]["real_strong_fraction"] == 0.25 and result["imbalance"][
        "generated_strong_fraction"
    ] == pytest.approx(2 / 3)
    assert result["imbalance"]["real_median_abs"] == pytest.approx(0.075)
    assert set(result["tails"]) == {"tuf"}  # the other tail properties are not in the tables
    assert result["tails"]["tuf"]["q01_relative"] == pytest.approx(-0.5) and result["tails"]["tuf"][
        "q99_relative"
    ] == pytest.approx(-0.5)
