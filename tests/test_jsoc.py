"""The ``jsoc`` source against a fake JSOC on 127.0.0.1, driven by the real ``drms`` client."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import drms
import numpy as np
import pandas as pd
import pytest
from fake_jsoc import REGISTERED_EMAIL, FakeJsoc, build_catalogue

from sharpgen.config import build_settings
from sharpgen.data.fitsio import read_sharp, write_sharp_fits
from sharpgen.data.sources.jsoc import (
    JsocSettings,
    compact_record_set,
    make_client,
    parse_rs_list,
    record_file_name,
    resolve_email,
    retrieve_jsoc,
    selection_reasons,
)
from sharpgen.data.sources.validate import MANIFEST_COLUMNS, check_sharp_file
from sharpgen.errors import SharpgenError

# The fake catalogue at 12 h cadence: 4 HARPs x 4 times = 16 records. Six fail the default filters
# (HARP 7001 has no NOAA number; HARP 4781 starts beyond |LON_FWT| 60 and has QUALITY 0x10400 once),
# one is 70 % NaN (rejected after download), nine are good.
N_RECORDS, N_FILTERED, N_OK = 16, 6, 9
WANTED = N_RECORDS - N_FILTERED


@pytest.fixture(scope="session")
def catalogue(real_sharp_files):
    return build_catalogue(real_sharp_files)


@pytest.fixture
def fake_jsoc(catalogue):
    """A running fake JSOC, stopped (stalled handlers woken, socket closed) after the test."""
    with FakeJsoc(catalogue) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _no_env_email(monkeypatch):
    monkeypatch.delenv("JSOC_EMAIL", raising=False)


def settings_for(fake: FakeJsoc, **changes) -> JsocSettings:
    """Settings for the fake catalogue with tiny waits, so every test takes about a second."""
    base = build_settings(
        JsocSettings,
        email=REGISTERED_EMAIL,
        start="2011.01.01_00:00:00_TAI",
        end="2011.01.02_12:00:00_TAI",
        cadence="12h",
        min_naxis=16,
        export_chunk=4,
        tries=3,
        timeout_s=2.0,
        poll_s=0.01,
        max_wait_s=0.05,
        export_timeout_s=10.0,
        server=fake.base_url,
    )
    return replace(base, **changes)


def ok_files(manifest: pd.DataFrame) -> list[str]:
    return sorted(manifest.loc[manifest["status"] == "ok", "file"])


def file_name_of(catalogue, harpnum: int, index: int) -> str:
    record = [r for r in catalogue if r.harpnum == harpnum][index]
    return record_file_name("hmi.sharp_cea_720s", harpnum, record.keywords["T_REC"], "Br")


# --- full retrieval ---------------------------------------------------------------------------------------


def test_full_retrieval_lands_every_record_and_rerun_fetches_nothing(fake_jsoc, tmp_path):
    out = tmp_path / "raw" / "jsoc"
    settings = settings_for(fake_jsoc)
    manifest = retrieve_jsoc(out, settings, progress=False)

    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(manifest) == N_RECORDS
    assert manifest["record"].is_unique
    counts = manifest["status"].value_counts().to_dict()
    assert counts == {"ok": N_OK, "rejected": N_FILTERED + 1}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), manifest)

    for row in manifest[manifest["status"] == "ok"].itertuples():
        record = read_sharp(out / row.file)
        assert record.field.shape == (row.naxis2, row.naxis1)
        assert record.header["HARPNUM"] == row.harpnum
        assert record.header["CUNIT1"] == "degree"
        assert np.isfinite(record.field).mean() >= 0.5
        assert row.reason == ""
        assert row.bytes == (out / row.file).stat().st_size
        assert row.export_id.startswith("JSOC_")
    assert sorted(p.name for p in out.glob("*.fits")) == ok_files(manifest)
    assert not list(out.glob(".tmp-*"))

    by_record = manifest.set_index("record")
    hex_quality = by_record.loc["hmi.sharp_cea_720s[4781][2011.01.02_00:00:00_TAI]"]
    assert hex_quality["quality"] == 0x10400 and "QUALITY 0x00010400" in hex_quality["reason"]
    limb = by_record.loc["hmi.sharp_cea_720s[4781][2011.01.01_00:00:00_TAI]"]
    assert limb["status"] == "rejected" and "|LON_FWT| 66.0 > 60 deg" in limb["reason"]
    assert (manifest.loc[manifest["harpnum"] == 7001, "reason"] == "no NOAA number (NOAA_AR 0)").all()
    nan_patch = by_record.loc["hmi.sharp_cea_720s[115][2011.01.02_12:00:00_TAI]"]
    assert nan_patch["status"] == "rejected" and nan_patch["reason"].startswith("finite fraction 0.30 < 0.5")
    missing_flux = by_record.loc["hmi.sharp_cea_720s[856][2011.01.01_12:00:00_TAI]"]
    assert missing_flux["status"] == "ok" and math.isnan(missing_flux["usflux_header"])
    assert by_record.loc["hmi.sharp_cea_720s[115][2011.01.01_00:00:00_TAI]", "noaa_ar"] == 11093

    # polite: a record set per chunk of 4, one export at a time, each file fetched once
    assert len(fake_jsoc.calls("jsoc_fetch", "exp_request")) == math.ceil(WANTED / 4)
    assert set(fake_jsoc.downloads.values()) == {1}
    assert len(fake_jsoc.calls("jsoc_info", "rs_list")) == 1

    # a rerun of a complete set asks for no export and downloads nothing
    before = {name: (out / name).stat().st_mtime_ns for name in ok_files(manifest)}
    requests_before = len(fake_jsoc.calls("jsoc_fetch", "exp_request"))
    downloads_before = sum(fake_jsoc.downloads.values())
    again = retrieve_jsoc(out, settings, progress=False)
    assert ok_files(again) == ok_files(manifest)
    assert len(fake_jsoc.calls("jsoc_fetch", "exp_request")) == requests_before + 1  # only the NaN patch
    assert sum(fake_jsoc.downloads.values()) == downloads_before + 1
    assert {name: (out / name).stat().st_mtime_ns for name in ok_files(again)} == before


def test_faults_complete_what_can_and_rerun_fills_the_gaps(fake_jsoc, catalogue, tmp_path):
    out = tmp_path / "jsoc"
    broken = file_name_of(catalogue, 115, 0)
    truncated = file_name_of(catalogue, 856, 0)
    stalled = file_name_of(catalogue, 856, 4)
    faults = fake_jsoc.faults
    faults.http500 = {"jsoc_info": 1, "checkAddress.sh": 1, "jsoc_fetch": 1, "file": 1}
    faults.hang_routes = {"jsoc_info": 1, "jsoc_fetch": 1}  # unanswered JSON requests time out, then retry
    faults.busy_exports = 1
    faults.pending_polls = 3
    faults.failed_exports = 1
    faults.http500_files = {broken}
    faults.truncate_files = {truncated}
    faults.hang_files = {stalled}
    settings = settings_for(fake_jsoc, timeout_s=0.4)

    started = time.monotonic()
    manifest = retrieve_jsoc(out, settings, progress=False)
    assert time.monotonic() - started < 20

    failed = manifest[manifest["status"] == "failed"]
    assert len(failed) == 3
    by_record = failed.set_index("record")["reason"].to_dict()
    reason_of = {
        name: by_record[r.name]
        for r in catalogue
        for name in (broken, truncated, stalled)
        if record_file_name("hmi.sharp_cea_720s", r.harpnum, r.keywords["T_REC"], "Br") == name
    }
    assert reason_of[broken] == "HTTP 500 after 3 tries"
    assert reason_of[truncated].startswith("truncated file (")
    assert reason_of[truncated].endswith("after 3 tries")
    assert reason_of[stalled] == "timed out after 3 tries"
    assert (manifest["status"] == "ok").sum() == N_OK - 3
    assert set(failed["file"]) == {""}
    assert not (out / broken).exists() and not (out / truncated).exists() and not (out / stalled).exists()
    assert not list(out.glob(".tmp-*"))
    assert faults.busy_exports == faults.failed_exports == 0
    assert not any(faults.http500.values()) and not any(faults.hang_routes.values())  # all met, overcome
    good = ok_files(manifest)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in good}
    fetched = dict(fake_jsoc.downloads)

    faults.clear()
    again = retrieve_jsoc(out, settings, progress=False)
    assert (again["status"] == "ok").sum() == N_OK
    assert set(ok_files(again)) == set(good) | {broken, truncated, stalled}
    assert {name: (out / name).stat().st_mtime_ns for name in good} == mtimes
    assert all(fake_jsoc.downloads[name] == 1 for name in good)  # good files were not fetched again
    for name in (broken, truncated, stalled):
        assert fake_jsoc.downloads[name] == fetched[name] + 1


# --- email ------------------------------------------------------------------------------------------------


def test_missing_email_is_one_line_error_before_any_request(fake_jsoc, tmp_path):
    with pytest.raises(SharpgenError) as caught:
        retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc, email=None), progress=False)
    message = str(caught.value)
    assert "\n" not in message and "JSOC_EMAIL" in message and "jsoc.email" in message
    assert fake_jsoc.requests == []
    assert not (tmp_path / "out").exists()


def test_unregistered_email_is_one_line_error_before_any_export(fake_jsoc, tmp_path):
    with pytest.raises(SharpgenError) as caught:
        retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc, email="nobody@example.com"), progress=False)
    message = str(caught.value)
    assert "\n" not in message and "nobody@example.com" in message and "register" in message
    assert [route for route, _ in fake_jsoc.requests] == ["checkAddress.sh"]


def test_email_comes_from_environment(monkeypatch, fake_jsoc):
    monkeypatch.setenv("JSOC_EMAIL", "  env@example.com ")
    assert resolve_email(settings_for(fake_jsoc, email=None)) == "env@example.com"
    assert resolve_email(settings_for(fake_jsoc)) == REGISTERED_EMAIL  # the config wins
    monkeypatch.setenv("JSOC_EMAIL", "not-an-address")
    with pytest.raises(SharpgenError, match="not an email address"):
        resolve_email(settings_for(fake_jsoc, email=None))


# --- export queue -----------------------------------------------------------------------------------------


def test_pending_export_of_same_email_is_waited_for(fake_jsoc, tmp_path):
    blocking = fake_jsoc.add_pending_export(REGISTERED_EMAIL, polls=3)
    manifest = retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc), progress=False)
    assert (manifest["status"] == "ok").sum() == N_OK
    polled = [p["requestid"] for p in fake_jsoc.calls("jsoc_fetch", "exp_status")]
    assert polled.count(blocking) >= 3  # status 7 named it; the client waited for it instead of hammering
    assert len(fake_jsoc.calls("jsoc_fetch", "exp_request")) == math.ceil(WANTED / 4) + 1


def test_stuck_export_fails_its_records_and_blocks_no_longer_than_the_timeout(fake_jsoc, tmp_path):
    fake_jsoc.faults.pending_polls = 10**6
    started = time.monotonic()
    manifest = retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc, export_timeout_s=0.3), progress=False)
    assert time.monotonic() - started < 5
    failed = manifest[manifest["status"] == "failed"]
    assert len(failed) == WANTED
    first = fake_jsoc.calls("jsoc_fetch", "exp_request")[0]
    assert first["notify"] == REGISTERED_EMAIL
    assert failed["reason"].str.contains("JSOC_20110101_001").all()
    assert failed["reason"].str.contains("still pending after 0.3 s|blocked by stuck").all()
    assert (tmp_path / "out" / "manifest.parquet").is_file()


def test_failing_export_is_reported_for_its_records(fake_jsoc, tmp_path):
    fake_jsoc.faults.failed_exports = 10**6
    manifest = retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc), progress=False)
    failed = manifest[manifest["status"] == "failed"]
    assert len(failed) == WANTED
    assert failed["reason"].str.startswith("export failed: Export failed: drms_open_records").all()
    assert failed["reason"].str.endswith("[status=4]").all()
    assert len(fake_jsoc.calls("jsoc_fetch", "exp_request")) == 3 * math.ceil(WANTED / 4)  # tries each


def test_too_large_export_is_split(fake_jsoc, tmp_path):
    fake_jsoc.faults.max_export_mb = 0.07  # about two of the fake's records
    manifest = retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc), progress=False)
    assert (manifest["status"] == "ok").sum() == N_OK
    assert len(fake_jsoc.exports) > math.ceil(WANTED / 4)


def test_record_missing_from_export_is_reported(fake_jsoc, catalogue, tmp_path):
    record = next(r for r in catalogue if r.harpnum == 856)
    fake_jsoc.faults.nodata_records = {record.name}
    manifest = retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc), progress=False).set_index("record")
    assert manifest.loc[record.name, "status"] == "failed"
    assert manifest.loc[record.name, "reason"].startswith("no file in JSOC export JSOC_")


# --- interruption -----------------------------------------------------------------------------------------


def test_killed_run_leaves_only_temporary_names_and_rerun_completes(fake_jsoc, catalogue, tmp_path):
    out = tmp_path / "out"
    stalled = file_name_of(catalogue, 856, 0)
    fake_jsoc.faults.hang_files = {stalled}
    settings = dataclasses.asdict(settings_for(fake_jsoc, timeout_s=60.0))
    script = (
        "import json, sys; from sharpgen.config import build_settings; "
        "from sharpgen.data.sources.jsoc import JsocSettings, retrieve_jsoc; "
        "settings = build_settings(JsocSettings, json.loads(sys.argv[2])); "
        "retrieve_jsoc(sys.argv[1], settings, progress=False)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(out), json.dumps(settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert fake_jsoc.hanging.wait(30), child.stderr.read().decode() if child.poll() is not None else ""
        time.sleep(0.2)  # the half-written body is on disk under its temporary name
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    assert not (out / "manifest.parquet").exists()
    assert not (out / stalled).exists()
    temporaries = list(out.glob(".tmp-*"))
    assert temporaries and all(stalled in p.name for p in temporaries)
    for path in out.glob("*.fits"):  # whatever carries a final name is complete and valid
        assert check_sharp_file(path).ok

    fake_jsoc.faults.clear()
    manifest = retrieve_jsoc(out, build_settings(JsocSettings, dict(settings, timeout_s=2.0)), progress=False)
    assert (manifest["status"] == "ok").sum() == N_OK
    assert not list(out.glob(".tmp-*"))


# --- the fake speaks drms ---------------------------------------------------------------------------------


def test_fake_answers_the_public_drms_api(fake_jsoc, tmp_path):
    client = drms.Client(fake_jsoc.server_config(), email=REGISTERED_EMAIL)
    assert client.series(r"sharp_cea") == ["hmi.sharp_cea_720s"]
    assert client.pkeys("hmi.sharp_cea_720s") == ["HARPNUM", "T_REC"]
    keys = client.query(
        "hmi.sharp_cea_720s[115][2011.01.01_00:00:00_TAI-2011.01.01_12:00:00_TAI@6h]",
        key="HARPNUM,T_REC,QUALITY",
        skip_conversion=["QUALITY"],
        rec_index=True,
    )
    assert list(keys["HARPNUM"]) == [115, 115, 115]
    assert list(keys["QUALITY"]) == ["0x00000000"] * 3  # hex strings, as JSOC sends them
    request = client.export("hmi.sharp_cea_720s[115][2011.01.01_00:00:00_TAI]{Br}")  # url_quick, as-is
    assert request.id is None and len(request.urls) == 1
    downloaded = request.download(str(tmp_path))
    assert read_sharp(downloaded["download"][0]).field.shape == (64, 96)
    with pytest.raises(ValueError, match="not registered"):
        drms.Client(fake_jsoc.server_config(), email="nobody@example.com")


def test_default_client_uses_the_settings_server_and_timeout(fake_jsoc):
    client = make_client(settings_for(fake_jsoc, timeout_s=0.25))
    assert client.check_email(REGISTERED_EMAIL)
    assert client._json._timeout_s == 0.25


# --- settings and helpers ---------------------------------------------------------------------------------


def test_settings_defaults_round_trip_and_record_set():
    settings = build_settings(JsocSettings)
    assert settings.series == "hmi.sharp_cea_720s" and settings.segment == "Br"
    assert build_settings(JsocSettings, dataclasses.asdict(settings)) == settings
    custom = build_settings(
        JsocSettings, {"harps": [377, 377], "start": "2011-02-14", "end": "2011-02-16T12:00", "cadence": "720m"}
    )
    assert custom.record_set() == ("hmi.sharp_cea_720s[377][2011.02.14_00:00:00_TAI-2011.02.16_12:00:00_TAI@12h]")
    assert custom.query_windows() == [("2011.02.14_00:00:00_TAI", "2011.02.16_12:00:00_TAI")]
    long = build_settings(JsocSettings, start="2011.01.01_00:00:00_TAI", end="2011.03.15_00:00:00_TAI", cadence="1d")
    windows = long.query_windows()
    assert windows[0] == ("2011.01.01_00:00:00_TAI", "2011.01.30_00:00:00_TAI")
    assert windows[1][0] == "2011.01.31_00:00:00_TAI" and windows[-1][1] == "2011.03.15_00:00:00_TAI"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"emial": "a@b.c"}, "unknown config key 'jsoc.emial'"),
        ({"cadence": "10m"}, "'jsoc.cadence'.*multiple of the series' 720 s"),
        ({"cadence": "often"}, "'jsoc.cadence'"),
        ({"segment": "bitmap"}, "'jsoc.segment'"),
        ({"series": "hmi.sharp_720s"}, "'jsoc.series'"),
        ({"harps": [10, 5]}, "'jsoc.harps'"),
        ({"start": "2012.01.01_TAI", "end": "2011.01.01_TAI"}, "'jsoc.end'.*before start"),
        ({"start": "yesterday"}, "'jsoc.start'"),
        ({"email": "nobody"}, "'jsoc.email'"),
        ({"tries": 0}, "'jsoc.tries'"),
        ({"server": "ftp://x"}, "'jsoc.server'"),
    ],
)
def test_bad_settings_name_the_key(mapping, message):
    with pytest.raises(SharpgenError, match=message):
        build_settings(JsocSettings, mapping)


def test_rs_list_parsing_reads_hex_quality_and_missing_values():
    answer = {
        "status": 0,
        "count": 2,
        "keywords": [
            {"name": "HARPNUM", "values": ["377", "377"]},
            {"name": "T_REC", "values": ["2011.02.15_00:00:00_TAI", "2011.02.15_12:00:00_TAI"]},
            {"name": "QUALITY", "values": ["0x00010400", "0x00000000"]},
            {"name": "LON_FWT", "values": ["MISSING", "-12.5"]},
            {"name": "USFLUX", "values": ["2.3e+22", "MISSING"]},
        ],
        "segments": [
            {
                "name": "Br",
                "values": ["/SUM1/D1/S00000/Br.fits", "NoDataDirectory"],
                "dims": ["744x377", "744x376"],
            }
        ],
        "recinfo": [
            {"name": "hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI]", "online": 1},
            {"name": "hmi.sharp_cea_720s[377][2011.02.15_12:00:00_TAI]", "online": 1},
        ],
    }
    rows = parse_rs_list(answer, "hmi.sharp_cea_720s", "Br")
    assert [r["quality"] for r in rows] == [0x10400, 0]
    assert (rows[0]["naxis1"], rows[0]["naxis2"]) == (744, 377)
    assert math.isnan(rows[0]["lon_fwt"]) and math.isnan(rows[1]["usflux_header"])
    assert rows[0]["noaa_ar"] == 0 and rows[0]["record"].endswith("[2011.02.15_00:00:00_TAI]")
    reasons = selection_reasons(rows[0], build_settings(JsocSettings))
    assert reasons == [
        "QUALITY 0x00010400 above max_quality 0x0000ffff",
        "LON_FWT missing",
        "no NOAA number (NOAA_AR 0)",
    ]
    small = dict(rows[1], noaa_ar=11158, naxis1=50, naxis2=40)
    assert selection_reasons(small, build_settings(JsocSettings)) == ["NAXIS 50x40 below min_naxis 64"]


def test_compact_record_set_names_exactly_the_records():
    times = [
        "2011.02.15_00:00:00_TAI",
        "2011.02.15_12:00:00_TAI",
        "2011.02.16_00:00:00_TAI",
        "2011.02.17_00:00:00_TAI",
    ]
    keys = [(377, t) for t in times] + [(401, "2011.03.01_00:00:00_TAI")]
    text = compact_record_set("hmi.sharp_cea_720s", "Br", keys, 43200)
    assert text == (
        "hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12h]{Br},"
        "hmi.sharp_cea_720s[377][2011.02.17_00:00:00_TAI]{Br},"
        "hmi.sharp_cea_720s[401][2011.03.01_00:00:00_TAI]{Br}"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"series": "hmi.sharp_cea_720s_nrt"}, r"JSOC has no series 'hmi.sharp_cea_720s_nrt' \(series not"),
        ({"segment": "Bp"}, "has no segment 'Bp' \\(it has: Br, magnetogram, bitmap\\)"),
        ({"start": "2015.01.01_00:00:00_TAI", "end": "2015.01.02_00:00:00_TAI"}, "JSOC has no records in"),
    ],
)
def test_wrong_series_segment_or_empty_selection_is_one_line_error(fake_jsoc, tmp_path, changes, message):
    with pytest.raises(SharpgenError, match=message) as caught:
        retrieve_jsoc(tmp_path / "out", settings_for(fake_jsoc, **changes), progress=False)
    assert "\n" not in str(caught.value)
    assert not fake_jsoc.calls("jsoc_fetch")


def test_unreachable_server_is_one_line_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = build_settings(
        JsocSettings, email=REGISTERED_EMAIL, server=f"http://127.0.0.1:{port}/", tries=2, poll_s=0.01
    )
    with pytest.raises(SharpgenError, match=r"cannot reach JSOC .* connection failed .* after 2 tries"):
        retrieve_jsoc(tmp_path / "out", settings, progress=False)


def test_rerun_refetches_damaged_files_and_rejects_unwanted_ones_without_download(fake_jsoc, tmp_path):
    out = tmp_path / "out"
    settings = settings_for(fake_jsoc)
    first = retrieve_jsoc(out, settings, progress=False)
    damaged, emptied, *_ = ok_files(first)
    data = (out / damaged).read_bytes()
    (out / damaged).write_bytes(data[: len(data) - 3000])  # cut by something outside the run
    record = read_sharp(out / emptied)
    header = {
        k: record.header[k]
        for k in ("HARPNUM", "T_REC", "CTYPE1", "CTYPE2", "CDELT1", "CDELT2", "CUNIT1", "CUNIT2", "BUNIT")
    }
    write_sharp_fits(out / emptied, np.full(record.field.shape, np.nan), header)  # intact but all NaN
    fetched = dict(fake_jsoc.downloads)

    again = retrieve_jsoc(out, settings, progress=False).set_index("file", drop=False)
    assert again.loc[damaged, "status"] == "ok" and fake_jsoc.downloads[damaged] == fetched[damaged] + 1
    assert (out / damaged).read_bytes() == data
    row = again[again["record"] == first.set_index("file").loc[emptied, "record"]].iloc[0]
    assert row["status"] == "rejected" and row["reason"] == "finite fraction 0.00 < 0.5"
    assert fake_jsoc.downloads[emptied] == fetched[emptied] and not (out / emptied).exists()
