"""`sharpgen explore`: the API answers, its 4xx for bad requests, the CLI, and the page in a real headless browser.

Every test here uses the session's finished run of config/test.yaml (conftest's `test_run`; SHARPGEN_TEST_RUN
names another finished run to reuse instead).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharpgen.cli import build_parser, main
from sharpgen.errors import SharpgenError
from sharpgen.explore.server import ComputeSlots, Explorer, ExploreServer, is_loopback, overlay, png_data_uri

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(request) -> Path:
    """The session's finished run of config/test.yaml (conftest's `test_run`), or SHARPGEN_TEST_RUN: the
    results_dir of a finished run to reuse (then the pipeline does not run)."""
    if os.environ.get("SHARPGEN_TEST_RUN"):
        return Path(os.environ["SHARPGEN_TEST_RUN"])
    return Path(request.getfixturevalue("test_run"))


@pytest.fixture(scope="module")
def explorer(run_dir) -> Explorer:
    return Explorer.from_run(run_dir, device="cpu")


@pytest.fixture(scope="module")
def server(explorer):
    """The explorer served on a free loopback port, in a thread."""
    httpd = ExploreServer(explorer, port=0)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def get(server, path: str) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` of a GET on the test server (4xx/5xx included)."""
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=120) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def median_target(explorer: Explorer, name: str = "tuf", quantile: float = 0.5) -> float:
    values = explorer.steering.samples[name].to_numpy(dtype=np.float64)
    return float(np.nanquantile(values, quantile))


def png_array(uri: str) -> np.ndarray:
    from matplotlib import image

    assert uri.startswith("data:image/png;base64,")
    return image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


# -- the API -------------------------------------------------------------------------------------------------


def test_config_lists_every_steerable_property_with_its_reachable_range(explorer, server):
    status, body, kind = get(server, "/api/config")
    assert status == 200 and kind.startswith("application/json")
    config = json.loads(body)
    names = [p["name"] for p in config["properties"]]
    assert names == [str(name) for name in explorer.properties] and "tuf" in names
    for p in config["properties"]:
        assert p["low"] < p["median"] < p["high"]
    tuf = next(p for p in config["properties"] if p["name"] == "tuf")
    assert config["mode"] == "fixed_scale" and tuf["twin"] == "usflux" and tuf["twin_unit"] == "Mx"
    assert config["retrieval"] is True and config["index_size"] > 0


def test_a_good_request_returns_the_patch_its_numbers_and_the_real_matches(explorer, server):
    target = median_target(explorer)
    status, body, _ = get(server, f"/api/state?seed=3&tuf={target}&k=5")
    assert status == 200
    answer = json.loads(body)
    size = explorer.steering.image_size
    image = png_array(answer["image"])
    assert image.shape[:2] == (size, size)
    assert png_array(answer["overlay"]["pil_mask"]).shape[:2] == (size, size)
    row = next(r for r in answer["rows"] if r["name"] == "tuf")
    assert row["role"] == "target" and row["target"] == pytest.approx(target)
    assert np.isfinite(row["achieved"]) and row["twin"] == "usflux" and row["twin_achieved"] > 0
    assert row["met"] in (True, False) and (not row["met"] or abs(row["error"]) <= 0.05)
    assert answer["converged"] == all(r["met"] for r in answer["rows"] if r["role"] != "free")
    assert {"tuf", "psep", "usflux", "psep_mm"} <= set(answer["measured"])
    matches = answer["matches"]
    assert len(matches) == min(5, config_index_size(explorer))
    assert [m["rank"] for m in matches] == list(range(1, len(matches) + 1))
    similarities = [m["similarity"] for m in matches]
    assert similarities == sorted(similarities, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in similarities)
    table = pd.read_parquet(Path(explorer.run_dir) / "data" / "patches.parquet")
    for match in matches:
        assert match["harpnum"] == table["harpnum"].iloc[match["row"]]
        assert match["t_rec"] == str(table["t_rec"].iloc[match["row"]])
        assert png_array(match["thumbnail"]).shape[:2] == (size, size)
    # The same state again: same answer, from the cache.
    again = json.loads(get(server, f"/api/state?seed=3&tuf={target}&k=5")[1])
    assert again["image"] == answer["image"] and again["timing_ms"]["cached"] is True


