"""Every FITS file sharpgen writes opens in SunPy as a heliographic CEA map: the centre where the header puts it,
the observer at Earth, a pixel scale that gives the pixel size in Mm, a field in G; real SHARPs open the same way."""

from __future__ import annotations

import warnings
from datetime import datetime

import astropy.units as u
import matplotlib
import numpy as np
import pytest
import sunpy.map
from sunpy.coordinates import sun

from sharpgen.config import build_settings
from sharpgen.data.fitsio import read_sharp, write_sharp_fits
from sharpgen.data.sources.synthetic import SyntheticSettings, generate_synthetic
from sharpgen.errors import SharpgenError
from sharpgen.latent.generate import GENERATED_TIME_TAI, generated_wcs_cards
from sharpgen.units import CEA_PIXEL_MM

matplotlib.use("Agg")


def _open(path) -> sunpy.map.GenericMap:
    """``sunpy.map.Map(path)``, failing on any SunPy metadata warning (a guessed date, observer or unit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", sunpy.util.exceptions.SunpyMetadataWarning)
        return sunpy.map.Map(path)


def _pixel_mm(smap) -> tuple[float, float]:
    """Pixel sides in Mm from SunPy's scale (deg/px on the CEA grid) and RSUN_REF."""
    radius_mm = smap.rsun_meters.to_value(u.Mm)
    return tuple(float(scale.to_value(u.rad / u.pix)) * radius_mm for scale in smap.scale)


def _centre_pixel_world(smap):
    """World coordinates of the reference pixel (CRPIX, 1-based in FITS, 0-based in SunPy)."""
    return smap.wcs.pixel_to_world(smap.reference_pixel.x.value, smap.reference_pixel.y.value)


def _plot(smap, path) -> None:
    """``map.plot()`` into a PNG (look at one: a magnetogram with Carrington axes)."""
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(5, 4))
    smap.plot(axes=figure.add_subplot(projection=smap))
    figure.savefig(path)
    plt.close(figure)
    assert path.stat().st_size > 5000


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    manifest = generate_synthetic(out, build_settings(SyntheticSettings, n_patches=2, max_naxis=240), 5, progress=False)
    return [out / name for name in manifest["file"]]


def test_synthetic_records_open_in_sunpy_at_their_region(synthetic_files, tmp_path):
    for path in synthetic_files:
        header = read_sharp(path).header
        smap = _open(path)
        assert smap.unit == u.G
        assert smap.coordinate_frame.name == "heliographic_carrington"
        centre = _centre_pixel_world(smap)
        assert centre.lon.to_value(u.deg) == pytest.approx(header["CRVAL1"], abs=1e-6)
        assert centre.lat.to_value(u.deg) == pytest.approx(header["CRVAL2"], abs=1e-6)
        t_rec = datetime.strptime(header["T_REC"], "%Y.%m.%d_%H:%M:%S_TAI")
        assert abs((smap.date.tai.datetime - t_rec).total_seconds()) < 1e-3  # dated by T_REC, not "now"
        observer = smap.observer_coordinate  # at Earth: Stonyhurst longitude 0, latitude B0
        assert observer.lon.to_value(u.deg) == pytest.approx(0.0, abs=1e-3)
        assert observer.lat.to_value(u.deg) == pytest.approx(sun.B0(smap.date).to_value(u.deg), abs=1e-3)
        stonyhurst_lon = centre.transform_to("heliographic_stonyhurst").lon.to_value(u.deg)
        region_lon = header["LON_FWT"]  # the region's flux-weighted centre lies near the patch centre
        assert abs(stonyhurst_lon - region_lon) < 10
        assert _pixel_mm(smap) == pytest.approx((CEA_PIXEL_MM, CEA_PIXEL_MM), rel=1e-9)
        assert read_sharp(path).pixel_size_mm == pytest.approx((CEA_PIXEL_MM, CEA_PIXEL_MM), rel=1e-9)
    _plot(_open(synthetic_files[0]), tmp_path / "synthetic.png")


def test_real_sharps_open_in_sunpy_with_the_pixel_size_sharpgen_reads(real_sharp_files, tmp_path):
    for path in real_sharp_files:
        smap = sunpy.map.Map(path)
        header = read_sharp(path).header
        assert smap.unit == u.Mx / u.cm**2
        centre = _centre_pixel_world(smap)
        assert centre.lat.to_value(u.deg) == pytest.approx(header["CRVAL2"], abs=1e-6)
        assert np.cos(np.radians(centre.lon.to_value(u.deg) - header["CRVAL1"])) == pytest.approx(1.0, abs=1e-12)
        assert _pixel_mm(smap) == pytest.approx(read_sharp(path).pixel_size_mm, rel=1e-9)
    _plot(sunpy.map.Map(real_sharp_files[0]), tmp_path / "real.png")


@pytest.mark.parametrize("pixel_mm", [2.9154, None])
def test_generated_patches_open_in_sunpy_at_disk_centre(tmp_path, pixel_mm):
    """The convention of a generated patch: centred on the disk centre seen from Earth at GENERATED_TIME_TAI."""
    field = np.outer(np.linspace(-900, 900, 48), np.ones(40))
    path = write_sharp_fits(tmp_path / "generated_000.fits", field, generated_wcs_cards(field.shape, pixel_mm))
    smap = _open(path)
    assert smap.unit == u.G and smap.dimensions.x == 40 * u.pix and smap.dimensions.y == 48 * u.pix
    assert abs((smap.date.tai.datetime - GENERATED_TIME_TAI).total_seconds()) < 1e-3
    centre = _centre_pixel_world(smap).transform_to("heliographic_stonyhurst")
    assert centre.lon.to_value(u.deg) == pytest.approx(0.0, abs=1e-4)
    assert centre.lat.to_value(u.deg) == pytest.approx(sun.B0(smap.date).to_value(u.deg), abs=1e-4)
    if pixel_mm is None:  # a resize run: a nominal scale, which sharpgen's reader refuses to take as physical
        with pytest.raises(SharpgenError, match="resize run"):
            _ = read_sharp(path).pixel_size_mm
        return
    assert _pixel_mm(smap) == pytest.approx((pixel_mm, pixel_mm), rel=1e-9)
    assert read_sharp(path).header["PIXSIZMM"] == pixel_mm
    assert read_sharp(path).pixel_size_mm == pytest.approx((pixel_mm, pixel_mm), rel=1e-12)
    np.testing.assert_allclose(smap.data, field, atol=0.05)
    _plot(smap, tmp_path / "generated.png")


def test_old_generated_patches_with_cdelt_in_mm_still_read(tmp_path):
    cards = {"BUNIT": "Mx/cm^2", "CDELT1": 2.9154, "CDELT2": 2.9154, "CUNIT1": "Mm", "CUNIT2": "Mm"}
    path = write_sharp_fits(tmp_path / "old.fits", np.zeros((8, 8)), cards)
    assert read_sharp(path).pixel_size_mm == (2.9154, 2.9154)
