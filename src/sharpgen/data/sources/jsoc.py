"""The ``jsoc`` source: SHARP CEA records from JSOC through the ``drms`` client, resumable and polite.

Flow of :func:`retrieve_jsoc`:

1. the export email (``jsoc.email`` or ``JSOC_EMAIL``) must be present and registered at JSOC, checked
   before anything else (one :class:`SharpgenError` line otherwise);
2. one keyword query (``jsoc_info op=rs_list``) per 30-day window of the record set
   ``series[harps][start-end@cadence]`` fetches HARPNUM, T_REC, NOAA_AR, QUALITY, LAT/LON_FWT, USFLUX,
   R_VALUE, CDELT1 and the segment's image size; the selection filters run on these values;
3. files already in ``out_dir`` from an earlier run are kept (verified unless the old manifest vouches for
   them), so a rerun fetches only what is missing;
4. the missing records are exported in chunks (``method=url``, ``protocol=fits``: files with all keywords
   in the header), one export at a time per email as JSOC asks, polling with exponential backoff; a
   "pending export exists" answer (status 7) waits for that export, a "too large" answer (status 3) splits
   the chunk;
5. each file is downloaded over one connection to a temporary name, verified (complete FITS, CEA field map,
   size announced by the keyword query, finite fraction) and renamed atomically;
6. ``manifest.parquet`` (one row per record: ok / rejected / failed with a reason) is written last.

Deliberate detours around ``drms`` 0.9 (pinned behaviour, covered by tests): the keyword query calls the
client's JSON layer (``client._json.rs_list``) because ``Client.query`` drops the segment ``dims`` that JSOC
returns, and converts QUALITY itself (JSOC sends hex strings that ``drms`` turns into NaN under pandas 3);
:func:`make_client` gives the client a per-request timeout (``drms`` only honours the global socket
timeout); files are fetched with ``urllib`` rather than ``ExportRequest.download``, which logs a failed
download instead of raising and has neither retries nor verification.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import math
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from ...atomic import atomic_path
from ...errors import SharpgenError
from ...progress import progress_bar
from .validate import (
    FileCheck,
    check_many,
    check_sharp_file,
    read_previous_manifest,
    remove_stale_temporaries,
    write_manifest,
)

if TYPE_CHECKING:
    import drms

log = logging.getLogger(__name__)

SECTION = "jsoc"

REGISTER_URL = "http://jsoc.stanford.edu/ajax/register_email.html"

QUERY_KEYWORDS = (
    "HARPNUM", "T_REC", "NOAA_AR", "NOAA_NUM", "QUALITY", "LAT_FWT", "LON_FWT", "USFLUX", "R_VALUE", "CDELT1",
)  # fmt: skip
"""Keywords of the keyword query (those the series lacks are skipped)."""

QUERY_WINDOW_S = 30 * 86400
"""Time span of one keyword query, in s (rounded up to a whole number of cadence steps)."""

EXPORT_MAX_MB = 10_000
"""Largest export request, in MB of uncompressed int32 pixels (JSOC's smallest cap, for decompressed data)."""

EXPORT_MAX_DS_CHARS = 3000
"""Longest record-set string in one export request (it travels in a GET URL)."""

USER_AGENT = "sharpgen (SHARP retrieval; one connection)"
"""User-Agent of file downloads (JSON requests carry drms's own)."""

EXTRA_COLUMNS = {"noaa_num": "int", "export_id": "str"}
"""Manifest columns of this source beyond :data:`validate.MANIFEST_COLUMNS`."""

_TIME_RE = re.compile(r"(\d{4})[.-](\d{1,2})[.-](\d{1,2})(?:[_T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d*)?)?)?(?:_TAI)?")
_CADENCE_RE = re.compile(r"(\d+(?:\.\d*)?)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RECORD_RE = re.compile(r"\[\s*(\d+)\s*\]\s*\[\s*([^\]]+?)\s*\]")
_REQUEST_ID_RE = re.compile(r"JSOC_\d{8}_\d+(?:_[A-Z_]+)?")
_PENDING = (1, 2, 6)


# --- time helpers -----------------------------------------------------------------------------------------


def parse_tai(text: str) -> datetime:
    """Parse a JSOC (``2011.02.15_00:12:00_TAI``) or ISO (``2011-02-15T00:12:00``) time, read as TAI."""
    match = _TIME_RE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a time: {text!r}")
    year, month, day, hour, minute, second = (int(part) if part else 0 for part in match.groups())
    return datetime(year, month, day, hour, minute, second)


def format_tai(moment: datetime) -> str:
    """Format a TAI time the way JSOC prints T_REC (``2011.02.15_00:12:00_TAI``)."""
    return moment.strftime("%Y.%m.%d_%H:%M:%S_TAI")


def parse_cadence(text: str) -> int:
    """Seconds in a DRMS step such as ``720s``, ``12m``, ``1h`` or ``1d``."""
    match = _CADENCE_RE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a cadence: {text!r}")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"not a whole positive number of seconds: {text!r}")
    return int(seconds)


def format_cadence(seconds: int) -> str:
    """DRMS step string for ``seconds`` in the largest exact unit (``86400`` -> ``1d``)."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


def record_file_name(series: str, harpnum: int, t_rec: str, segment: str) -> str:
    """Local file name of a record, as JSOC names exported files.

    Example: ``hmi.sharp_cea_720s.377.20110215_000000_TAI.Br.fits``.
    """
    compact = re.sub(r"[.:\-]", "", t_rec)
    return f"{series}.{harpnum}.{compact}.{segment}.fits"


def _record_key(harpnum: int, t_rec: str) -> tuple[int, str]:
    try:
        return int(harpnum), format_tai(parse_tai(t_rec))
    except ValueError:
        return int(harpnum), t_rec.strip()


# --- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsocSettings:
    """Settings of the ``jsoc`` source (schema section ``jsoc``; build with :func:`sharpgen.config.build_settings`).

    Times are TAI. ``max_abs_lon_deg`` None disables the limb cut; ``harps`` None means every HARP. Building
    checks what the schema cannot: times and cadence parse, ``harps`` and ``start``/``end`` are ordered, the
    cadence fits a 720 s series; times, cadence and ``server`` are stored in their canonical form.
    """

    SECTION: ClassVar[str] = SECTION

    email: str | None
    series: str
    segment: str
    harps: tuple[int, int] | None
    start: str
    end: str
    cadence: str
    max_quality: int
    max_abs_lon_deg: float | None
    noaa_only: bool
    min_naxis: int
    min_finite_fraction: float
    export_chunk: int
    tries: int
    timeout_s: float
    poll_s: float
    max_wait_s: float
    export_timeout_s: float
    server: str

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self.harps is not None and self.harps[0] > self.harps[1]:
            raise SharpgenError(f"config key 'jsoc.harps': first {self.harps[0]} is above last {self.harps[1]}")
        times = {}
        for key in ("start", "end"):
            try:
                times[key] = parse_tai(getattr(self, key))
            except ValueError:
                raise SharpgenError(
                    f"config key 'jsoc.{key}': {getattr(self, key)!r} is not a time "
                    "(use 2011.02.15_00:00:00_TAI or 2011-02-15T00:00:00)"
                ) from None
            put(self, key, format_tai(times[key]))
        if times["start"] > times["end"]:
            raise SharpgenError(f"config key 'jsoc.end': {self.end} is before start {self.start}")
        try:
            step = parse_cadence(self.cadence)
        except ValueError:
            raise SharpgenError(
                f"config key 'jsoc.cadence': {self.cadence!r} is not a step such as 720s, 12m, 1h or 1d"
            ) from None
        if "_720s" in self.series.lower() and step % 720:
            raise SharpgenError(
                f"config key 'jsoc.cadence': {self.cadence!r} is not a multiple of the series' 720 s slots"
            )
        put(self, "cadence", format_cadence(step))
        put(self, "server", self.server if self.server.endswith("/") else self.server + "/")

    @property
    def cadence_s(self) -> int:
        """Cadence in seconds."""
        return parse_cadence(self.cadence)

    def record_set(self, start: str | None = None, end: str | None = None) -> str:
        """DRMS record set ``series[harps][start-end@cadence]`` (times default to the configured range)."""
        harps = (
            ""
            if self.harps is None
            else (str(self.harps[0]) if self.harps[0] == self.harps[1] else f"{self.harps[0]}-{self.harps[1]}")
        )
        return f"{self.series}[{harps}][{start or self.start}-{end or self.end}@{self.cadence}]"

    def query_windows(self) -> list[tuple[str, str]]:
        """(start, end) TAI strings of the keyword-query windows covering the range on the cadence grid."""
        step = self.cadence_s
        span = max(1, math.ceil(QUERY_WINDOW_S / step)) * step
        first, last = parse_tai(self.start), parse_tai(self.end)
        windows = []
        begin = first
        while begin <= last:
            stop = min(begin + timedelta(seconds=span - step), last)
            windows.append((format_tai(begin), format_tai(stop)))
            begin += timedelta(seconds=span)
        return windows


# --- the drms client --------------------------------------------------------------------------------------


def server_config(base_url: str) -> drms.ServerConfig:
    """``drms`` server configuration for a JSOC-like server at ``base_url`` (CGIs under ``cgi-bin/ajax/``)."""
    import drms

    base = base_url if base_url.endswith("/") else base_url + "/"
    return drms.ServerConfig(
        name="SHARPGEN-JSOC",
        cgi_baseurl=base + "cgi-bin/ajax/",
        cgi_show_series="show_series",
        cgi_jsoc_info="jsoc_info",
        cgi_jsoc_fetch="jsoc_fetch",
        cgi_check_address="checkAddress.sh",
        http_download_baseurl=base,
    )


@functools.cache
def _timeout_json_client() -> type:
    import drms

    class TimeoutJsonClient(drms.HttpJsonClient):
        """``drms`` JSON transport whose requests time out after ``timeout_s`` seconds."""

        def __init__(self, server: drms.ServerConfig, timeout_s: float) -> None:
            super().__init__(server)
            self._timeout_s = timeout_s

        def _json_request(self, url):
            return drms.HttpJsonRequest(url, self.server.encoding, timeout=self._timeout_s)

    return TimeoutJsonClient


def make_client(settings: JsocSettings) -> drms.Client:
    """A ``drms.Client`` for ``settings.server``; each JSON request times out after ``settings.timeout_s``.

    ``drms`` is imported here, not at module import: importing it calls ``logging.basicConfig``.
    """
    import drms

    config = server_config(settings.server)
    client = drms.Client(config)
    client._json = _timeout_json_client()(config, settings.timeout_s)
    return client


# --- retries ----------------------------------------------------------------------------------------------


class _GaveUp(Exception):
    """A request failed for good; ``reason`` is the short text for the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Incomplete(Exception):
    """Fewer bytes arrived than the server announced."""


class _Damaged(Exception):
    """A downloaded file failed verification in a way a fresh download may fix."""

    def __init__(self, check: FileCheck) -> None:
        super().__init__(check.reason)
        self.check = check


_TRANSIENT = (
    urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, _Incomplete,
    json.JSONDecodeError, UnicodeDecodeError, _Damaged,
)  # fmt: skip


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500 and exc.code not in (408, 429)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, _Damaged):
        return exc.check.reason
    if isinstance(exc, TimeoutError | socket.timeout) or (
        isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, TimeoutError | socket.timeout)
    ):
        return "timed out"
    if isinstance(exc, _Incomplete | http.client.IncompleteRead):
        return "incomplete download"
    if isinstance(exc, urllib.error.URLError):
        return f"connection failed ({exc.reason})"
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return f"connection failed ({exc.__class__.__name__})"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return "garbled answer"
    return exc.__class__.__name__


