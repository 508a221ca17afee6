"""The physics-based synthetic SHARP source: settings, ground truth, rendering, files and manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re

import numpy as np
import pandas as pd
import pytest

from sharpgen.config import build_settings
from sharpgen.data.fitsio import read_sharp
from sharpgen.data.sources import synthetic
from sharpgen.data.sources.synthetic import (
    CLASS_NAMES,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    PIXEL_AREA_CM2,
    SyntheticSettings,
    draw_region,
    generate_synthetic,
    render_region,
    renew_texture,
    signed_flux_mx,
    texture_fields,
)
from sharpgen.errors import SharpgenError

SMALL = build_settings(SyntheticSettings, n_patches=6, max_naxis=320, series={"fraction": 0.5})


DEFAULTS = build_settings(SyntheticSettings)


def _specs(n: int, settings: SyntheticSettings = DEFAULTS, seed: int = 0):
    children = np.random.SeedSequence(seed).spawn(n)
    return [draw_region(np.random.default_rng(child), settings) for child in children]


def _digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The same small set generated twice with one worker and once with two, plus its manifest."""
    runs = {}
    for name, workers in (("one", 1), ("again", 1), ("two", 2)):
        out = tmp_path_factory.mktemp(name)
        manifest = generate_synthetic(out, SMALL, seed=11, workers=workers, progress=False)
        runs[name] = (out, manifest)
    return runs


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_round_trip_through_a_mapping():
    mapping = {"n_patches": 7, "class_fractions": {"alpha": 0.3, "beta": 0.4}}
    settings = build_settings(SyntheticSettings, mapping)
    assert settings.n_patches == 7 and settings.class_fractions.alpha == 0.3
    assert build_settings(SyntheticSettings, dataclasses.asdict(settings)) == settings
    assert build_settings(SyntheticSettings, None) == build_settings(SyntheticSettings)


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"n_patchez": 3}, "synthetic.n_patchez"),
        ({"class_fractions": {"gamma": 0.1}}, "synthetic.class_fractions.gamma"),
        ({"class_fractions": {"alpha": 0.5}}, "synthetic.class_fractions"),
        ({"n_patches": 0}, "synthetic.n_patches"),
        ({"flux_range_mx": [1e22, 1e21]}, "synthetic.flux_range_mx"),
        ({"noise_gauss": "loud"}, "synthetic.noise_gauss"),
    ],
)
def test_bad_settings_raise_an_error_naming_the_key(mapping, key):
    with pytest.raises(SharpgenError, match=re.escape(key)):
        build_settings(SyntheticSettings, mapping)


# --- ground truth (drawn, not rendered) -----------------------------------------------------------------


def test_class_fractions_are_respected():
    fractions = {"alpha": 0.15, "beta": 0.45, "multipolar": 0.4, "delta": 0.0}
    settings = build_settings(SyntheticSettings, class_fractions=fractions)
    classes = pd.Series([spec.ar_class for spec in _specs(400, settings, seed=1)])
    for name in CLASS_NAMES:
        p = fractions[name]
        observed = float((classes == name).mean())
        assert abs(observed - p) <= 4.0 * math.sqrt(p * (1.0 - p) / len(classes)) + 1e-12, name


def test_drawn_regions_follow_the_statistics_of_physics_md():
    specs = _specs(500, seed=2)
    lat = np.array([s.latitude_deg for s in specs])
    hemisphere = np.array([s.hemisphere for s in specs])
    flux = np.array([s.total_flux_mx for s in specs])
    sep = np.array([s.separation_mm for s in specs])
    assert np.all((np.abs(lat) >= 5) & (np.abs(lat) <= 35)) and np.all(np.sign(lat) == hemisphere)
    assert np.all((flux >= 1e20) & (flux <= 2e23))
    assert abs(np.median(np.log10(flux)) - 21.7) < 0.1
    assert np.all((sep >= 5.0) & (sep <= 150.0))
    big, small = flux > 1e22, flux < 3e21
    assert np.median(sep[big]) > 2.0 * np.median(sep[small])
    assert np.all(np.abs([s.lon_fwt_deg for s in specs]) <= 60.0)
    naxis1, naxis2 = np.array([s.naxis1 for s in specs]), np.array([s.naxis2 for s in specs])
    assert naxis1.max() <= 1200 and naxis2.max() <= 1200 and np.median(naxis1 / naxis2) > 1.2


def test_joy_law_mean_tilt_is_positive_in_both_hemispheres():
    specs = _specs(600, seed=3)
    for sign in (1, -1):
        tilts = np.array([s.tilt_deg for s in specs if s.hemisphere == sign])
        assert tilts.mean() > 3.0 * tilts.std() / math.sqrt(len(tilts))


