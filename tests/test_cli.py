"""The `sharpgen` command: --help everywhere, real SHARP files in, one clear line for user mistakes."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest

from sharpgen.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", [[], ["properties"], ["retrieve"], ["config"]])
def test_every_command_explains_itself(command):
    code, out, _ = run_cli(*command, "--help")
    assert code == 0
    assert "usage: sharpgen" in out


def test_properties_of_real_sharps_reproduce_their_r_value_keyword(real_sharp_files):
    code, out, err = run_cli("properties", *map(str, real_sharp_files))
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert len(table) == 3
    assert (table["r_value"] - table["header_r_value"]).abs().max() <= 0.01
    for column in ("usflux", "psep_mm", "tilt_joy", "tuf", "psep", "r_paper"):
        assert column in table.columns
    assert (table["usflux"] > 1e21).all()  # large active regions, in Mx


def test_properties_as_json_is_machine_readable(real_sharp_files):
    code, out, _ = run_cli("properties", "--format", "json", str(real_sharp_files[0]))
    assert code == 0
    (record,) = json.loads(out)
    assert record["naxis1"] == 842 and record["naxis2"] == 532
    assert record["header_r_value"] == pytest.approx(3.252)


def test_unreadable_file_is_one_error_line_and_exit_code_2(tmp_path, real_sharp_files):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all")
    code, out, err = run_cli("properties", str(real_sharp_files[0]), str(junk), str(tmp_path / "missing.fits"))
    assert code == 2
    assert len(pd.read_csv(io.StringIO(out))) == 1  # the good file is still reported
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("sharpgen: error: ") for line in lines)
    assert "Traceback" not in err


def test_config_command_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthetic:\n  n_patchez: 3\n")
    code, _, err = run_cli("config", str(bad))
    assert code == 2
    assert "synthetic.n_patchez" in err and "Traceback" not in err


def test_config_command_prints_defaults(repo_root):
    code, out, _ = run_cli("config", str(repo_root / "config" / "test.yaml"))
    assert code == 0
    assert "noise_gauss: 10.0" in out


def test_jsoc_retrieve_without_email_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("JSOC_EMAIL", raising=False)
    settings = json.dumps({"server": "http://127.0.0.1:9/"})  # never contacted: the email check comes first
    code, _, err = run_cli("retrieve", "--source", "jsoc", "--out-dir", str(tmp_path), "--settings", settings)
    assert code == 2
    assert err.count("\n") == 1 and "JSOC_EMAIL" in err and "Traceback" not in err


@pytest.mark.slow
def test_query_refuses_k_above_the_index_and_empty_filters_before_writing_anything(test_run, tmp_path):
    size = len(pd.read_parquet(test_run / "retrieval" / "index" / "index_rows.parquet"))
    out = tmp_path / "query"
    request = ["query", "--run-dir", str(test_run), "--target", "tuf=0.05", "--out-dir", str(out)]
    code, _, err = run_cli(*request, "--k", str(size + 1))
    assert code == 2 and f"--k {size + 1}: the index holds only {size} patches; ask for at most {size}" in err
    code, _, err = run_cli(*request, "--abs-latitude", "89.9", "90", "--split", "test")
    assert code == 2 and "no indexed patch passes the filters (abs_latitude 89.9 to 90, splits test); widen them" in err
    assert "Filters(" not in err and "Traceback" not in err and not out.exists()