# --- keyword query parsing --------------------------------------------------------------------------------


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _integer(text, default: int) -> int:
    """Integer from a JSOC keyword string, decimal or hex (``0x00010400``); ``default`` when missing."""
    try:
        return int(str(text).strip(), 0)
    except ValueError:
        number = _number(text)
        return int(number) if math.isfinite(number) else default


def _dims(text) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(text or ""))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def parse_rs_list(answer: Mapping, series: str, segment: str) -> list[dict]:
    """Manifest rows (keyword fields, ``naxis1/2`` from the segment dims) of an ``rs_list`` answer."""
    keywords = {item["name"]: item.get("values", []) for item in answer.get("keywords", [])}
    count = int(answer.get("count", len(next(iter(keywords.values()), []))))
    names = [item.get("name", "") for item in answer.get("recinfo", [])]
    seg = next((item for item in answer.get("segments", []) if item.get("name") == segment), {})
    dims = seg.get("dims", [])
    rows = []
    for i in range(count):

        def value(key, i=i):
            column = keywords.get(key)
            return column[i] if column is not None and i < len(column) else "MISSING"

        harpnum = _integer(value("HARPNUM"), 0)
        t_rec = str(value("T_REC")).strip()
        naxis1, naxis2 = _dims(dims[i] if i < len(dims) else "")
        rows.append(
            {
                "record": names[i] if i < len(names) and names[i] else f"{series}[{harpnum}][{t_rec}]",
                "harpnum": harpnum,
                "t_rec": t_rec,
                "noaa_ar": _integer(value("NOAA_AR"), 0),
                "noaa_num": _integer(value("NOAA_NUM"), 0),
                "quality": _integer(value("QUALITY"), -1),
                "lat_fwt": _number(value("LAT_FWT")),
                "lon_fwt": _number(value("LON_FWT")),
                "usflux_header": _number(value("USFLUX")),
                "r_value_header": _number(value("R_VALUE")),
                "cdelt1_deg": abs(_number(value("CDELT1"))),
                "naxis1": naxis1,
                "naxis2": naxis2,
                "segment": segment,
            }
        )
    return rows