def test_hale_leading_polarity_is_opposite_in_the_two_hemispheres():
    specs = _specs(1500, seed=4)
    normal = np.array([s.leading_sign == -s.hemisphere for s in specs])
    assert 0.94 <= normal.mean() <= 0.98
    assert np.array_equal(~normal, np.array([s.hale_reversed for s in specs]))
    north = np.mean([s.leading_sign for s in specs if s.hemisphere > 0])
    south = np.mean([s.leading_sign for s in specs if s.hemisphere < 0])
    assert north < -0.8 and south > 0.8


# --- rendering --------------------------------------------------------------------------------------------


def _quiet(spec):
    return dataclasses.replace(spec, network_gauss=0.0, noise_gauss=0.0)


def test_rendered_field_shape_units_and_limits():
    spec = _specs(1, build_settings(SyntheticSettings, max_naxis=400), seed=5)[0]
    field = render_region(spec, np.random.default_rng(0))
    assert field.dtype == np.float32 and field.shape == (spec.naxis2, spec.naxis1)
    assert np.all(np.isfinite(field)) and np.abs(field).max() <= synthetic.FIELD_LIMIT_GAUSS
    core = field[np.abs(field) < 50.0]
    assert 0.7 * spec.noise_gauss < core.std() < 2.0 * spec.noise_gauss


def test_noise_free_flux_matches_the_drawn_total():
    ratios = []
    for spec in _specs(20, build_settings(SyntheticSettings, max_naxis=800), seed=6):
        pos, neg = signed_flux_mx(render_region(_quiet(spec), np.random.default_rng(1)))
        ratios.append((pos + neg) / spec.total_flux_mx)
    ratios = np.array(ratios)
    assert 0.9 <= np.median(ratios) <= 1.01
    assert np.mean(np.abs(ratios - 1.0) <= 0.1) >= 0.8


def _centroid(field, mask):
    weights = np.abs(field) * mask
    rows, cols = np.indices(field.shape)
    return (weights * cols).sum() / weights.sum(), (weights * rows).sum() / weights.sum()


def test_rendered_geometry_follows_the_drawn_orientation_and_tilt():
    """x grows westward (leading polarity at larger column), rows grow northward, tilt in Joy's sign."""
    specs = [s for s in _specs(120, seed=7) if s.ar_class == "beta" and s.total_flux_mx > 3e21][:25]
    lead_ok, drawn, measured = [], [], []
    for spec in specs:
        field = render_region(_quiet(spec), np.random.default_rng(2))
        (xp, yp), (xn, yn) = _centroid(field, field > 150), _centroid(field, field < -150)
        lead, follow = ((xp, yp), (xn, yn)) if xp > xn else ((xn, yn), (xp, yp))
        lead_ok.append((1 if xp > xn else -1) == spec.leading_sign)
        drawn.append(spec.tilt_deg)
        rise = spec.hemisphere * (follow[1] - lead[1])
        measured.append(math.degrees(math.atan2(rise, lead[0] - follow[0])))
    assert len(specs) >= 15
    assert np.mean(lead_ok) >= 0.8
    assert np.corrcoef(drawn, measured)[0, 1] > 0.6


def test_delta_regions_put_opposite_polarity_inside_a_penumbra():
    spec = next(s for s in _specs(100, seed=8) if s.ar_class == "delta" and s.spots)
    host = max(spec.spots[:-1], key=lambda s: s.flux_mx)
    umbra = spec.spots[-1]
    assert umbra.sign == -host.sign
    assert math.hypot(umbra.x_mm - host.x_mm, umbra.y_mm - host.y_mm) <= max(10.0, host.penumbra_mm)


# --- files and manifest -----------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_for_any_worker_count(generated):
    one, again, two = (_digests(generated[name][0]) for name in ("one", "again", "two"))
    assert len(one) == SMALL.n_patches + 1 and MANIFEST_NAME in one
    assert (generated["one"][1]["observation"] > 0).any()  # renewed textures are reproducible too
    assert one == again == two


def test_a_different_seed_gives_different_files(generated, tmp_path):
    generate_synthetic(tmp_path, SMALL, seed=12, progress=False)
    first, other = _digests(generated["one"][0]), _digests(tmp_path)
    assert len(first) == len(other) and set(first.values()).isdisjoint(other.values())


