"""``sharpgen explore``: an interactive page over a finished run (sliders -> generated patch -> real matches).

The server is the standard library's :class:`http.server.ThreadingHTTPServer`, bound to 127.0.0.1 unless told
otherwise. It serves one static page (``page.html``, no external resources) and a small JSON API whose
answers are pure functions of the request, so every state of the page is a URL:

- ``GET /api/config``: the run, and per steerable property its reachable range (0.5th to 99.5th percentile of
  the sampled patches, :data:`sharpgen.latent.generate.REACHABLE_QUANTILES`), units and physical twin (``usflux`` [Mx],
  ``psep_mm`` [Mm] on ``fixed_scale`` runs);
- ``GET /api/state?seed=S&tuf=0.03&hold=psep&k=9``: the seed's latent steered to the targets (any steerable
  property, or its physical twin) while the ``hold`` properties keep the seed's values, as
  :func:`sharpgen.latent.generate.steer` does; answers the patch (PNG), its overlay (PIL mask PNG, polarity
  centroids), target vs. achieved per property (with misses flagged), every measured property and the top-k
  real matches (:class:`sharpgen.retrieval.search.Retriever`) with thumbnails; ``one_per_harp=1`` keeps only
  each HARP's best observation among them (a SHARP series would fill several places with one region);
- ``GET /api/traversal?...&along=tuf``: the patch moved along one property's direction (a strip of frames);
- ``GET /api/generated.fits?...`` and ``GET /api/matches.csv?...``: downloads of the same state.

A bad request (unknown property, out-of-range or malformed value, a missing artefact) is answered with a
4xx status and ``{"error": "<one line>"}``; the page shows that line. Solved states and thumbnails are cached.

Requests are served concurrently with bounded memory: one thread per connection, at most ``MAX_CONNECTIONS``
connections (more are answered 503 at once; idle keep-alive connections close after ``IDLE_TIMEOUT_S``), and
at most ``workers`` computations (generator, measurements, encoder, FAISS, Zarr reads) at a time, each on one
CPU thread; the rest wait for a slot, while the page, ``/api/config`` and cached answers never wait. The
generator and the encoder run in eval mode without gradients, FAISS searches only read the index, and the
caches take a lock, so concurrent answers are those of sequential ones; pyplot (drawn by the FITS download's
``write_results``) is not thread-safe and is used by one request at a time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pandas as pd

from ..errors import SharpgenError
from ..jsonsafe import json_safe
from ..latent.requests import check_names_and_roles
from ..properties import PROPERTIES, quantity, twin_factor, twin_of
from ..run import RunLayout

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_K = 9
MAX_K = 50
MAX_SEED = 2**32 - 1
TOLERANCE = 0.05
"""Relative tolerance of a met target (as ``sharpgen generate``'s default)."""
TRAVERSAL_FRAMES = 7
CACHE_SIZE = 256
MAX_CONNECTIONS = 64
"""Open connections served at once (one thread each); more are answered 503 with Retry-After."""
IDLE_TIMEOUT_S = 60
"""An idle keep-alive connection is closed after this many seconds (its thread ends)."""
PRELOAD_BYTES = 256 * 2**20
"""Real patches are held in memory for thumbnails when the whole dataset is at most this large."""
RESERVED_KEYS = ("seed", "hold", "k", "along", "one_per_harp")
"""Query keys that are not properties."""


def default_workers() -> int:
    """Computations run at once by default: the CPUs, at most 4 (each one uses one CPU thread)."""
    return max(1, min(4, os.cpu_count() or 1))


_PYPLOT_LOCK = threading.Lock()
"""pyplot keeps process-wide state: one figure is drawn at a time."""


class ComputeSlots:
    """At most ``count`` computations at once, granted first come, first served (a request never waits behind
    ones that came later). Re-entrant: a thread holding a slot keeps it through nested steps of one answer."""

    def __init__(self, count: int):
        self.count = count
        self._free = count
        self._lock = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._depth = threading.local()

    def __enter__(self) -> ComputeSlots:
        depth = getattr(self._depth, "value", 0)
        self._depth.value = depth + 1
        if depth:
            return self
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the exit that hands this thread its slot
        return self

    def __exit__(self, *exc_info) -> None:
        self._depth.value -= 1
        if self._depth.value:
            return
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()  # the slot passes straight to the longest waiting request
            else:
                self._free += 1


class LruCache:
    """A thread-safe mapping that keeps the ``size`` most recently used entries."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        """The value of ``key`` (now the most recent), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value) -> None:
        """Store ``value``, dropping the least recently used entries beyond ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items


class RequestError(SharpgenError):
    """A bad API request: answered with ``status`` (4xx) and the message, never a crash."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)

    def __reduce__(self):  # raised in a worker process, it reaches the server with its status
        return type(self), (str(self), self.status)


