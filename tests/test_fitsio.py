"""SHARP-like FITS files round-trip in G, keep their keywords, and are reproducible byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sharpgen.data.fitsio import read_sharp, write_sharp_fits
from sharpgen.errors import SharpgenError

CARDS = {
    "BUNIT": "Mx/cm^2",
    "CDELT1": 0.03,
    "CDELT2": 0.03,
    "CUNIT1": "degree",
    "CUNIT2": "degree",
    "HARPNUM": 7,
}


def test_field_round_trips_to_a_tenth_of_a_gauss_with_nan_kept(tmp_path):
    field = np.random.default_rng(1).normal(scale=300.0, size=(60, 90))
    field[3, 4] = np.nan
    record = read_sharp(write_sharp_fits(tmp_path / "a.fits", field, CARDS))
    assert record.field.shape == (60, 90)
    assert np.isnan(record.field[3, 4])
    np.testing.assert_allclose(record.field[np.isfinite(field)], field[np.isfinite(field)], atol=0.05 + 1e-9)
    assert record.header["HARPNUM"] == 7
    assert record.pixel_size_mm == pytest.approx((0.3644, 0.3644), rel=1e-3)


def test_same_input_gives_identical_bytes(tmp_path):
    field = np.random.default_rng(2).normal(size=(40, 40)) * 100
    first = write_sharp_fits(tmp_path / "1.fits", field, CARDS).read_bytes()
    second = write_sharp_fits(tmp_path / "2.fits", field, CARDS).read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()


def test_real_sharp_sample_reads_in_gauss(real_sharp_files):
    record = read_sharp(real_sharp_files[0])
    assert record.field.shape == (532, 842)
    assert -2100 < np.nanmin(record.field) < -1900  # DATAMIN = -2009.6 G


def test_non_cea_pixel_units_are_refused(tmp_path):
    path = write_sharp_fits(tmp_path / "arcsec.fits", np.zeros((8, 8)), {**CARDS, "CUNIT1": "arcsec"})
    with pytest.raises(SharpgenError, match="CUNIT1"):
        _ = read_sharp(path).pixel_size_mm