def test_manifest_describes_every_written_file(generated):
    out, manifest = generated["one"]
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert pd.read_parquet(out / MANIFEST_NAME).equals(manifest)
    assert len(manifest) == SMALL.n_patches and manifest["record"].is_unique
    assert (manifest["status"] == "ok").all() and (manifest["reason"] == "").all()
    assert set(manifest["file"]) == {p.name for p in out.iterdir()} - {MANIFEST_NAME}
    for row in manifest.itertuples():
        assert row.record == f"hmi.sharp_cea_720s[{row.harpnum}][{row.t_rec}]"
        assert re.fullmatch(rf"hmi\.sharp_cea_720s\.{row.harpnum}\.\d{{8}}_\d{{6}}_TAI\.Br\.fits", row.file)
        assert row.hemisphere in (1, -1) and row.ar_class in CLASS_NAMES and row.seed == 11
        rendered = row.pos_flux_mx + row.neg_flux_mx
        assert 0.0 < rendered < 1.05 * row.total_flux_mx
        if max(row.naxis1, row.naxis2) < SMALL.max_naxis:  # not cropped at max_naxis
            assert rendered > 0.7 * row.total_flux_mx
    assert manifest["hale_reversed"].dtype == bool


def test_files_are_sharp_like_and_read_back_in_gauss(generated):
    out, manifest = generated["one"]
    for row in manifest.itertuples():
        record = read_sharp(out / row.file)
        header, field = record.header, record.field
        assert field.shape == (row.naxis2, row.naxis1)
        assert record.pixel_size_mm == pytest.approx((0.3644, 0.3644), rel=1e-3)
        assert header["BUNIT"] == "G"
        assert header["CTYPE1"] == "CRLN-CEA" and header["CTYPE2"] == "CRLT-CEA"
        assert header["CUNIT1"] == header["CUNIT2"] == "degree"
        assert header["CDELT1"] == header["CDELT2"] == 0.03
        assert header["CRPIX1"] == (row.naxis1 + 1) / 2 and header["CRPIX2"] == (row.naxis2 + 1) / 2
        for key in ("HARPNUM", "NOAA_AR", "QUALITY", "RSUN_REF"):
            assert isinstance(header[key], int), key
        for key in ("CRVAL1", "CRVAL2", "LAT_FWT", "LON_FWT", "DSUN_OBS", "RSUN_OBS", "SYN_FLUX", "SYN_SEP"):
            assert isinstance(header[key], float), key
        assert header["HARPNUM"] == row.harpnum and header["T_REC"] == row.t_rec
        assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}_\d{2}:\d{2}:\d{2}_TAI", header["T_REC"])
        assert header["LAT_FWT"] == pytest.approx(row.lat_fwt, abs=1e-5)
        assert abs(header["LON_FWT"]) <= 70  # 60, plus solar rotation between the records of a series
        assert 0 <= header["CRVAL1"] < 360 and abs(header["CRVAL2"] - header["LAT_FWT"]) < 10
        assert header["RSUN_REF"] == 696000000 and header["DSUN_OBS"] == pytest.approx(1.496e11, rel=0.02)
        assert header["RSUN_OBS"] == pytest.approx(959.6, rel=0.02) and header["QUALITY"] == 0
        assert header["SYN_CLS"] == row.ar_class and isinstance(header["SYN_HALE"], bool)
        assert header["SYN_FLUX"] == pytest.approx(row.total_flux_mx, rel=1e-5)
        assert header["SYN_TILT"] == pytest.approx(row.tilt_deg, abs=1e-3)
        assert "seed 11" in str(header["HISTORY"])
        assert np.all(np.isfinite(field)) and 300.0 < np.abs(field).max() <= 4000.0
        noise_free_flux = row.pos_flux_mx + row.neg_flux_mx
        assert np.abs(field).sum() * PIXEL_AREA_CM2 > 0.8 * noise_free_flux