@dataclass(frozen=True)
class PropertySpec:
    """One steerable property as the page shows it."""

    name: str
    low: float
    high: float
    median: float
    twin: str | None = None  # the same quantity in the other units (tuf <-> usflux), on fixed_scale runs
    twin_per_unit: float = math.nan  # value of the twin per unit of this property
    floor: float = 0.0  # a target is met within TOLERANCE * max(|target|, floor), as steer judges it

    def to_json(self) -> dict:
        return json_safe(
            {
                "name": self.name,
                "unit": PROPERTIES[self.name].unit,
                "description": PROPERTIES[self.name].description,
                "low": self.low,
                "high": self.high,
                "median": self.median,
                "twin": self.twin,
                "twin_unit": PROPERTIES[self.twin].unit if self.twin else None,
                "twin_per_unit": self.twin_per_unit if self.twin else None,
            }
        )


@dataclass(frozen=True)
class Request:
    """A parsed, validated state: ``targets`` in paper units (sorted), ``hold`` sorted."""

    seed: int
    targets: tuple[tuple[str, float], ...]
    hold: tuple[str, ...]
    k: int = DEFAULT_K
    along: str | None = None
    one_per_harp: bool = False  # matches: only each HARP's best observation

    @property
    def key(self) -> tuple:
        return (self.seed, self.targets, self.hold)

    @property
    def search_key(self) -> tuple:
        """What the matches depend on: the state, ``k`` and ``one_per_harp``."""
        return (self.key, self.k, self.one_per_harp)

    def query(self) -> str:
        """The URL query string of this state (for download links)."""
        pairs = [("seed", str(self.seed))]
        pairs += [(name, repr(value)) for name, value in self.targets]
        pairs += [("hold", name) for name in self.hold]
        pairs.append(("k", str(self.k)))
        if self.one_per_harp:
            pairs.append(("one_per_harp", "1"))
        return urlencode(pairs)


@dataclass
class Solution:
    """The latent of a state and what was measured on its patch."""

    latent: np.ndarray  # (1, 100) float32
    patch: np.ndarray  # (S, S) float32, 1 unit = 1 kG
    measured: pd.DataFrame  # one row, every property
    converged: bool
    goals: dict[str, float]  # paper-unit target of every targeted or held property
    held: dict[str, float]  # held property -> the seed's value
    start: str  # "seed" or "near": where the search started


@dataclass
class Computed:
    """What a state needs computed: its solution, its matches (None when not asked) and the seconds each took
    (0 when cached)."""

    solution: Solution
    matches: pd.DataFrame | None
    solve_s: float = 0.0
    search_s: float = 0.0


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of ``(H, W)`` uint8 gray or ``(H, W, 4)`` uint8 RGBA ``pixels`` (row 0 at the top)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)  # filter 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if pixels.ndim == 2 else 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def png_data_uri(image: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> str:
    """A ``data:image/png`` URI of a 2-d normalized patch (gray from ``vmin`` black to ``vmax`` white, as
    :func:`sharpgen.plotting.save_patch_grid`; row 0 at the bottom, north up as a CEA map) or of an
    ``(H, W, 4)`` uint8 RGBA image in the same orientation."""
    image = np.asarray(image)
    if image.ndim == 2:
        scaled = (np.clip(np.nan_to_num(image, nan=0.5 * (vmin + vmax)), vmin, vmax) - vmin) / (vmax - vmin)
        image = np.rint(scaled * 255.0).astype(np.uint8)
    return "data:image/png;base64," + base64.b64encode(png_bytes(image[::-1])).decode("ascii")