def config_index_size(explorer: Explorer) -> int:
    return len(explorer.retriever.index)


def test_the_seed_alone_gives_its_own_patch_and_holding_keeps_the_seeds_value(explorer):
    free = explorer.state(explorer.parse("seed=7"))
    assert all(r["role"] == "free" for r in free["rows"]) and free["converged"] is True
    other = explorer.state(explorer.parse("seed=8"))
    assert other["image"] != free["image"]
    target = median_target(explorer, "tuf", 0.7)
    # tpf, defined on every patch with a positive pixel: psep needs both strong polarities, which the tiny test
    # GAN may never draw (then it has no direction to hold)
    held = explorer.state(explorer.parse(f"seed=7&tuf={target}&hold=tpf"))
    tpf = next(r for r in held["rows"] if r["name"] == "tpf")
    assert tpf["role"] == "held" and tpf["target"] == pytest.approx(free["measured"]["tpf"])


def test_physical_units_are_converted_to_the_papers(explorer):
    spec = explorer.properties["tuf"]
    value = median_target(explorer)
    physical = explorer.parse(f"seed=1&usflux={value * spec.twin_per_unit!r}")
    assert dict(physical.targets)["tuf"] == pytest.approx(value)
    with pytest.raises(SharpgenError, match="same quantity in two units"):
        explorer.parse(f"tuf={value}&usflux={value * spec.twin_per_unit}")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("seed=0&tuf=5", "tuf=5 is out of range: this model makes tuf from"),
        ("seed=0&usflux=1e30", "usflux=1e+30 is out of range"),
        ("seed=0&tuf=-1", "out of range"),
        ("seed=0&bogus=1", "target 'bogus': unknown property (steerable here: tuf"),
        ("seed=0&hold=bogus", "cannot hold 'bogus': unknown property"),
        ("seed=0&tuf=abc", "tuf='abc': expected a finite number"),
        ("seed=0&tuf=nan", "expected a finite number"),
        ("seed=-1", "seed=-1 is out of range"),
        ("seed=x", "seed='x': expected an integer"),
        ("seed=0&k=0", "k=0 is out of range"),
        ("seed=0&tuf={tuf}&hold=tuf", "a property is either changed or kept, not both"),
        ("seed=0&tuf={tuf}&hold=usflux", "target tuf (kept as usflux)"),
        ("seed=0&seed=1", "seed given 2 times"),
        ("seed=0&one_per_harp=yes", "one_per_harp='yes': expected an integer from 0 to 1"),
    ],
)
def test_bad_requests_get_a_400_with_a_clear_message(explorer, server, query, message):
    query = query.replace("{tuf}", repr(median_target(explorer)))
    for endpoint in ("/api/state", "/api/traversal", "/api/generated.fits", "/api/matches.csv"):
        status, body, kind = get(server, f"{endpoint}?{query}")
        assert status == 400 and kind.startswith("application/json"), (endpoint, status, body[:200])
        assert message in json.loads(body)["error"]