def selection_reasons(row: Mapping, settings: JsocSettings) -> list[str]:
    """Why the selection filters of ``settings`` drop a keyword-query row (empty when it is kept)."""
    reasons = []
    quality = row["quality"]
    if quality < 0:
        reasons.append("QUALITY missing")
    elif quality > settings.max_quality:
        reasons.append(f"QUALITY 0x{quality:08x} above max_quality 0x{settings.max_quality:08x}")
    if settings.max_abs_lon_deg is not None:
        lon = row["lon_fwt"]
        if not math.isfinite(lon):
            reasons.append("LON_FWT missing")
        elif abs(lon) > settings.max_abs_lon_deg:
            reasons.append(f"|LON_FWT| {abs(lon):.1f} > {settings.max_abs_lon_deg:g} deg")
    if settings.noaa_only and row["noaa_ar"] <= 0:
        reasons.append("no NOAA number (NOAA_AR 0)")
    if row["naxis1"] and row["naxis2"] and min(row["naxis1"], row["naxis2"]) < settings.min_naxis:
        reasons.append(f"NAXIS {row['naxis1']}x{row['naxis2']} below min_naxis {settings.min_naxis}")
    return reasons


def compact_record_set(series: str, segment: str, keys: list[tuple[int, str]], cadence_s: int) -> str:
    """Shortest comma-joined DRMS record set naming exactly ``keys`` ((HARPNUM, T_REC) pairs).

    Runs of T_REC spaced by the cadence become ``series[h][t1-t2@step]{segment}``, lone ones
    ``series[h][t]{segment}``.
    """
    by_harp: dict[int, list[datetime]] = {}
    for harpnum, t_rec in keys:
        by_harp.setdefault(harpnum, []).append(parse_tai(t_rec))
    parts = []
    step = timedelta(seconds=cadence_s)
    for harpnum in sorted(by_harp):
        times = sorted(set(by_harp[harpnum]))
        run = [times[0]]
        for moment in times[1:] + [None]:
            if moment is not None and moment - run[-1] == step:
                run.append(moment)
                continue
            span = (
                format_tai(run[0])
                if len(run) == 1
                else (f"{format_tai(run[0])}-{format_tai(run[-1])}@{format_cadence(cadence_s)}")
            )
            parts.append(f"{series}[{harpnum}][{span}]{{{segment}}}")
            run = [moment]
    return ",".join(parts)


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class _Export:
    """One export: ``urls`` by record key, or ``reason`` for the whole chunk; ``too_large`` asks to split."""

    request_id: str = ""
    urls: dict | None = None
    reason: str = ""
    too_large: bool = False


