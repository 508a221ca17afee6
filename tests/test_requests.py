"""Requests that make no sense are refused before any work: exit code 2, one line naming the culprit, no
traceback, nothing written. None of these needs a finished run (the checks come before the run is read)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from sharpgen.cli import main
from sharpgen.data.fitsio import write_sharp_fits
from sharpgen.physics import paper_properties, physical_properties
from sharpgen.properties import PROPERTIES, steerable
from sharpgen.retrieval.search import PANEL_MATCHES, save_query_panel

CEA = {"CTYPE1": "CRLN-CEA", "CTYPE2": "CRLT-CEA", "CDELT1": 0.03, "CDELT2": 0.03, "CUNIT1": "degree",
       "CUNIT2": "degree"}  # fmt: skip


def refused(tmp_path: Path, *argv: str) -> str:
    """Run ``sharpgen argv`` (with ``--out-dir OUT`` where the command takes one) and return its one error line,
    after checking exit code 2, no traceback and nothing written to OUT."""
    out = tmp_path / "out"
    if argv[0] in ("generate", "edit", "query", "invert") and "--out-dir" not in argv:
        argv = (*argv, "--out-dir", str(out))
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(list(argv))
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2, stderr.getvalue()
    assert len(lines) == 1 and lines[0].startswith("sharpgen: error: "), stderr.getvalue()
    assert "Traceback" not in stderr.getvalue() and not out.exists()
    return lines[0]


def run_dir(tmp_path: Path) -> str:
    return str(tmp_path / "no-run")  # never read: every refusal below comes first


@pytest.fixture()
def latents_file(tmp_path) -> str:
    path = tmp_path / "latents.npy"
    np.save(path, np.zeros((2, 100), dtype=np.float32))
    return str(path)


# -- the property table -------------------------------------------------------------------------------------


def test_the_schema_enumerates_exactly_the_steerable_properties(repo_root):
    schema = yaml.safe_load((repo_root / "config" / "schema.yaml").read_text())
    directions = schema["properties"]["directions"]["properties"]
    assert directions["properties"]["items"]["enum"] == steerable()
    assert set(directions["properties"]["default"]) <= set(steerable())
    assert {name for name in directions["split_by"]["enum"] if name} <= set(PROPERTIES)


def test_the_table_lists_every_measured_property_and_twins_pair_up():
    field = np.zeros((1, 32, 32))
    field[0, 10:14, 8:12], field[0, 10:14, 20:24] = 800.0, -800.0
    measured = {**paper_properties(field / 1000.0), **physical_properties(field, 0.36, 0.36)}
    assert set(measured) == set(PROPERTIES)
    for name, row in PROPERTIES.items():
        assert row.twin is None or (
            PROPERTIES[row.twin].twin == name and row.paper_units != PROPERTIES[row.twin].paper_units
        )


# -- generate / edit / query targets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--target", "usflux=1e22", "tuf=0.01"], "target usflux and tuf are the same quantity in two units"),
        (["--target", "tuf=0.03", "--keep", "tuf"], "target tuf (kept as tuf): a property is either changed or kept"),
        (["--target", "tuf=0.03", "--keep", "usflux"], "target tuf (kept as usflux)"),
        (["--target", "tuf=0.03", "tuf=0.04"], "--target tuf: given twice"),
        (["--target", "tuf=0.03", "--keep", "psep", "psep"], "keep psep: given twice"),
        (["--target", "flux=3"], "target 'flux': unknown property (valid: tuf, tpf"),
        (["--keep", "lead_sign"], "keep 'lead_sign': unknown property"),
        (["--target", "tuf=nan"], "--target 'tuf=nan': expected NAME=VALUE with a finite number"),
        (["--target", "tuf=0.03", "--tolerance", "-0.1"], "--tolerance -0.1: expected a relative tolerance between 0"),
        (["--target", "tuf=0.03", "--tolerance", "1"], "--tolerance 1.0"),
    ],
)
def test_generate_refuses_a_request_that_makes_no_sense(tmp_path, argv, culprit):
    assert culprit in refused(tmp_path, "generate", "--run-dir", run_dir(tmp_path), *argv)


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--step", "r_paper=1e6"], "--step r_paper=1e+06: at most 10 latent units"),
        (["--step", "r_paper=-11"], "--step r_paper=-11"),
        (["--step", "r_paper=1", "--keep", "r_paper"], "step r_paper (kept as r_paper)"),
        (["--step", "psep=1", "psep_mm=1"], "step psep and psep_mm are the same quantity"),
        (["--target", "tuf=0.03", "--keep", "usflux"], "target tuf (kept as usflux)"),
    ],
)
def test_edit_refuses_absurd_steps_and_conflicting_names(tmp_path, latents_file, argv, culprit):
    assert culprit in refused(tmp_path, "edit", "--run-dir", run_dir(tmp_path), "--latents", latents_file, *argv)


@pytest.mark.parametrize(
    ("content", "culprit"),
    [
        (b"not an array", "not a readable .npy file"),
        (None, "no such file"),
        ("shape", "expected (N, 100) latents, got shape (3, 7)"),
        ("nan", "latents must be finite numbers"),
    ],
)
@pytest.mark.parametrize("command", ["edit", "query"])
def test_a_latents_file_that_is_not_n_by_100_latents_is_refused(tmp_path, command, content, culprit):
    path = tmp_path / "latents.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "shape":
        np.save(path, np.zeros((3, 7)))
    elif content == "nan":
        np.save(path, np.full((2, 100), np.nan))
    step = ["--step", "tuf=1"] if command == "edit" else []
    line = refused(tmp_path, command, "--run-dir", run_dir(tmp_path), "--latents", str(path), *step)
    assert f"--latents {path}" in line and culprit in line


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--latitude", "-200", "500"], "filter latitude -200 to 500: both ends must lie in [-90, 90] degrees"),
        (["--latitude", "30", "10"], "filter latitude 30 to 10: the minimum is above the maximum"),
        (["--abs-latitude", "-5", "10"], "filter abs_latitude -5 to 10: both ends must lie in [0, 90]"),
        (["--time-range", "yesterday", "2011-01-01"], "filter time_range: cannot read start time 'yesterday'"),
        (["--time-range", "2012-01-01", "2011-01-01"], "filter time_range: start 2012-01-01 is after end 2011-01-01"),
        (["--tolerance", "0"], "--tolerance 0.0"),
        (["--keep", "tuf", "tuf"], "keep tuf: given twice"),
    ],
)
def test_query_refuses_bad_filters_before_reading_the_run(tmp_path, argv, culprit):
    assert culprit in refused(tmp_path, "query", "--run-dir", run_dir(tmp_path), "--target", "tuf=0.03", *argv)


# -- output directories, generators -------------------------------------------------------------------------


def out_dir_cases(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return [
        (str(a_file), "is a file; give a directory"),
        (str(a_file / "below"), f"lies under the file {a_file}"),
        ("/proc/sharpgen", "under /proc, a kernel file system"),
    ]


@pytest.mark.parametrize("command", ["generate", "query", "invert"])
def test_an_output_directory_that_cannot_be_written_is_refused_first(tmp_path, real_sharp_files, command):
    arguments = {
        "generate": ["generate", "--run-dir", run_dir(tmp_path), "--target", "tuf=0.03"],
        "query": ["query", "--run-dir", run_dir(tmp_path), "--target", "tuf=0.03"],
        "invert": ["invert", "--generator", str(tmp_path / "missing.pt"), "--fits", str(real_sharp_files[0])],
    }[command]
    for out_dir, culprit in out_dir_cases(tmp_path):
        line = refused(tmp_path, *arguments, "--out-dir", out_dir)
        assert f"--out-dir {out_dir}" in line and culprit in line


@pytest.mark.skipif(
    os.geteuid() == 0, reason="as root, permission bits never stop a write: no read-only directory can be made"
)
def test_a_read_only_output_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = refused(tmp_path, "generate", "--target", "tuf=0.03", "--out-dir", str(locked / "out"))
    assert "is not writable" in line


def test_a_generator_file_that_is_not_a_generator_is_refused(tmp_path, real_sharp_files):
    junk = tmp_path / "generator.pt"
    junk.write_text("not a checkpoint")
    line = refused(tmp_path, "invert", "--generator", str(junk), "--fits", str(real_sharp_files[0]))
    assert f"{junk}: not a sharpgen generator file" in line


# -- FITS files and measurement settings --------------------------------------------------------------------


def fits_file(tmp_path: Path, name: str, cards: dict, data=None) -> Path:
    path = tmp_path / name
    if data is None:
        write_sharp_fits(path, np.full((40, 60), 300.0), cards)
    else:
        fits.PrimaryHDU(data=data, header=fits.Header(cards)).writeto(path)
    return path


@pytest.fixture()
def bad_fits(tmp_path, real_sharp_files) -> dict[str, tuple[Path, str]]:
    bitmap = real_sharp_files[0].with_name(real_sharp_files[0].name.replace("magnetogram", "bitmap"))
    return {
        "jsoc bitmap": (bitmap, "a SHARP bitmap segment, not a field map"),
        "no BUNIT": (fits_file(tmp_path, "mask.fits", CEA), "no BUNIT, so a mask (e.g. JSOC's bitmap)"),
        "integer": (
            fits_file(tmp_path, "ints.fits", {**CEA, "BUNIT": "G"}, np.ones((40, 60), dtype=np.uint8)),
            "integer data, so a mask",
        ),
        "counts": (fits_file(tmp_path, "counts.fits", {**CEA, "BUNIT": "DN/s"}), "BUNIT is 'DN/s', not a field in G"),
    }


@pytest.mark.parametrize("case", ["jsoc bitmap", "no BUNIT", "integer", "counts"])
def test_a_fits_that_is_not_a_field_in_gauss_is_refused_by_name(tmp_path, bad_fits, case):
    path, culprit = bad_fits[case]
    for argv in (
        ["properties", str(path)],
        ["query", "--run-dir", run_dir(tmp_path), "--fits", str(path)],
        ["invert", "--generator", str(tmp_path / "missing.pt"), "--fits", str(path)],
    ):
        line = refused(tmp_path, *argv)
        assert f"{path}: " in line and culprit in line


def test_a_fits_without_cdelt1_names_the_file(tmp_path):
    path = fits_file(tmp_path, "no_cdelt.fits", {"CTYPE1": "CRLN-CEA", "CTYPE2": "CRLT-CEA", "BUNIT": "G"})
    line = refused(tmp_path, "properties", str(path))
    assert f"{path}: header lacks CDELT1" in line


def test_a_field_in_gauss_spelled_any_accepted_way_is_measured(tmp_path):
    for unit in ("G", "Gauss", "Mx/cm^2"):
        path = fits_file(tmp_path, f"field_{unit.replace('/', '_')}.fits", {**CEA, "BUNIT": unit})
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            assert main(["properties", str(path)]) == 0, stderr.getvalue()


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--threshold-gauss", "-5"], "--threshold-gauss -5: expected a positive field in G"),
        (["--threshold-gauss", "0"], "--threshold-gauss 0"),
        (["--size", "2"], "--size 2: a normalized patch side must be 8 to 4096 px"),
        (["--size", "100000"], "--size 100000"),
    ],
)
def test_properties_refuses_nonsense_settings_before_reading_files(tmp_path, real_sharp_files, argv, culprit):
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        line = refused(tmp_path, "properties", str(real_sharp_files[0]), *argv)
    assert culprit in line and stdout.getvalue() == ""


# -- the query figure ---------------------------------------------------------------------------------------


def test_the_query_figure_draws_a_bounded_number_of_matches(tmp_path):
    import pandas as pd
    from matplotlib import image

    def draw(k: int) -> tuple[int, int]:
        table = pd.DataFrame({"rank": range(1, k + 1), "row": range(k), "similarity": 0.5, "tuf": 0.1})
        path = tmp_path / f"query_{k}.png"
        save_query_panel(path, np.zeros((1, 8, 8)), pd.DataFrame({"tuf": [0.1]}), [np.zeros((k, 8, 8))], [table])
        return image.imread(path).shape[:2]

    assert draw(PANEL_MATCHES + 40) == draw(PANEL_MATCHES)