def _correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _binned(field, k):
    """Mean of ``field`` over k x k blocks (the ragged edge dropped)."""
    h, w = field.shape[0] // k * k, field.shape[1] // k * k
    return field[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def test_series_observe_one_region_several_times_evolved_a_little(tmp_path):
    series = {"fraction": 1.0, "observations": 3}
    settings = build_settings(SyntheticSettings, n_patches=5, max_naxis=240, series=series)
    manifest = generate_synthetic(tmp_path, settings, seed=4, progress=False)
    assert list(manifest["observation"]) == [0, 1, 2, 0, 1]  # the last series is cut at n_patches records
    first = manifest[manifest["region"] == 0]
    assert first["harpnum"].nunique() == 1 and first["noaa_ar"].nunique() == 1
    times = pd.to_datetime(first["t_rec"].str.replace("_TAI", ""), format="%Y.%m.%d_%H:%M:%S")
    assert (times.diff().dropna() == pd.Timedelta(hours=settings.series.cadence_hours)).all()
    for column in ("ar_class", "hemisphere", "lat_fwt", "naxis1", "naxis2", "hale_reversed"):
        assert first[column].nunique() == 1, column  # the same region
    assert (first["lon_fwt"].diff().dropna() > 0).all()  # carried west by solar rotation
    ratio = first["total_flux_mx"] / first["total_flux_mx"].iloc[0]
    assert ratio.between(0.5, 2.0).all() and ratio.iloc[1:].ne(1.0).all()  # emerged or decayed a little
    fields = [read_sharp(tmp_path / name).field for name in first["file"]]
    coarse = [_binned(field, 8) for field in fields]  # the 2.9 Mm pixel of the default normalization
    assert _correlation(coarse[0], coarse[1]) > 0.5  # recognisably the same region...
    assert not np.array_equal(fields[0], fields[1])  # ...observed again


def test_a_renewed_texture_keeps_exp_minus_t_over_lifetime_of_the_old_one():
    fields = texture_fields(np.random.default_rng(0), (400, 400), 25.0)
    lifetimes = (1e30, 24.0, 6.0, 1e30)
    later = renew_texture(fields, np.random.default_rng(1), 6.0, lifetimes, 25.0)
    twice = renew_texture(later, np.random.default_rng(2), 6.0, lifetimes, 25.0)
    grain = 1  # correlated over ~1 px: 400 x 400 px estimate its correlations to +-0.01
    assert _correlation(fields[grain], later[grain]) == pytest.approx(math.exp(-6.0 / 24.0), abs=0.02)
    assert _correlation(fields[grain], twice[grain]) == pytest.approx(math.exp(-12.0 / 24.0), abs=0.02)
    assert _correlation(fields[2], later[2]) < 0.5 < _correlation(fields[1], later[1])  # each its own lifetime
    assert np.array_equal(later[[0, 3]], fields[[0, 3]])  # an endless lifetime keeps a field
    assert later.dtype == np.float32 and later.shape == fields.shape
    assert np.allclose(later.reshape(4, -1).std(axis=1), 1.0, atol=0.15)  # a renewed texture is a texture
    assert np.abs(later.reshape(4, -1).mean(axis=1)).max() < 0.3


def test_later_observations_share_part_of_the_first_ones_texture(tmp_path):
    """Only the lifetime differs: the same evolution and noise, over a texture kept, renewed in part or anew."""
    fields = {}
    for lifetime in (1e30, 24.0, 1e-3):
        series = {"fraction": 1.0, "observations": 2, "network_lifetime_hours": lifetime,
                  "fragment_lifetime_hours": lifetime}  # fmt: skip
        settings = build_settings(SyntheticSettings, n_patches=2, max_naxis=320, series=series)
        out = tmp_path / str(lifetime)
        manifest = generate_synthetic(out, settings, seed=3, progress=False)
        fields[lifetime] = [read_sharp(out / name).field for name in manifest["file"]]
    first = fields[24.0][0]
    assert all(np.array_equal(f[0], first) for f in fields.values())  # observation 0 does not depend on it
    weak = np.abs(first) < 100.0  # plage fragments and network, away from the spots
    kept, partly, anew = (_correlation(first[weak], fields[t][1][weak]) for t in (1e30, 24.0, 1e-3))
    assert kept > partly + 0.05 and partly > anew + 0.05


def test_without_series_every_region_is_one_record(tmp_path):
    settings = build_settings(SyntheticSettings, n_patches=4, max_naxis=240, series={"fraction": 0.0})
    manifest = generate_synthetic(tmp_path, settings, seed=4, progress=False)
    assert manifest["harpnum"].is_unique and (manifest["observation"] == 0).all()


def test_a_failed_run_leaves_no_manifest(tmp_path, monkeypatch):
    generate_synthetic(tmp_path, dataclasses.replace(SMALL, n_patches=2), seed=1, progress=False)
    assert (tmp_path / MANIFEST_NAME).is_file()
    calls = []

    def broken(task):
        calls.append(task)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return synthetic.make_record(*task)

    monkeypatch.setattr(synthetic, "_make_record_task", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic(tmp_path, dataclasses.replace(SMALL, n_patches=2), seed=1, progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_bad_seed_or_workers_are_user_errors(tmp_path):
    with pytest.raises(SharpgenError, match="seed"):
        generate_synthetic(tmp_path, SMALL, seed=-1, progress=False)
    with pytest.raises(SharpgenError, match="workers"):
        generate_synthetic(tmp_path, SMALL, seed=1, workers=0, progress=False)