def overlay(patch: np.ndarray, threshold: float) -> dict:
    """The polarity centroids and the PIL mask of one normalized patch, as ``sharpgen.physics`` measures them
    for ``psep`` and ``r_paper``: the ``|B|``-weighted centroids of the strong masks ``B > T`` / ``B < -T``
    (``threshold`` T in kG) and the overlap of their 7x7 dilations (the pixels ``r_paper`` sums).

    Returns pixel coordinates (column, row; row 0 at the bottom) and the mask as an RGBA PNG data URI.
    """
    from ..physics import paper_geometry

    found, mask = paper_geometry(patch, threshold)
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (255, 200, 0, 110)
    centroids = {sign: None if at is None else {"x": at[1], "y": at[0]} for sign, at in found.items()}
    return {"centroids": centroids, "pil_mask": png_data_uri(rgba), "pil_pixels": int(mask.sum())}


def _steerable(steering) -> list[str]:
    """Names of the properties that have a direction."""
    return [str(name) for name in steering.directions]


class Explorer:
    """The state behind the page: a run's steering and retriever, caches, and the API answers."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        steering,
        retriever=None,
        retrieval_problem: str | None = None,
        workers: int | None = None,
        pool=None,
    ):
        self.run_dir = Path(run_dir)
        self.steering = steering
        self.retriever = retriever
        self.retrieval_problem = retrieval_problem
        self.properties = self._property_specs()
        self.max_step = self._max_step()
        self.workers = workers or default_workers()
        self._pool = pool  # a WorkerPool computes the answers in its processes; None: this process's threads
        self._slots = ComputeSlots(self.workers)  # computations at once: bounds their memory
        self._solutions = LruCache()
        self._thumbnails = LruCache(4 * CACHE_SIZE)
        self._searches = LruCache()
        self._real = None  # every real patch in memory when the dataset is small (thumbnails without Zarr reads)
        if retriever is not None and retriever.patches.nbytes <= PRELOAD_BYTES:
            self._real = np.asarray(retriever.patches[:], dtype=np.float32)

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        device: str = "cpu",
        workers: int | None = None,
        processes: bool = False,
        threads: int = 1,
    ) -> Explorer:
        """Load a finished run. Without directions or a generator there is nothing to explore (one-line
        :class:`SharpgenError`); without the retrieval artefacts the page works and says why it has no matches.
        ``workers``: computations at once (default :func:`default_workers`); with ``processes``, in as many
        worker processes (:class:`~sharpgen.explore.pool.WorkerPool`, each loads the run and uses ``threads``
        CPU threads), else in this process's threads. Call :meth:`close` when done."""
        from ..latent.generate import load_steering
        from ..retrieval.search import Retriever

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise SharpgenError(f"{run_dir}: no such results directory (run the pipeline first, e.g. `make run`)")
        steering = load_steering(run_dir, device=device)
        retriever, problem = None, None
        try:
            retriever = Retriever.from_run(run_dir, device=device)
        except SharpgenError as exc:
            problem = f"no real matches: {exc}"
        if retriever is not None and retriever.image_size != steering.image_size:
            problem = (
                f"no real matches: the encoder embeds {retriever.image_size} px patches, the generator makes "
                f"{steering.image_size} px"
            )
            retriever = None
        pool = None
        if processes:
            from .pool import WorkerPool

            pool = WorkerPool(run_dir, device, workers or default_workers(), threads)
        return cls(run_dir, steering, retriever, problem, workers, pool)

    @property
    def processes(self) -> bool:
        """Whether worker processes compute the answers."""
        return self._pool is not None

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.close()

    # -- configuration ----------------------------------------------------------------------------------

    def _property_specs(self) -> dict[str, PropertySpec]:
        from ..latent.generate import REACHABLE_QUANTILES

        specs = {}
        for name in _steerable(self.steering):
            values = self.steering.samples[name].to_numpy(dtype=np.float64)
            low, high = (float(v) for v in np.nanquantile(values, REACHABLE_QUANTILES))
            twin, per_unit = None, math.nan
            if self.steering.pixel_mm is not None and twin_of(name) is not None:
                twin = twin_of(name)
                factor = twin_factor(quantity(name), self.steering.image_size, self.steering.pixel_mm)
                per_unit = factor if quantity(name) == name else 1.0 / factor
            floor = self.steering.floor(name)
            specs[name] = PropertySpec(name, low, high, float(np.nanmedian(values)), twin, per_unit, floor)
        return specs

    def spec_of(self, name: str, role: str) -> PropertySpec:
        """The steerable property that ``name`` (its own name or its physical twin's) refers to; 400 if none."""
        if name in self.properties:
            return self.properties[name]
        for spec in self.properties.values():
            if spec.twin == name:
                return spec
        twins = [spec.twin for spec in self.properties.values() if spec.twin]
        allowed = f"steerable here: {', '.join(self.properties)}" + (
            f" (or {', '.join(twins)} in physical units)" if twins else ""
        )
        raise RequestError(f"{role} {name!r}: unknown property ({allowed})")

    def _max_step(self) -> float:
        try:
            document = json.loads(RunLayout(self.run_dir).path("directions").read_text())
            return float(document["settings"]["max_step"])
        except (OSError, KeyError, TypeError, ValueError):
            return 4.0

    def config(self) -> dict:
        """What the page needs to build its controls."""
        steering = self.steering
        return json_safe(
            {
                "run_dir": str(self.run_dir),
                "image_size": steering.image_size,
                "pixel_mm": steering.pixel_mm,
                "threshold_gauss": steering.threshold_gauss,
                "mode": "fixed_scale" if steering.pixel_mm is not None else "resize",
                "properties": [spec.to_json() for spec in self.properties.values()],
                "tolerance": TOLERANCE,
                "k": DEFAULT_K,
                "max_k": MAX_K,
                "max_seed": MAX_SEED,
                "traversal_max_step": self.max_step,
                "retrieval": self.retriever is not None,
                "retrieval_problem": self.retrieval_problem,
                "index_size": len(self.retriever.index) if self.retriever is not None else 0,
            }
        )

    # -- requests -----------------------------------------------------------------------------------------

    def parse(self, query: Mapping[str, Sequence[str]] | str) -> Request:
        """Validate a query (``parse_qs`` mapping or query string) into a :class:`Request`; 400 on any problem.
        Names are checked by :func:`sharpgen.latent.requests.check_names_and_roles`, as on the command line."""
        if isinstance(query, str):
            query = parse_qs(query, keep_blank_values=True)

        def single(key: str) -> str | None:
            values = query.get(key, [])
            if len(values) > 1:
                raise RequestError(f"{key} given {len(values)} times")
            return values[0] if values else None

        seed = _parse_int(single("seed"), "seed", 0, 0, MAX_SEED)
        k = _parse_int(single("k"), "k", DEFAULT_K, 1, MAX_K)
        one_per_harp = _parse_int(single("one_per_harp"), "one_per_harp", 0, 0, 1) == 1
        hold = [name for item in query.get("hold", []) for name in filter(None, (p.strip() for p in item.split(",")))]
        for name in hold:
            self.spec_of(name, "cannot hold")
        along = single("along")
        if along is not None:
            self.spec_of(along, "cannot traverse along")
        asked = {}
        for key, values in query.items():
            if key in RESERVED_KEYS:
                continue
            self.spec_of(key, "target")
            if len(values) != 1:
                raise RequestError(f"{key} given {len(values)} times")
            asked[key] = _parse_float(values[0], key)
        try:
            check_names_and_roles(asked, hold)
        except SharpgenError as exc:
            raise RequestError(str(exc)) from None
        targets: dict[str, float] = {}
        for key, value in asked.items():
            spec = self.spec_of(key, "target")
            scale = 1.0 if key == spec.name else spec.twin_per_unit
            if not spec.low <= value / scale <= spec.high:
                unit = f" {PROPERTIES[key].unit}" if PROPERTIES[key].unit else ""
                raise RequestError(
                    f"{key}={value:.4g} is out of range: this model makes {key} from {spec.low * scale:.4g} to "
                    f"{spec.high * scale:.4g}{unit} (0.5th to 99.5th percentile of its samples)"
                )
            targets[spec.name] = float(value / scale)
        held = sorted({self.spec_of(name, "cannot hold").name for name in hold})
        return Request(seed, tuple(sorted(targets.items())), tuple(held), k, along, one_per_harp)

    # -- computation --------------------------------------------------------------------------------------

    def solve(self, request: Request) -> Solution:
        """The state's latent: the seed's latent steered to the targets with the held properties at the seed's
        values. When that misses, a second search starts from the sampled latent nearest the targets (the
        answer says so); a miss of both is reported as a miss, never hidden."""
        cached = self._solutions.get(request.key)
        if cached is not None:
            return cached
        from ..latent.generate import starting_latents, steer

        steering = self.steering
        targets = dict(request.targets)
        with self._slots:
            start = starting_latents(steering, {}, 1, request.seed)
            # steer() measures the start itself: measured here only for held values or a target-free state
            start_table = steering.measure(start) if request.hold or not targets else None
            held = {name: float(start_table[name].iloc[0]) for name in request.hold}
            if not targets:
                latent, table, converged, origin = start, start_table, True, "seed"
            else:
                latents, table, ok, _ = steer(steering, start, targets, list(request.hold), tolerance=TOLERANCE)
                latent, converged, origin = latents, bool(ok[0]), "seed"
                if not converged:
                    latent, table, converged, origin = self._retry(request, targets, held, latent, table)
            patch = _generate(steering, latent)[0]
        solution = Solution(
            latent=np.asarray(latent, dtype=np.float32).reshape(1, -1),
            patch=patch,
            measured=table.reset_index(drop=True),
            converged=converged,
            goals={**targets, **held},
            held=held,
            start=origin,
        )
        self._solutions.put(request.key, solution)
        return solution

    def _retry(self, request: Request, targets: dict, held: dict, latent, table):
        from ..latent.generate import starting_latents, steer

        try:
            near = starting_latents(self.steering, targets, 1, request.seed)
            latents, near_table, ok, _ = steer(self.steering, near, {**targets, **held}, tolerance=TOLERANCE)
        except SharpgenError:  # e.g. a held value of the seed outside the reachable range
            return latent, table, False, "seed"
        if ok[0]:
            return latents, near_table, True, "near"
        return latent, table, False, "seed"

    def matches(self, request: Request, solution: Solution) -> pd.DataFrame:
        """The top-k real matches of the state's patch (:meth:`computed` checks that the run has an index)."""
        key = request.search_key
        cached = self._searches.get(key)
        if cached is None:
            k = min(request.k, len(self.retriever.index))
            with self._slots:
                cached = self.retriever.search(solution.patch[None], k=k, one_per_harp=request.one_per_harp)[0]
            self._searches.put(key, cached)
        return cached

    def computed(self, request: Request, search: bool) -> Computed:
        """The state's solution and, with ``search``, its matches: cached, else computed in a worker process or
        in this thread (409 for matches when the run has no retrieval artefacts)."""
        if search and self.retriever is None:
            raise RequestError(self.retrieval_problem or "no retrieval index in this run", HTTPStatus.CONFLICT)
        solution = self._solutions.get(request.key)
        table = self._searches.get(request.search_key) if search else None
        if solution is not None and (table is not None or not search):
            return Computed(solution, table)
        if self._pool is not None:
            done = self._pool.call("computed", request, search)
            self._solutions.put(request.key, done.solution)
            if search:
                self._searches.put(request.search_key, done.matches)
            return done
        with self._slots:
            begin = time.perf_counter()
            solution = self.solve(request)
            solved = time.perf_counter()
            table = self.matches(request, solution) if search else None
            return Computed(solution, table, solved - begin, time.perf_counter() - solved)

    def _thumbnails_for(self, rows: Sequence[int]) -> list[str]:
        """PNG data URIs of the real patches ``rows`` (cached)."""
        uris = {int(row): self._thumbnails.get(int(row)) for row in rows}
        missing = [row for row, uri in uris.items() if uri is None]
        if missing:
            if self._real is not None:
                patches = self._real[missing]
            else:
                with self._slots:
                    patches = self.retriever.real_patches(missing)
            for row, patch in zip(missing, patches, strict=True):
                uris[row] = png_data_uri(patch)
                self._thumbnails.put(row, uris[row])
        return [uris[int(row)] for row in rows]

    def _slot_unless_solved(self, request: Request):
        """A computation slot held through the steps of one answer; none when the state is solved (cached) or
        worker processes compute it (their pool bounds the computations)."""
        return contextlib.nullcontext() if self._pool or request.key in self._solutions else self._slots

    # -- API answers --------------------------------------------------------------------------------------

    def state(self, request: Request) -> dict:
        """``/api/state``: the patch, its overlay, target vs. achieved, every measured property, the matches."""
        begin = time.perf_counter()
        cached = request.key in self._solutions
        with self._slot_unless_solved(request):  # one slot from the solve to the thumbnails
            done = self.computed(request, search=self.retriever is not None)
            searched = time.perf_counter()
            solution, matches, problem = done.solution, None, self.retrieval_problem
            if done.matches is not None:
                thumbnails = self._thumbnails_for(done.matches["row"].to_numpy())
                matches = [
                    {**_match_record(row), "thumbnail": thumbnail}
                    for row, thumbnail in zip(done.matches.to_dict("records"), thumbnails, strict=True)
                ]
        measured = {name: float(value) for name, value in solution.measured.iloc[0].items()}
        rows = []
        for name, spec in self.properties.items():
            goal = solution.goals.get(name)
            achieved = measured.get(name, math.nan)
            scale = max(abs(goal), spec.floor) if goal is not None else 1.0
            met = None if goal is None else bool(np.isfinite(achieved) and abs(achieved - goal) <= TOLERANCE * scale)
            rows.append(
                {
                    "name": name,
                    "role": "held" if name in solution.held else ("target" if goal is not None else "free"),
                    "target": goal,
                    "achieved": achieved,
                    "error": (achieved - goal) / goal if goal else None,
                    "met": met,
                    "twin": spec.twin,
                    "twin_target": goal * spec.twin_per_unit if spec.twin and goal is not None else None,
                    "twin_achieved": measured.get(spec.twin) if spec.twin else None,
                }
            )
        drawn = overlay(solution.patch, self.steering.threshold_gauss / 1000.0)
        answer = {
            "query": request.query(),
            "seed": request.seed,
            "targets": dict(request.targets),
            "hold": list(request.hold),
            "one_per_harp": request.one_per_harp,
            "converged": solution.converged,
            "start": solution.start,
            "image": png_data_uri(solution.patch),
            "overlay": drawn,
            "image_size": self.steering.image_size,
            "rows": rows,
            "measured": measured,
            "units": {name: PROPERTIES[name].unit if name in PROPERTIES else "" for name in measured},
            "matches": matches,
            "matches_problem": problem,
            "latent_norm": float(np.linalg.norm(solution.latent)),
        }
        finished = time.perf_counter()
        answer["timing_ms"] = {
            "solve": done.solve_s * 1e3,
            "search": done.search_s * 1e3,
            "render": (finished - searched) * 1e3,
            "total": (finished - begin) * 1e3,
            "cached": cached,
        }
        return json_safe(answer)

    def traversal(self, request: Request, frames: int = TRAVERSAL_FRAMES) -> dict:
        """``/api/traversal``: the state's patch stepped along ``request.along``'s direction (its physical twin's
        name steps along the same direction and reports values in the twin's unit; conditional on the
        held properties), ``frames`` evenly spaced steps in ``[-max_step, max_step]`` latent units, never across
        the polarity boundary."""
        if self._pool is not None:
            return self._pool.call("traversal", request, frames)
        from ..data.measure import patch_properties

        along = request.along or (request.targets[0][0] if request.targets else next(iter(self.properties)))
        spec = self.spec_of(along, "cannot traverse along")
        other = spec.twin if along == spec.name else spec.name
        steps = np.linspace(-self.max_step, self.max_step, frames)
        with self._slots:
            solution = self.solve(request)
            # Each frame moves along the direction of the latent's polarity side and stops at the polarity
            # boundary, as generate/edit do (a straight line through it would mirror the region).
            start = np.repeat(np.asarray(solution.latent, dtype=np.float64).reshape(1, -1), frames, axis=0)
            latents = self.steering.directions.stepped(spec.name, start, steps, list(request.hold)).astype(np.float32)
            patches = _generate(self.steering, latents)
        values = patch_properties(patches, self.steering.threshold_gauss, self.steering.pixel_mm)
        return json_safe(
            {
                "along": along,
                "direction": spec.name,
                "hold": list(request.hold),
                "frames": [
                    {
                        "step": float(step),
                        "value": float(values[along][i]),
                        "twin_value": float(values[other][i]) if other in values else None,
                        "image": png_data_uri(patches[i]),
                    }
                    for i, step in enumerate(steps)
                ],
                "unit": PROPERTIES[along].unit,
                "twin": other,
                "twin_unit": PROPERTIES[other].unit if other else None,
            }
        )

    def matches_csv(self, request: Request) -> bytes:
        """``/api/matches.csv``: the matches' metadata and properties as CSV."""
        with self._slot_unless_solved(request):
            table = self.computed(request, search=True).matches
        return table.to_csv(index=False).encode("utf-8")

    def fits_bytes(self, request: Request) -> bytes:
        """``/api/generated.fits``: the state's patch as ``sharpgen generate`` writes it (field in G; targets,
        achieved values and the latent in the header)."""
        if self._pool is not None:
            return self._pool.call("fits_bytes", request)
        from ..latent.generate import write_results

        with self._slots:
            solution = self.solve(request)
            with _PYPLOT_LOCK, tempfile.TemporaryDirectory(prefix="sharpgen-explore-") as folder:
                write_results(
                    folder,
                    self.steering,
                    solution.latent,
                    solution.measured,
                    np.array([solution.converged]),
                    solution.goals,
                    list(request.hold),
                    prefix="explored",
                )
                return (Path(folder) / "explored_000.fits").read_bytes()

    def page(self) -> bytes:
        """The static page."""
        return resources.files("sharpgen.explore").joinpath("page.html").read_bytes()


