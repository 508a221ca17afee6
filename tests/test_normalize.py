"""Normalization keeps physics: the paper's squash, and fixed-scale patches that keep Mm and Mx."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import zarr

from sharpgen.atomic import write_parquet_atomic
from sharpgen.config import build_settings
from sharpgen.data.fitsio import write_sharp_fits
from sharpgen.data.normalize import NormalizeSettings, assign_splits, build_dataset
from sharpgen.data.resample import rescale_matrix
from sharpgen.data.scaling import DEFAULT_SCALE_MM, fixed_scale_normalize, noise_filled, quiet_sun_sigma
from sharpgen.errors import SharpgenError
from sharpgen.physics import paper_properties
from sharpgen.units import CEA_PIXEL_MM


def test_fixed_scale_keeps_size_in_mm_and_flux():
    field = np.zeros((300, 500))
    field[130:170, 230:270] = 500.0  # a 40 x 40 native-pixel square: 14.6 Mm on a side
    out = fixed_scale_normalize(field, (CEA_PIXEL_MM, CEA_PIXEL_MM), size=128, scale_mm=DEFAULT_SCALE_MM)
    native_flux = field.sum() / 1000.0 * CEA_PIXEL_MM**2
    assert out.sum() * DEFAULT_SCALE_MM**2 == pytest.approx(native_flux, rel=1e-6)
    rows, cols = np.nonzero(out > 0.25)
    assert cols.max() - cols.min() + 1 == 10  # 40 native px = 10 output px of 4 native px
    assert abs((rows.mean() + 0.5) - 64) < 0.6 and abs((cols.mean() + 0.5) - 64) < 0.6  # stays centred


def test_fixed_scale_pads_small_and_crops_large_patches_symmetrically():
    pad = rescale_matrix(40, 20, 4.0)  # window 80 px wide over a 40 px signal
    assert not pad[:4].any() and not pad[-4:].any() and pad[4:-4].any(axis=1).all()
    crop = rescale_matrix(1000, 10, 4.0)  # window 40 px wide in the middle of 1000
    used = np.nonzero(crop.any(axis=0))[0]
    assert used.min() - 0 == pytest.approx(999 - used.max(), abs=1)


def _region_in_noise(shape=(120, 160), noise_gauss=10.0, seed=0):
    """A native field: white noise of ``noise_gauss`` G with a +-1500 G bipole in the middle."""
    field = np.random.default_rng(seed).normal(scale=noise_gauss, size=shape)
    field[50:60, 60:70] = 1500.0
    field[60:70, 90:100] = -1500.0
    return field


def test_noise_fill_continues_the_fields_own_noise_without_touching_the_field():
    field = _region_in_noise()
    field[3, 4] = np.nan
    assert quiet_sun_sigma(field) == pytest.approx(10.0, rel=0.05)  # the bipole does not count
    out = noise_filled(field, 40, 30)
    assert out.shape == (200, 220) and np.isfinite(out).all()
    inner = out[40:160, 30:190]
    finite = np.isfinite(field)
    np.testing.assert_array_equal(inner[finite], field[finite])
    padding = np.concatenate([out[:40].ravel(), out[160:].ravel()])
    assert padding.std() == pytest.approx(10.0, rel=0.05) and abs(padding.mean()) < 0.5
    np.testing.assert_array_equal(out, noise_filled(field, 40, 30))  # one field, one fill


def test_noise_filled_patch_has_no_box_edge_and_keeps_the_regions_flux():
    field = _region_in_noise()  # 120 x 160 native px: a third of the 64 px window of 8 px each
    noise = fixed_scale_normalize(field, (CEA_PIXEL_MM, CEA_PIXEL_MM), size=64, scale_mm=8 * CEA_PIXEL_MM)
    zero = fixed_scale_normalize(field, (CEA_PIXEL_MM, CEA_PIXEL_MM), 64, 8 * CEA_PIXEL_MM, fill="zero")
    assert (zero == 0).mean() > 0.5 and not (noise == 0).any()
    corner, inside = noise[:8, :8], noise[25:29, 23:29]  # outside the box, and quiet Sun inside it
    assert corner.std() == pytest.approx(inside.std(), rel=0.5)
    assert float(noise.sum()) == pytest.approx(float(zero.sum()), abs=0.05 * float(np.abs(zero).sum()))


def test_a_field_without_noise_is_padded_exactly_as_with_zero_field():
    field = np.zeros((100, 90))
    field[40:60, 30:50] = 800.0  # no quiet-Sun noise to continue: the fill is zero, the centre unchanged
    pixel = (CEA_PIXEL_MM, CEA_PIXEL_MM)
    np.testing.assert_allclose(
        fixed_scale_normalize(field, pixel, 64, 4 * CEA_PIXEL_MM),
        fixed_scale_normalize(field, pixel, 64, 4 * CEA_PIXEL_MM, fill="zero"),
        atol=1e-7,
    )


def test_splits_never_share_a_harp_and_follow_the_fractions():
    harps = np.repeat(np.arange(200), 3)
    labels = assign_splits(harps, (0.8, 0.1, 0.1), seed=1)
    per_harp = pd.Series(labels).groupby(harps).nunique()
    assert (per_harp == 1).all()
    counts = pd.Series(labels[::3]).value_counts()
    assert counts["train"] == 160 and counts["val"] == 20 and counts["test"] == 20
    np.testing.assert_array_equal(labels, assign_splits(harps, (0.8, 0.1, 0.1), seed=1))


def _raw_folder(tmp_path, n=5):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        field = rng.normal(scale=10.0, size=(120 + 10 * i, 200))
        field[40:60, 50:70] = 1500.0
        field[50:70, 120:140] = -1200.0
        field[0, 0] = np.nan
        name = f"rec{i}.fits"
        write_sharp_fits(
            tmp_path / name, field, {"CDELT1": 0.03, "CDELT2": 0.03, "CUNIT1": "degree", "CUNIT2": "degree"}
        )
        rows.append(
            {
                "record": f"r{i}",
                "file": name,
                "status": "ok",
                "reason": "",
                "harpnum": 10 + i // 2,
                "t_rec": f"2011.01.0{i + 1}_00:00:00_TAI",
                "lat_fwt": -12.0,
                "lon_fwt": 5.0,
            }
        )
    rows.append({**rows[0], "record": "bad", "file": "", "status": "failed", "reason": "HTTP 500"})
    write_parquet_atomic(pd.DataFrame(rows), tmp_path / "manifest.parquet")
    return tmp_path


@pytest.mark.parametrize("mode", ["resize", "fixed_scale"])
def test_dataset_rows_align_with_patches(tmp_path, mode):
    raw = _raw_folder(tmp_path / "raw")
    settings = build_settings(
        NormalizeSettings,
        mode=mode,
        image_size=64,
        scale_mm=DEFAULT_SCALE_MM,
        chunk_size=2,
        split={"train": 0.6, "val": 0.2, "test": 0.2},
    )
    table = build_dataset(raw, tmp_path / "data", settings, seed=3, workers=1, progress=False)
    patches = zarr.open_array(str(tmp_path / "data" / "patches.zarr"))[:]
    assert patches.shape == (5, 64, 64) and patches.dtype == np.float32
    assert np.isfinite(patches).all() and np.abs(patches).max() <= 1.0
    on_disk = pd.read_parquet(tmp_path / "data" / "patches.parquet")
    assert list(on_disk["record"]) == [f"r{i}" for i in range(5)]  # the failed record is left out
    np.testing.assert_allclose(on_disk["tuf"], paper_properties(patches)["tuf"])
    assert (on_disk["usflux"] > 0).all() and (on_disk["r_value"] >= 0).all()
    assert on_disk.groupby("harpnum")["split"].nunique().max() == 1
    assert len(table) == 5
    if mode == "fixed_scale":
        assert (on_disk["pixel_x_mm"] == DEFAULT_SCALE_MM).all()
    else:
        np.testing.assert_allclose(on_disk["pixel_y_mm"], on_disk["naxis2"] * CEA_PIXEL_MM / 64, rtol=1e-3)


def test_manifest_without_usable_records_is_a_user_error(tmp_path):
    write_parquet_atomic(
        pd.DataFrame(
            [
                {
                    "record": "x",
                    "file": "",
                    "status": "failed",
                    "reason": "r",
                    "harpnum": 1,
                    "t_rec": "",
                    "lat_fwt": 0.0,
                }
            ]
        ),
        tmp_path / "manifest.parquet",
    )
    settings = build_settings(NormalizeSettings, mode="resize", image_size=32, scale_mm=DEFAULT_SCALE_MM, chunk_size=2)
    with pytest.raises(SharpgenError, match="no usable record"):
        build_dataset(tmp_path, tmp_path / "data", settings, seed=0, progress=False)


def test_same_records_and_seed_give_identical_dataset_bytes(tmp_path):
    raw = _raw_folder(tmp_path / "raw")
    settings = build_settings(
        NormalizeSettings,
        mode="fixed_scale",
        image_size=32,
        chunk_size=2,
        split={"train": 0.6, "val": 0.2, "test": 0.2},
    )

    def digest(out):
        build_dataset(raw, out, settings, seed=5, workers=2, progress=False)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        return [(p.relative_to(out).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