def test_unknown_paths_get_a_404_and_posts_a_405(server):
    status, body, _ = get(server, "/api/nothing")
    assert status == 404 and "no such page" in json.loads(body)["error"]
    request = urllib.request.Request(server.url + "api/state", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 405


def test_traversal_strip_moves_the_patch_along_the_direction(explorer, server):
    status, body, _ = get(server, f"/api/traversal?seed=2&tuf={median_target(explorer)}&along=tuf")
    assert status == 200
    answer = json.loads(body)
    frames = answer["frames"]
    assert answer["along"] == "tuf" and len(frames) == 7
    assert [f["step"] for f in frames] == pytest.approx(np.linspace(-explorer.max_step, explorer.max_step, 7))
    values = [f["value"] for f in frames]
    # Mechanics only, never what the tiny test GAN learned: finite values, and the strip moves (a move may stop
    # at the polarity boundary, so frames on one side can repeat, but not every frame is the start's).
    assert all(np.isfinite(values)) and len({f["image"] for f in frames}) >= 2


def test_a_physical_twin_works_wherever_its_paper_property_does(explorer, server):
    tuf, psep = explorer.properties["tuf"], explorer.properties["psep"]
    usflux, psep_mm = median_target(explorer) * tuf.twin_per_unit, median_target(explorer, "psep") * psep.twin_per_unit
    status, body, _ = get(server, f"/api/traversal?seed=3&usflux={usflux!r}&psep_mm={psep_mm!r}&along=usflux")
    assert status == 200, body[:200]
    answer = json.loads(body)
    assert answer["along"] == "usflux" and answer["direction"] == "tuf" and answer["unit"] == "Mx"
    assert answer["twin"] == "tuf" and all(f["value"] > 1e15 for f in answer["frames"])  # in Mx, not kG
    held = explorer.parse(f"seed=3&psep_mm={psep_mm!r}&hold=usflux")
    assert held.hold == ("tuf",) and dict(held.targets)["psep"] == pytest.approx(median_target(explorer, "psep"))


def test_one_per_harp_gives_each_regions_best_match_once_and_travels_in_the_links(explorer, server):
    status, body, _ = get(server, "/api/state?seed=6&k=12&one_per_harp=1")
    assert status == 200
    answer = json.loads(body)
    harps = [m["harpnum"] for m in answer["matches"]]
    assert answer["one_per_harp"] is True and len(harps) == len(set(harps)) > 0
    assert [m["rank"] for m in answer["matches"]] == list(range(1, len(harps) + 1))
    assert "one_per_harp=1" in answer["query"]
    status, body, _ = get(server, "/api/matches.csv?" + answer["query"])
    assert status == 200 and list(pd.read_csv(io.BytesIO(body))["harpnum"]) == harps
    every = json.loads(get(server, "/api/state?seed=6&k=12")[1])
    assert every["one_per_harp"] is False and every["matches"][0]["row"] == answer["matches"][0]["row"]


def test_downloads_give_the_generated_fits_and_the_matches_csv(explorer, server):
    from astropy.io import fits

    target = median_target(explorer)
    status, body, kind = get(server, f"/api/generated.fits?seed=4&tuf={target}")
    assert status == 200 and kind == "application/fits"
    with fits.open(io.BytesIO(body)) as hdul:
        header, data = hdul[1].header, hdul[1].data
        size = explorer.steering.image_size
        assert data.shape == (size, size) and np.nanmax(np.abs(data)) <= 1000.0
        assert header["HIERARCH TARGET TUF"] == pytest.approx(target)
        state = explorer.state(explorer.parse(f"seed=4&tuf={target}"))
        assert header["HIERARCH ACHIEVED TUF"] == pytest.approx(state["measured"]["tuf"])
    status, body, kind = get(server, f"/api/matches.csv?seed=4&tuf={target}&k=4")
    assert status == 200 and kind.startswith("text/csv")
    table = pd.read_csv(io.BytesIO(body))
    assert len(table) == min(4, config_index_size(explorer))
    assert {"rank", "similarity", "harpnum", "noaa_ar", "t_rec", "record"} <= set(table.columns)
    assert list(table["harpnum"]) == [m["harpnum"] for m in state["matches"][:4]]


def test_png_rows_put_north_up_and_the_overlay_finds_both_polarities():
    patch = np.zeros((16, 16), dtype=np.float32)
    patch[-1, :] = 1.0  # the northernmost row (largest index) is white ...
    image = png_array(png_data_uri(patch))
    assert image.shape == (16, 16) and np.all(image[0] == 1.0) and np.all(np.abs(image[1:] - 0.5) < 0.01)  # top row
    bipole = np.zeros((32, 32), dtype=np.float32)
    bipole[14:18, 10:13] = 0.8
    bipole[14:18, 14:17] = -0.8
    drawn = overlay(bipole, threshold=0.15)
    assert drawn["centroids"]["positive"]["x"] == pytest.approx(11.0)
    assert drawn["centroids"]["negative"]["x"] == pytest.approx(15.0)
    assert drawn["centroids"]["positive"]["y"] == pytest.approx(15.5)
    assert drawn["pil_pixels"] > 0
    unipolar = overlay(np.abs(bipole), threshold=0.15)
    assert unipolar["centroids"]["negative"] is None and unipolar["pil_pixels"] == 0


# -- concurrency --------------------------------------------------------------------------------------------


def serve_in_thread(httpd: ExploreServer):
    """Start ``httpd`` in a daemon thread; returns a function that stops it."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)

    return stop


def sibling(explorer: Explorer, workers: int) -> Explorer:
    """An explorer over the same loaded run with empty caches and ``workers`` computation slots."""
    return Explorer(explorer.run_dir, explorer.steering, explorer.retriever, explorer.retrieval_problem, workers)


def test_concurrent_requests_get_the_answers_of_sequential_ones(explorer):
    queries = [f"seed={20 + i}&tuf={median_target(explorer, 'tuf', 0.2 + 0.08 * i)!r}&k=4" for i in range(8)]
    queries += ["seed=30", f"seed=31&psep={median_target(explorer, 'psep', 0.6)!r}&hold=tuf"]
    one_by_one = sibling(explorer, workers=1)
    expected = [one_by_one.state(one_by_one.parse(query)) for query in queries]
    httpd = ExploreServer(sibling(explorer, workers=4), port=0)
    stop = serve_in_thread(httpd)
    try:
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            answers = list(pool.map(lambda query: get(httpd, f"/api/state?{query}"), queries))
    finally:
        stop()
    for query, (status, body, _), alone in zip(queries, answers, expected, strict=True):
        assert status == 200, (query, body[:200])
        together = json.loads(body)
        assert together["image"] == alone["image"], query  # the same patch, byte for byte
        assert together.pop("timing_ms")["cached"] is False and alone.pop("timing_ms")["cached"] is False
        assert together == alone, query


def test_worker_processes_give_the_answers_of_this_process(explorer):
    """`sharpgen explore`'s default on a multi-core machine: the answers are computed in worker processes, each
    with the run loaded; they equal those computed in the server's own thread, byte for byte."""
    import torch

    queries = [f"seed={40 + i}&tuf={median_target(explorer, 'tuf', 0.25 + 0.1 * i)!r}&k=5" for i in range(5)]
    queries += ["seed=45", f"seed=46&psep={median_target(explorer, 'psep', 0.6)!r}&hold=tuf"]
    here = sibling(explorer, workers=1)
    expected = [here.state(here.parse(query)) for query in queries]
    strip = here.traversal(here.parse("seed=47&along=tuf"))
    pooled = Explorer.from_run(explorer.run_dir, "cpu", workers=2, processes=True, threads=torch.get_num_threads())
    assert pooled.processes
    httpd = ExploreServer(pooled, port=0)
    stop = serve_in_thread(httpd)
    try:
        with ThreadPoolExecutor(max_workers=len(queries)) as threads:
            answers = list(threads.map(lambda query: get(httpd, f"/api/state?{query}"), queries))
        status, body, _ = get(httpd, "/api/traversal?seed=47&along=tuf")
        assert status == 200 and json.loads(body) == strip
        status, body, _ = get(httpd, "/api/state?seed=1&tuf=1e9")
        assert status == 400 and "out of range" in json.loads(body)["error"]
    finally:
        stop()
        pooled.close()
    for query, (status, body, _), alone in zip(queries, answers, expected, strict=True):
        assert status == 200, (query, body[:200])
        together = json.loads(body)
        assert together.pop("timing_ms")["cached"] is False and alone.pop("timing_ms")["cached"] is False
        assert together == alone, query


def test_a_worker_process_that_dies_fails_its_request_with_503_and_is_replaced(explorer):
    pooled = Explorer.from_run(explorer.run_dir, "cpu", workers=1, processes=True)
    httpd = ExploreServer(pooled, port=0)
    stop = serve_in_thread(httpd)
    try:
        (worker,) = pooled._pool._executor._processes.values()
        worker.kill()
        worker.join(timeout=30)
        status, body, _ = get(httpd, "/api/state?seed=5")
        assert status == 503 and "worker process" in json.loads(body)["error"]
        status, body, _ = get(httpd, "/api/state?seed=5")
        assert status == 200 and json.loads(body)["seed"] == 5
    finally:
        stop()
        pooled.close()
    assert not worker.is_alive()


def test_a_request_error_raised_in_a_worker_keeps_its_status():
    import pickle

    from sharpgen.explore.server import RequestError

    error = pickle.loads(pickle.dumps(RequestError("no retrieval index in this run", 409)))
    assert isinstance(error, RequestError) and error.status == 409 and str(error) == "no retrieval index in this run"


def test_a_slow_request_does_not_hold_up_the_config(explorer, monkeypatch):
    from sharpgen.explore import server as module

    generate, entered, release = module._generate, threading.Event(), threading.Event()

    def held_up(steering, latents):
        entered.set()
        release.wait(120)
        return generate(steering, latents)

    monkeypatch.setattr(module, "_generate", held_up)
    httpd = ExploreServer(sibling(explorer, workers=1), port=0)  # the one computation slot is taken below
    stop = serve_in_thread(httpd)
    slow = ThreadPoolExecutor(max_workers=1)
    try:
        pending = slow.submit(get, httpd, "/api/state?seed=41&k=3")
        assert entered.wait(60)
        with urllib.request.urlopen(httpd.url + "api/config", timeout=20) as response:
            assert response.status == 200 and json.loads(response.read())["properties"]
        assert not pending.done()  # the config was answered while the slow state was still computing
        release.set()
        assert pending.result(timeout=120)[0] == 200
    finally:
        release.set()
        slow.shutdown()
        stop()


def test_computations_at_once_never_exceed_the_workers(explorer, monkeypatch):
    """Memory is bounded by the pool: 8 clients at once, 2 slots: two computations run together, never three."""
    from sharpgen.explore import server as module

    generate, lock = module._generate, threading.Lock()
    pair = threading.Barrier(2, timeout=60)  # each generation waits for a second one: proof they overlap
    running, peak = 0, 0

    def counted(steering, latents):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            pair.wait()
            return generate(steering, latents)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(module, "_generate", counted)
    httpd = ExploreServer(sibling(explorer, workers=2), port=0)
    stop = serve_in_thread(httpd)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:  # 8 solves: 4 pairs
            statuses = list(pool.map(lambda seed: get(httpd, f"/api/state?seed={seed}&k=2")[0], range(50, 58)))
    finally:
        stop()
    assert statuses == [200] * 8 and peak == 2


def test_compute_slots_are_granted_first_come_first_served_and_reentrant():
    slots, order = ComputeSlots(1), []

    def request(name: str) -> None:
        with slots, slots:  # a nested step of the same answer does not wait for a second slot
            order.append(name)

    with slots:
        threads = []
        for name in "abc":  # each one queued before the next starts
            threads.append(threading.Thread(target=request, args=(name,)))
            threads[-1].start()
            while len(slots._waiting) < len(threads):
                time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    assert order == ["a", "b", "c"]


def test_connections_beyond_the_limit_are_answered_503_at_once(explorer):
    httpd = ExploreServer(explorer, port=0, max_connections=1)
    stop = serve_in_thread(httpd)
    host, port = httpd.server_address[:2]
    first = http.client.HTTPConnection(host, port, timeout=30)
    try:
        first.request("GET", "/api/config")
        response = first.getresponse()
        assert response.status == 200 and response.read()  # kept alive: it holds the one connection
        status, body, _ = get(httpd, "/api/config")
        assert status == 503 and "busy" in json.loads(body)["error"]
        first.close()  # the slot frees once the server sees the close
        deadline = time.monotonic() + 30
        while get(httpd, "/api/config")[0] != 200:
            assert time.monotonic() < deadline, "the connection slot was never freed"
            time.sleep(0.05)
    finally:
        first.close()
        stop()


def test_a_stop_while_a_connection_thread_starts_frees_its_slot_once(explorer, monkeypatch):
    """Ctrl-C or SIGTERM can land in the main thread just after it started a connection's thread: that thread
    serves the connection and frees the slot; the stop must not free it a second time (which raised in the
    thread, and printed a traceback, as the server stopped)."""
    httpd = ExploreServer(explorer, port=0, max_connections=1)
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    start = threading.Thread.start

    def start_then_stop(thread):
        start(thread)
        thread.join(timeout=30)  # the slowest order: the connection is served before the stop lands
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_stop)
    stopped = threading.Event()
    runner = threading.Thread(target=lambda: _serve_until_interrupted(httpd, stopped), daemon=True)
    start(runner)
    try:
        host, port = httpd.server_address[:2]
        connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.request("GET", "/api/config", headers={"Connection": "close"})
        assert connection.getresponse().status == 200
        connection.close()
        assert stopped.wait(timeout=30), "the stop never reached serve_forever"
    finally:
        httpd.server_close()
    assert not failures, [f.exc_value for f in failures]