def _generate(steering, latents: np.ndarray) -> np.ndarray:
    from ..gan.sample import generate

    return generate(steering.generator, np.asarray(latents, dtype=np.float32), steering.device)


def _match_record(row: Mapping) -> dict:
    keep = ("rank", "row", "similarity", "record", "harpnum", "noaa_ar", "t_rec", "lat_fwt", "lon_fwt", "split")
    record = {key: row[key] for key in keep if key in row}
    record["properties"] = {key: value for key, value in row.items() if key not in keep}
    return record


def _parse_int(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestError(f"{name}={text!r}: expected an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise RequestError(f"{name}={value} is out of range: expected {low} to {high}")
    return value


def _parse_float(text: str, name: str) -> float:
    try:
        value = float(text.strip().replace(" ", "+"))  # an unescaped '+' (1e+22) arrives as a space
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RequestError(f"{name}={text!r}: expected a finite number")
    return value


# -- HTTP ---------------------------------------------------------------------------------------------------


_DOWNLOADS = {  # path -> (the body for a request, its content type, the file name it is saved as)
    "/api/matches.csv": (Explorer.matches_csv, "text/csv; charset=utf-8", "sharpgen_matches_seed{seed}.csv"),
    "/api/generated.fits": (Explorer.fits_bytes, "application/fits", "sharpgen_generated_seed{seed}.fits"),
}


class _Handler(BaseHTTPRequestHandler):
    server_version = "sharpgen-explore"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S  # an idle keep-alive connection ends, and its thread with it

    @property
    def explorer(self) -> Explorer:
        return self.server.explorer  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        explorer = self.explorer
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, explorer.page(), "text/html; charset=utf-8")
            elif url.path == "/api/config":
                self._json(HTTPStatus.OK, explorer.config())
            elif url.path == "/api/state":
                self._json(HTTPStatus.OK, explorer.state(explorer.parse(query)))
            elif url.path == "/api/traversal":
                self._json(HTTPStatus.OK, explorer.traversal(explorer.parse(query)))
            elif url.path in _DOWNLOADS:
                body, content_type, filename = _DOWNLOADS[url.path]
                request = explorer.parse(query)
                self._send(HTTPStatus.OK, body(explorer, request), content_type, filename.format(seed=request.seed))
            elif url.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                raise RequestError(f"{url.path}: no such page or API endpoint", HTTPStatus.NOT_FOUND)
        except RequestError as exc:
            self._json(exc.status, {"error": str(exc)})
        except SharpgenError as exc:  # a user-level problem found deeper (e.g. a target steer refuses)
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # never let one request take the server down
            traceback.print_exc(file=sys.stderr)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc.__class__.__name__}: {exc}"})

    def do_POST(self) -> None:  # noqa: N802
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "the explorer only answers GET requests"})

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload, allow_nan=False).encode("utf-8"), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, filename: str | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if filename:
                self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


