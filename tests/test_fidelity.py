"""Fidelity metrics: distribution distances and power-spectrum slopes."""

from __future__ import annotations

import numpy as np
import pytest

from sharpgen.gan.fidelity import distribution_distance, power_spectrum_slopes


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
