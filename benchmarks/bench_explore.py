"""Latency of ``sharpgen explore``: one slider change -> generated patch (PNG) + measured properties + top-k matches.

Loads a finished run (``--results``, default ``results/default``), serves the explorer in-process on a free
loopback port and replays slider drags over HTTP, as the page sends them: for each swept property, ``--changes``
/ number of sweeps successive targets across its reachable range (every one a new state, so nothing comes
from the cache), from seed ``--seed``; one sweep also holds ``psep`` (a two-property search). Each change is
timed from the request to the decoded JSON answer (patch PNG, overlay, table, k matches with thumbnails).

Prints JSON lines: one per sweep and a summary, e.g. ``{"bench": "explore_slider", "changes": 40, "p50_ms": 95.1,
"p95_ms": 160.3, "solve_p50_ms": 50.2, "search_p50_ms": 6.1, "render_p50_ms": 30.0, "met": 0.95, ...}``, then the
traversal strip (7 frames) and a cached repeat. ``solve``: steering the latent (generator + measurements);
``search``: embedding + FAISS; ``render``: PNGs, overlay and thumbnails. Exits 1 when the p50 exceeds
``--budget-ms`` (300). Timings are wall clock on a possibly shared machine.

``--clients 8 --requests 200`` replaces the sweeps by parallel load: 8 client threads, each with its own seed
(``--seed`` + client number) and its own keep-alive connection, send 200 new states each (drags across the swept
properties, nothing cached) as fast as answers come; prints ``{"bench": "explore_parallel", "clients": 8,
"requests": 1600, "p50_ms": ..., "p95_ms": ..., "requests_per_s": ...}`` and exits 1 when the p95 exceeds
``--p95-budget-ms`` (1000).

``--screenshot docs/explorer.png`` also opens the page in headless Chromium (Debian's, with its chromedriver)
on one state and saves a screenshot (the README's).

Examples: ``OMP_NUM_THREADS=1 python benchmarks/bench_explore.py --results results/default --changes 40``;
``OMP_NUM_THREADS=1 python benchmarks/bench_explore.py --results results/default --clients 8 --requests 200``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results/default", help="a finished run's results_dir")
    parser.add_argument("--changes", type=int, default=40, help="slider changes in all (default 40, at least 30)")
    parser.add_argument("--properties", nargs="+", help="properties to sweep (default: the first three)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the explored latent (default 0)")
    parser.add_argument("--k", type=int, default=9, help="matches per change (default 9, the page's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch and FAISS (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--workers", type=int, help="requests computed at once (default: the explorer's)")
    parser.add_argument(
        "--in-process", action="store_true",
        help="compute in the server's threads, not in worker processes (as `sharpgen explore --in-process`)",
    )  # fmt: skip
    parser.add_argument("--budget-ms", type=float, default=300.0, help="p50 budget in ms (default 300)")
    parser.add_argument("--screenshot", help="also save a headless-Chromium screenshot of the page here")
    parser.add_argument("--clients", type=int, default=1, help="parallel clients; above 1: the load mode (default 1)")
    parser.add_argument("--requests", type=int, default=200, help="new states per client in the load mode (200)")
    parser.add_argument("--p95-budget-ms", type=float, default=1000.0, help="load-mode p95 budget in ms (1000)")
    args = parser.parse_args(argv)
    if args.changes < 30:
        parser.error("--changes must be at least 30")
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    return args


def fetch(url: str) -> tuple[float, dict]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        answer = json.loads(response.read())
    return (time.perf_counter() - start) * 1e3, answer


def summary(name: str, times: list[float], answers: list[dict], **extra) -> dict:
    timing = {part: [a["timing_ms"][part] for a in answers] for part in ("solve", "search", "render")}
    met = [a["converged"] for a in answers if any(r["role"] != "free" for r in a["rows"])]
    return {
        "bench": name,
        **extra,
        "changes": len(times),
        "p50_ms": round(float(np.percentile(times, 50)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "max_ms": round(float(np.max(times)), 1),
        **{f"{part}_p50_ms": round(float(np.percentile(values, 50)), 1) for part, values in timing.items()},
        "met": round(float(np.mean(met)), 3) if met else None,
    }


def screenshot(url: str, path: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not browser or not driver_path:
        raise SystemExit("--screenshot needs chromium and chromedriver on PATH (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1290"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-renders") or 0) >= 1)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip figure")) > 0)
        time.sleep(0.5)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if not driver.save_screenshot(path):
            raise SystemExit(f"could not write the screenshot {path}")
    finally:
        driver.quit()


def client_queries(explorer, names: list[str], seed: int, k: int, count: int) -> list[str]:
    """``count`` new states of one client: drags across each of ``names`` in turn, from ``seed``."""
    values = {n: np.linspace(explorer.properties[n].low, explorer.properties[n].high, count + 2)[1:-1] for n in names}
    return [
        urlencode([("seed", seed), (names[i % len(names)], repr(float(values[names[i % len(names)]][i]))), ("k", k)])
        for i in range(count)
    ]


def run_client(base: str, queries: list[str]) -> list[float]:
    """Send ``queries`` to ``/api/state`` one after another on one keep-alive connection; their times in ms."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    times = []
    try:
        for query in queries:
            start = time.perf_counter()
            connection.request("GET", f"{url.path}state?{query}")
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"state?{query}: HTTP {response.status}: {body[:200]!r}")
            json.loads(body)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        connection.close()
    return times