class _JsocRun:
    """State of one :func:`retrieve_jsoc` call."""

    def __init__(
        self,
        out_dir: Path,
        settings: JsocSettings,
        client: drms.Client,
        email: str,
        workers: int,
        progress: bool,
    ) -> None:
        self.out_dir = out_dir
        self.s = settings
        self.client = client
        self.email = email
        self.workers = workers
        self.progress = progress
        self.stuck: set[str] = set()

    # .. retries ..

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` + 1 (``poll_s`` doubling, capped at ``max_wait_s``)."""
        return min(self.s.poll_s * 2 ** max(attempt - 1, 0), self.s.max_wait_s)

    def retry(self, call: Callable, tries: int | None = None):
        """Run ``call`` up to ``tries`` times on transient errors, else raise :class:`_GaveUp`."""
        tries = tries or self.s.tries
        last: BaseException | None = None
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff(attempt))
            try:
                return call()
            except _TRANSIENT as exc:
                if _permanent(exc):
                    raise _GaveUp(_describe(exc)) from exc
                last = exc
                log.debug("try %d of %d failed: %s", attempt + 1, tries, exc)
        text = _describe(last)
        raise _GaveUp(f"{text} after {tries} tries" if tries > 1 else text)

    # .. metadata ..

    def check_email(self) -> None:
        try:
            registered = self.retry(lambda: self.client.check_email(self.email))
        except _GaveUp as gave_up:
            raise SharpgenError(
                f"cannot reach JSOC at {self.s.server} to check the export email {self.email!r}: {gave_up.reason}"
            ) from None
        if not registered:
            raise SharpgenError(
                f"JSOC does not know {self.email!r} as a registered export email; register "
                f"it at {REGISTER_URL} (or set jsoc.email / JSOC_EMAIL to one that is)"
            )

    def query_keys(self) -> list[str]:
        import drms

        try:
            info = self.retry(lambda: self.client.info(self.s.series))
        except _GaveUp as gave_up:
            raise SharpgenError(
                f"JSOC at {self.s.server} did not describe series {self.s.series}: {gave_up.reason}"
            ) from None
        except drms.DrmsQueryError as exc:
            raise SharpgenError(f"JSOC has no series {self.s.series!r} ({exc})") from None
        segments = list(info.segments.index)
        if self.s.segment not in segments:
            raise SharpgenError(
                f"series {self.s.series} has no segment {self.s.segment!r} (it has: {', '.join(segments)})"
            )
        keys = [key for key in QUERY_KEYWORDS if key in info.keywords.index]
        missing = {"HARPNUM", "T_REC"} - set(keys)
        if missing:
            raise SharpgenError(f"series {self.s.series} lacks the keywords {', '.join(sorted(missing))}")
        return keys

    def keyword_rows(self) -> list[dict]:
        """Keyword-query rows of the configured record set, one per record (query windows merged)."""
        import drms

        keys = self.query_keys()
        rows: dict[tuple[int, str], dict] = {}
        windows = self.s.query_windows()
        for start, end in progress_bar(
            iterable=windows,
            desc="jsoc keyword query",
            unit="window",
            file=sys.stderr,
            disable=not self.progress or len(windows) < 2,
        ):
            record_set = self.s.record_set(start, end)

            def query(record_set=record_set):
                answer = self.client._json.rs_list(record_set, key=keys, seg=self.s.segment, recinfo=True)
                if int(answer.get("status", 1)) != 0:
                    raise drms.DrmsQueryError(
                        f"{answer.get('error') or 'query failed'} [status={answer.get('status')}]"
                    )
                return answer

            try:
                answer = self.retry(query)
            except _GaveUp as gave_up:
                raise SharpgenError(f"JSOC keyword query for {record_set} failed: {gave_up.reason}") from None
            except drms.DrmsQueryError as exc:
                raise SharpgenError(f"JSOC rejected the record set {record_set}: {exc}") from None
            for row in parse_rs_list(answer, self.s.series, self.s.segment):
                rows.setdefault(_record_key(row["harpnum"], row["t_rec"]), row)
        if not rows:
            raise SharpgenError(
                f"JSOC has no records in {self.s.record_set()} (check jsoc.start, jsoc.end, "
                "jsoc.harps and jsoc.cadence)"
            )
        return [rows[key] for key in sorted(rows)]

    # .. exports ..

    def export_error(self, request) -> str:
        import drms

        try:
            request.data  # noqa: B018 - raises DrmsExportError with JSOC's message for a failed request
        except drms.DrmsExportError as exc:
            return str(exc)
        return f"export failed [status={request.status}]"

    def poll(self, request, deadline: float) -> bool:
        """Poll ``request`` with growing waits until it is no longer pending; False past ``deadline``."""
        wait = self.s.poll_s
        errors = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(wait, left))
            try:
                finished = request.has_finished()
            except _TRANSIENT as exc:
                errors += 1
                if errors >= self.s.tries:
                    raise _GaveUp(f"export status: {_describe(exc)} after {errors} tries") from exc
                continue
            errors = 0
            if finished:
                return True
            wait = min(wait * 2, self.s.max_wait_s)

    def export(self, keys: list[tuple[int, str]]) -> _Export:
        """Export the records ``keys`` (one request, retried) and return their download URLs or a reason."""
        import drms

        record_set = compact_record_set(self.s.series, self.s.segment, keys, self.s.cadence_s)
        name_format = f"{self.s.series}.{{HARPNUM}}.{{T_REC:A}}.{{segment}}"
        deadline = time.monotonic() + self.s.export_timeout_s
        failures = 0
        refusals = 0
        while True:
            try:
                request = self.retry(
                    lambda: self.client.export(
                        record_set, method="url", protocol="fits", email=self.email, filenamefmt=name_format
                    )
                )
            except _GaveUp as gave_up:
                return _Export(reason=f"export request: {gave_up.reason}")
            status = request.status
            if status == 7:  # this email already has a pending export: wait for it, then ask again
                message = self.export_error(request)
                blocking = _REQUEST_ID_RE.search(message)
                if blocking and blocking.group(0) in self.stuck:
                    return _Export(reason=f"export blocked by stuck JSOC request {blocking.group(0)}")
                if time.monotonic() >= deadline:
                    return _Export(reason=f"export refused for {self.s.export_timeout_s:g} s: {message}")
                log.info("JSOC has a pending export for %s; waiting (%s)", self.email, message)
                refusals += 1
                if blocking:
                    try:
                        if not self.poll(self.client.export_from_id(blocking.group(0)), deadline):
                            self.stuck.add(blocking.group(0))
                    except (_GaveUp, *_TRANSIENT):
                        time.sleep(self.backoff(refusals))
                else:
                    time.sleep(self.backoff(refusals))
                continue
            if status == 3:  # larger than JSOC's cap: split, unless it is a single record
                if len(keys) > 1:
                    return _Export(too_large=True)
                return _Export(reason=f"export failed: {self.export_error(request)}")
            request_id = request.id or ""
            if status in _PENDING:
                try:
                    finished = self.poll(request, deadline)
                except _GaveUp as gave_up:
                    return _Export(request_id, reason=gave_up.reason)
                if not finished:
                    self.stuck.add(request_id)
                    return _Export(
                        request_id,
                        reason=f"export {request_id} still pending after {self.s.export_timeout_s:g} s",
                    )
            if request.has_succeeded(skip_update=True):
                try:
                    table = request.urls
                except (drms.DrmsExportError, KeyError, TypeError, ValueError) as exc:
                    return _Export(request_id, reason=f"unreadable export answer ({exc})")
                urls = {}
                for record, url in zip(table["record"], table["url"], strict=True):
                    match = _RECORD_RE.search(str(record))
                    if match:
                        urls[_record_key(int(match.group(1)), match.group(2))] = url
                return _Export(request_id, urls=urls)
            failures += 1
            message = self.export_error(request)
            if failures >= self.s.tries or time.monotonic() >= deadline:
                return _Export(request_id, reason=f"export failed: {message}")
            log.info("JSOC export %s failed (%s); asking again", request_id, message)
            time.sleep(self.backoff(failures))

    def plan_chunks(self, rows: list[dict]) -> list[list[dict]]:
        """Split ``rows`` into export chunks under the record-count, size and URL-length caps."""
        chunks: list[list[dict]] = []
        current: list[dict] = []
        size_mb = 0.0
        for row in rows:
            row_mb = 4e-6 * row["naxis1"] * row["naxis2"]
            if current and (len(current) >= self.s.export_chunk or size_mb + row_mb > EXPORT_MAX_MB):
                chunks.append(current)
                current, size_mb = [], 0.0
            current.append(row)
            size_mb += row_mb
        if current:
            chunks.append(current)
        return [part for chunk in chunks for part in self._short_enough(chunk)]

    def _short_enough(self, chunk: list[dict]) -> list[list[dict]]:
        keys = [(row["harpnum"], row["t_rec"]) for row in chunk]
        text = compact_record_set(self.s.series, self.s.segment, keys, self.s.cadence_s)
        if len(chunk) == 1 or len(text) <= EXPORT_MAX_DS_CHARS:
            return [chunk]
        half = len(chunk) // 2
        return self._short_enough(chunk[:half]) + self._short_enough(chunk[half:])

    # .. files ..

    def fetch(self, url: str, target: Path) -> None:
        """Stream ``url`` into ``target``; raise :class:`_Incomplete` if fewer bytes arrive than announced."""
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        received = 0
        with urllib.request.urlopen(request, timeout=self.s.timeout_s) as answer, open(target, "wb") as out:
            announced = answer.headers.get("Content-Length")
            while block := answer.read(1 << 20):
                out.write(block)
                received += len(block)
        if announced is not None and received != int(announced):
            raise _Incomplete(f"{received} of {announced} bytes")

    def verify(self, path: Path, row: Mapping) -> FileCheck:
        shape = (row["naxis1"], row["naxis2"]) if row["naxis1"] and row["naxis2"] else None
        return check_sharp_file(
            path,
            min_finite_fraction=self.s.min_finite_fraction,
            segment=self.s.segment,
            expected_shape=shape,
            expected_harpnum=row["harpnum"],
        )

    def download(self, url: str, row: dict) -> None:
        """Download, verify and atomically place one record's file; fill ``row`` status/reason/fields."""
        target = self.out_dir / row["file"]
        rejected: list[FileCheck] = []

        def attempt():
            with atomic_path(target) as tmp:
                self.fetch(url, tmp)
                check = self.verify(tmp, row)
                if check.damaged:
                    raise _Damaged(check)
                if not check.ok:
                    rejected.append(check)
                    raise _Unwanted()
                row["finite_fraction"] = check.meta.get("finite_fraction", math.nan)

        try:
            self.retry(attempt)
        except _GaveUp as gave_up:
            row.update(status="failed", reason=gave_up.reason, file="")
            return
        except _Unwanted:
            row.update(
                status="rejected",
                reason=rejected[-1].reason,
                file="",
                finite_fraction=rejected[-1].meta.get("finite_fraction", math.nan),
            )
            return
        row.update(status="ok", reason="", bytes=target.stat().st_size)

    def reuse_existing(self, wanted: list[dict]) -> list[dict]:
        """Mark rows whose file is already in ``out_dir`` as ok; return the rows still to download."""
        previous = read_previous_manifest(self.out_dir)
        vouched: dict[str, tuple[int, float]] = {}
        if previous is not None and {"file", "status", "bytes"} <= set(previous.columns):
            good = previous[previous["status"] == "ok"]
            fractions = good["finite_fraction"] if "finite_fraction" in good else [math.nan] * len(good)
            vouched = {f: (int(b), float(x)) for f, b, x in zip(good["file"], good["bytes"], fractions, strict=True)}
        to_check, missing = [], []
        for row in wanted:
            path = self.out_dir / row["file"]
            if not path.is_file():
                missing.append(row)
            elif (
                row["file"] in vouched
                and vouched[row["file"]][0] == path.stat().st_size
                and vouched[row["file"]][1] >= self.s.min_finite_fraction
            ):
                row.update(status="ok", reason="", bytes=path.stat().st_size, finite_fraction=vouched[row["file"]][1])
            else:
                to_check.append(row)
        checks = check_many(
            [(self.out_dir / row["file"], self.verify_kwargs(row)) for row in to_check],
            workers=self.workers,
            progress=self.progress,
            desc="jsoc verify existing",
        )
        for row, check in zip(to_check, checks, strict=True):
            path = self.out_dir / row["file"]
            fraction = check.meta.get("finite_fraction", math.nan)
            if check.ok:
                row.update(status="ok", reason="", bytes=path.stat().st_size, finite_fraction=fraction)
            elif check.damaged:
                log.info("re-fetching %s: %s", row["file"], check.reason)
                path.unlink(missing_ok=True)
                missing.append(row)
            else:  # intact but unwanted under the current settings: no point fetching it again
                path.unlink(missing_ok=True)
                row.update(status="rejected", reason=check.reason, file="", finite_fraction=fraction)
        return missing

    def verify_kwargs(self, row: Mapping) -> dict:
        shape = (row["naxis1"], row["naxis2"]) if row["naxis1"] and row["naxis2"] else None
        return {
            "min_finite_fraction": self.s.min_finite_fraction,
            "segment": self.s.segment,
            "expected_shape": shape,
            "expected_harpnum": row["harpnum"],
        }

    def fetch_missing(self, missing: list[dict]) -> None:
        """Export and download ``missing`` rows chunk by chunk, filling their status."""
        queue = deque(self.plan_chunks(missing))
        with progress_bar(
            total=len(missing), desc="jsoc downloads", unit="file", file=sys.stderr, disable=not self.progress
        ) as bar:
            while queue:
                chunk = queue.popleft()
                result = self.export([(row["harpnum"], row["t_rec"]) for row in chunk])
                if result.too_large:
                    half = len(chunk) // 2
                    queue.extendleft([chunk[half:], chunk[:half]])
                    continue
                for row in chunk:
                    row["export_id"] = result.request_id
                    url = None if result.urls is None else result.urls.get(_record_key(row["harpnum"], row["t_rec"]))
                    if result.urls is None:
                        row.update(status="failed", reason=result.reason, file="")
                    elif url is None:
                        row.update(status="failed", file="", reason=f"no file in JSOC export {result.request_id}")
                    else:
                        self.download(url, row)
                    bar.update(1)


class _Unwanted(Exception):
    """A downloaded file is intact but fails a content check (status 'rejected')."""


def resolve_email(settings: JsocSettings) -> str:
    """The export email: ``settings.email``, else ``JSOC_EMAIL``; one-line :class:`SharpgenError` if none."""
    email = settings.email or os.environ.get("JSOC_EMAIL", "").strip() or None
    if not email:
        raise SharpgenError(
            "JSOC exports need a registered email: set jsoc.email in the config or the "
            f"JSOC_EMAIL environment variable (register one at {REGISTER_URL})"
        )
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise SharpgenError(f"JSOC export email {email!r} (from JSOC_EMAIL) is not an email address")
    return email


def retrieve_jsoc(
    out_dir: str | os.PathLike,
    settings: JsocSettings,
    workers: int = 1,
    progress: bool = True,
    client_factory: Callable[[JsocSettings], drms.Client] | None = None,
) -> pd.DataFrame:
    """Fill ``out_dir`` with the SHARP records selected by ``settings`` and return the manifest.

    Files already there from an earlier run are kept; only missing ones are exported and downloaded.
    ``workers`` processes verify kept files (downloads use one connection, as JSOC asks). ``client_factory``
    builds the ``drms.Client`` (default :func:`make_client`). Writes ``manifest.parquet`` last; raises
    :class:`SharpgenError` for a missing or unregistered email, an unknown series or segment, or a keyword
    query JSOC will not answer. Records that cannot be fetched are reported, not raised.
    """
    out_dir = Path(out_dir)
    email = resolve_email(settings)
    client = (client_factory or make_client)(settings)
    run = _JsocRun(out_dir, settings, client, email, workers=max(1, int(workers)), progress=progress)
    run.check_email()
    rows = run.keyword_rows()
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(out_dir)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    wanted = []
    for row in rows:
        row.update(file="", bytes=0, export_id="", finite_fraction=math.nan)
        reasons = selection_reasons(row, settings)
        if reasons:
            row.update(status="rejected", reason="; ".join(reasons))
        else:
            row.update(
                status="",
                reason="",
                file=record_file_name(settings.series, row["harpnum"], row["t_rec"], settings.segment),
            )
            wanted.append(row)
    missing = run.reuse_existing(wanted)
    if missing:
        run.fetch_missing(missing)
    return write_manifest(rows, EXTRA_COLUMNS, out_dir, "jsoc")