class ExploreServer(ThreadingHTTPServer):
    """The explorer's HTTP server: one thread per connection, at most ``max_connections`` of them (a connection
    beyond is answered 503 and closed); the explorer bounds the computations running at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        explorer: Explorer,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        verbose=False,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.explorer = explorer
        self.verbose = verbose
        self._connections = threading.BoundedSemaphore(max_connections)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise SharpgenError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another --port)") from None

    def process_request(self, request, client_address) -> None:
        """Serve the connection in a new thread, or answer 503 at once when ``max_connections`` are open."""
        if not self._connections.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started, so none will free the slot
            self._connections.release()
            raise
        # A Ctrl-C arriving while the thread starts is not caught: that thread may already be serving and frees
        # the slot itself (freeing it here too raised "released too many times" in it as the server stopped).

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


def _refuse_busy(connection) -> None:
    """Answer 503 on a raw ``connection`` without reading its request (the server is at its connection limit)."""
    body = json.dumps({"error": "the explorer is busy: too many open connections, try again"}).encode("utf-8")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        connection.settimeout(0.2)
        connection.recv(65536)  # the request, read so that closing does not reset the connection before the answer
    except OSError:
        pass
    try:
        connection.sendall(head.encode("ascii") + body)
    except OSError:
        pass


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in PyTorch, FAISS and NumPy's BLAS (one is fastest for single patches on a
    shared CPU; several workers each with a BLAS pool over all the cores would oversubscribe them)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM (``kill``, a batch system ending the job) both stop the explorer cleanly, while
    it loads and while it serves, also when the shell that started it in the background left SIGINT ignored."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def serve(explorer: Explorer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, verbose: bool = False) -> int:
    """Serve the page until Ctrl-C (a ``KeyboardInterrupt``; :func:`command` makes SIGTERM one too); returns 0
    after a clean shutdown."""
    if not is_loopback(host):
        print(
            f"sharpgen: warning: serving on {host}: anyone who can reach this machine can use the explorer "
            "(there is no authentication)",
            file=sys.stderr,
        )
    server = ExploreServer(explorer, host, port, verbose=verbose)
    print(
        f"sharpgen explore: {explorer.run_dir} on {server.url} ({explorer.workers} requests computed at once"
        f"{' in worker processes' if explorer.processes else ''}; "
        "Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if explorer.retrieval_problem:
        print(f"sharpgen: warning: {explorer.retrieval_problem}", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("sharpgen explore: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def command(args) -> int:
    """``sharpgen explore``: load the run in ``args.results`` and serve the page until Ctrl-C."""
    if not 0 <= args.port <= 65535:
        raise SharpgenError(f"--port {args.port}: expected 0 (any free port) to 65535")
    _stop_on_signals()
    set_threads(args.threads)
    workers = args.workers or default_workers()
    processes = workers > 1 and not args.in_process
    explorer = Explorer.from_run(args.results, args.device, workers, processes=processes, threads=args.threads)
    try:
        status = serve(explorer, args.host, args.port, verbose=args.verbose)
    finally:
        explorer.close()
    # After Ctrl-C, the interpreter's teardown of the native thread pools (PyTorch, FAISS, Arrow) now and
    # then aborts with "terminate called without an active exception", turning a clean stop into SIGABRT.
    # The explorer has nothing left to write, so it leaves without running that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