def parallel_load(explorer, base: str, args: argparse.Namespace, common: dict) -> dict:
    """``args.clients`` clients at once, ``args.requests`` new states each; latency percentiles over all."""
    names = args.properties or list(explorer.properties)[:3]
    plans = [client_queries(explorer, names, args.seed + c, args.k, args.requests) for c in range(args.clients)]
    fetch(base + f"state?seed={args.seed}&k={args.k}")  # warm-up, as the page loads
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        per_client = list(pool.map(lambda plan: run_client(base, plan), plans))
    wall = time.perf_counter() - start
    times = np.concatenate(per_client)
    result = {
        "bench": "explore_parallel",
        **common,
        "clients": args.clients,
        "requests": int(times.size),
        "p50_ms": round(float(np.percentile(times, 50)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "max_ms": round(float(times.max()), 1),
        "requests_per_s": round(times.size / wall, 2),
        "wall_s": round(wall, 1),
    }
    result["within_budget"] = result["p95_ms"] <= args.p95_budget_ms
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    from sharpgen.explore.server import Explorer, ExploreServer, default_workers, set_threads

    set_threads(args.threads)
    start = time.perf_counter()
    workers = args.workers or default_workers()
    processes = workers > 1 and not args.in_process  # as `sharpgen explore` chooses
    explorer = Explorer.from_run(args.results, args.device, workers, processes=processes, threads=args.threads)
    load_s = time.perf_counter() - start
    server = ExploreServer(explorer, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = server.url + "api/"
    common = {
        "run": args.results,
        "image_size": explorer.steering.image_size,
        "k": args.k,
        "threads": args.threads,
        "workers": explorer.workers,
        "processes": explorer.processes,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "load_s": round(load_s, 2),
    }
    if args.clients > 1:
        try:
            result = parallel_load(explorer, base, args, common)
            print(json.dumps(result), flush=True)
        finally:
            server.shutdown()
            server.server_close()
            explorer.close()
        return 0 if result["within_budget"] else 1
    try:
        fetch(base + f"state?seed={args.seed}&k={args.k}")  # warm-up: the seed's own patch, as the page loads
        names = args.properties or list(explorer.properties)[:3]
        sweeps = [(name, ()) for name in names]
        if "tuf" in explorer.properties and "psep" in explorer.properties:
            sweeps.append(("tuf", ("psep",)))
        per_sweep = -(-args.changes // len(sweeps))
        all_times, all_answers = [], []
        for name, hold in sweeps:
            spec = explorer.properties[name]
            values = np.linspace(spec.low, spec.high, per_sweep + 2)[1:-1]  # a drag across the whole range
            times, answers = [], []
            for value in values:
                query = urlencode([("seed", args.seed), (name, repr(float(value))), ("k", args.k)] +
                                  [("hold", h) for h in hold])  # fmt: skip
                elapsed, answer = fetch(base + "state?" + query)
                assert answer["matches"] is None or len(answer["matches"]) == min(args.k, len(explorer.retriever.index))
                times.append(elapsed)
                answers.append(answer)
            print(json.dumps(summary("explore_sweep", times, answers, property=name, hold=list(hold))), flush=True)
            all_times += times
            all_answers += answers
        result = summary("explore_slider", all_times, all_answers, **common)
        result["within_budget"] = result["p50_ms"] <= args.budget_ms
        print(json.dumps(result), flush=True)

        spec = explorer.properties[names[0]]
        query = urlencode([("seed", args.seed), (names[0], repr(spec.median)), ("along", names[0])])
        times = [fetch(base + "traversal?" + query)[0] for _ in range(10)]
        print(json.dumps({"bench": "explore_traversal", "frames": 7, "p50_ms": round(float(np.median(times)), 1)}))
        cached = [fetch(base + "state?" + query)[0] for _ in range(10)]
        print(json.dumps({"bench": "explore_cached_state", "p50_ms": round(float(np.median(cached)), 1)}))
        if args.screenshot:
            tuf = explorer.properties.get("tuf")
            state = [("seed", 4)]
            if tuf is not None:
                state.append(("tuf", repr(float(np.nanquantile(explorer.steering.samples["tuf"], 0.8)))))
                state.append(("along", "tuf"))
            screenshot(server.url + "?" + urlencode(state), args.screenshot)
            print(json.dumps({"bench": "explore_screenshot", "path": args.screenshot}), flush=True)
    finally:
        server.shutdown()
        server.server_close()
        explorer.close()
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