def _serve_until_interrupted(httpd, stopped: threading.Event) -> None:
    try:
        httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        stopped.set()


# -- missing artefacts, binding, the CLI -----------------------------------------------------------------------


def test_missing_artefacts_stop_the_start_with_one_line(tmp_path, capsys):
    with pytest.raises(SharpgenError, match=r"gan/generator.pt is missing: run the train_gan stage"):
        Explorer.from_run(tmp_path)
    assert main(["explore", "--results", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sharpgen: error: ") and "no such results directory" in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_a_run_without_retrieval_artefacts_explores_and_says_why_there_are_no_matches(run_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for stage in ("data", "gan", "samples", "directions"):
        (partial / stage).symlink_to(Path(run_dir) / stage, target_is_directory=True)
    explorer = Explorer.from_run(partial, device="cpu")
    assert explorer.config()["retrieval"] is False
    assert "build_index" in explorer.config()["retrieval_problem"]
    answer = explorer.state(explorer.parse("seed=0"))
    assert answer["matches"] is None and "no real matches" in answer["matches_problem"]
    httpd = ExploreServer(explorer, port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        status, body, _ = get(httpd, "/api/matches.csv?seed=0")
        assert status == 409 and "build_index" in json.loads(body)["error"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_server_binds_loopback_by_default(explorer):
    assert build_parser().parse_args(["explore"]).host == "127.0.0.1"
    httpd = ExploreServer(explorer, port=0)
    try:
        assert httpd.server_address[0] == "127.0.0.1"
    finally:
        httpd.server_close()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def _as_a_background_job() -> None:
    """What a shell does to `sharpgen explore &` started from a script: SIGINT is ignored in the job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_serves_until_stopped_and_stops_cleanly(run_dir, stop_signal):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharpgen.cli", "explore", "--results", str(run_dir), "--port", "0"],
        stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_background_job,
    )  # fmt: skip
    try:
        lines = []  # the URL line comes after whatever the imports may warn about
        while not lines or "http://" not in lines[-1]:
            lines.append(proc.stderr.readline())
            assert lines[-1] or proc.poll() is None, "".join(lines)
        assert "http://127.0.0.1:" in lines[-1], "".join(lines)
        url = lines[-1].split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url + "api/config", timeout=60) as response:
            assert response.status == 200
        proc.send_signal(stop_signal)
        status = proc.wait(timeout=30)
        rest = proc.stderr.read()
        assert status == 0, rest
        assert "stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_while_the_worker_processes_load_stops_everything_without_a_traceback(run_dir):
    """Ctrl-C in a terminal reaches the whole process group: the server and its workers, which are still
    importing. Only the server may speak (one line); no worker is left behind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharpgen.cli", "explore", "--results", str(run_dir), "--port", "0", "--workers", "2"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(_children(proc.pid)) < 3:  # the resource tracker and the two workers have started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=60)
        rest = proc.stderr.read()
        assert status in (0, 130) and "Traceback" not in rest, rest
        deadline = time.monotonic() + 30
        while _group(proc.pid):  # the resource tracker leaves a moment after the server
            assert time.monotonic() < deadline, _group(proc.pid)
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_ctrl_c_while_a_worker_is_being_started_is_held_and_taken_afterwards_not_lost():
    """A Ctrl-C that reaches the server while it starts a worker process (SIGINT kept from the child) must still
    stop the server once the worker has started; ignoring it there let the server go on to serve."""
    from sharpgen.explore.pool import _ctrl_c_held_from_children

    held = False
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (the suite may run
    try:  # as a background job, which starts with SIGINT ignored)
        with pytest.raises(KeyboardInterrupt):
            with _ctrl_c_held_from_children():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # to this thread: held
                time.sleep(0.2)
                held = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert held  # the block ran to its end before the Ctrl-C was taken


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def _group(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


# -- the page in a real browser --------------------------------------------------------------------------------


def _skip_or_fail(reason: str):
    if os.environ.get("SHARPGEN_REQUIRE_BROWSER"):  # set by .ci/run: CI must run the browser test
        pytest.fail(f"{reason}, and SHARPGEN_REQUIRE_BROWSER is set")
    pytest.skip(reason)


def _browser():
    """Headless Debian Chromium driven by its own chromedriver (nothing is downloaded), or a skip reason."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        _skip_or_fail("no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1250"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_page_in_a_headless_browser_slider_asks_for_a_new_state_and_shows_it(server, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    try:
        # The drag sends state after state, each answer re-rendering the page: an element found in one render
        # can be gone when it is read (stale) while waiting; the wait then tries again.
        wait = WebDriverWait(driver, 60, ignored_exceptions=[StaleElementReferenceException])
        driver.get(server.url + "?seed=5")

        def renders() -> int:
            return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-renders") or 0)

        def patch_query() -> str:
            return driver.find_element(By.ID, "patch").get_attribute("data-query") or ""

        def snapshot() -> dict:
            return {
                "image": driver.find_element(By.ID, "patch").get_attribute("src"),
                "query": driver.find_element(By.ID, "patch").get_attribute("data-query"),
                "tuf": driver.find_element(By.CSS_SELECTOR, "#measured tr[data-name='tuf'] td.achieved").text,
                "matches_version": driver.find_element(By.ID, "matches").get_attribute("data-version"),
                "matches_query": driver.find_element(By.ID, "matches").get_attribute("data-query"),
                "matches": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#matches li.match")],
            }

        wait.until(lambda _: renders() >= 1)
        before = snapshot()
        assert before["image"].startswith("data:image/png") and before["matches"]
        assert "HARP" in before["matches"][0] and "similarity" in before["matches"][0]
        wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, "#strip figure")) == 7)

        slider = driver.find_element(By.ID, "slider-tuf")
        count = renders()
        offset = int(slider.size["width"] * 0.35)
        ActionChains(driver).click_and_hold(slider).move_by_offset(offset, 0).release().perform()
        wait.until(lambda _: renders() > count and "tuf=" in patch_query())
        wait.until(lambda _: not driver.find_elements(By.CSS_SELECTOR, "body.busy"))
        after = snapshot()
        # Mechanics, not what the tiny test GAN learned: the page asked for a new state and shows the API's
        # answer to it (its patch and as many matches), its matches refreshed for the same query.
        assert after["query"] != before["query"]
        answer = json.loads(get(server, f"/api/state?{after['query']}")[1])
        assert after["image"] == answer["image"] and len(after["matches"]) == len(answer["matches"])
        assert int(after["matches_version"]) > int(before["matches_version"])
        assert after["matches_query"] == after["query"]
        row = driver.find_element(By.CSS_SELECTOR, "#measured tr[data-name='tuf']").text
        assert "target" in row
        assert driver.find_element(By.ID, "status").text
        assert "tuf=" in driver.current_url  # the state is in the URL
        driver.save_screenshot(str(tmp_path / "explorer.png"))
        assert (tmp_path / "explorer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # An out-of-range value typed into the box: a clear message on the page, the last good patch stays.
        box = driver.find_element(By.ID, "value-tuf")
        box.clear()
        box.send_keys("5", Keys.ENTER)
        wait.until(lambda _: driver.find_element(By.ID, "error").is_displayed())
        assert "out of range" in driver.find_element(By.ID, "error").text
        time.sleep(0.2)
        assert snapshot()["image"] == after["image"]
        driver.save_screenshot(str(tmp_path / "explorer_error.png"))
        print(f"screenshots: {tmp_path / 'explorer.png'}, {tmp_path / 'explorer_error.png'}")
    finally:
        driver.quit()
