"""Throughput and peak memory of the normalize stage (Dask -> Zarr) at two dataset sizes.

Generates ``--base`` synthetic SHARP records once, then normalizes manifests of each ``--sizes`` entry. A
manifest larger than the base reuses the base files under new record ids and HARP numbers, so every record is
read, normalized and measured for real. Peak RSS is the largest sum over this process and all its children
(the Dask scheduler in-process, worker processes), sampled every 0.1 s.

Prints one JSON line per size, e.g. ``{"bench": "normalize", "n": 20000, "seconds": ..., "patches_per_s": ...,
"peak_rss_mb": ...}``, then ``{"bench": "normalize_memory_growth", "ratio": ...}`` (largest / smallest size).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from sharpgen.atomic import write_parquet_atomic
from sharpgen.config import build_settings, settings_from_config, validate_config
from sharpgen.data.normalize import NormalizeSettings, build_dataset
from sharpgen.data.sources.synthetic import SyntheticSettings, generate_synthetic
from sharpgen.run import stage_file


class PeakRss:
    """Sample the resident memory of this process tree in a background thread; ``peak_mb`` after exit."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        root = psutil.Process()
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tiled_manifest(base: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` rows cycling through ``base``; copy k of a record gets HARP number + k * 10**7 and a new id."""
    copies = -(-n // len(base))
    frames = []
    for k in range(copies):
        frame = base.copy()
        frame["harpnum"] = frame["harpnum"] + k * 10**7
        frame["record"] = frame["record"] + f"#copy{k}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).iloc[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="dataset sizes (records)")
    parser.add_argument("--base", type=int, default=2000, help="distinct synthetic records generated (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    parser.add_argument("--image-size", type=int, default=128, help="patch side S (default 128)")
    parser.add_argument("--mode", choices=("fixed_scale", "resize"), default="fixed_scale")
    parser.add_argument("--work-dir", help="where records and outputs go (default: a temporary directory)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_normalize_", dir=args.work_dir) as tmp:
        raw = Path(tmp) / "raw"
        start = time.perf_counter()
        base = generate_synthetic(
            raw, build_settings(SyntheticSettings, n_patches=args.base), seed=1, workers=args.workers
        )
        print(json.dumps({"bench": "synthetic_base", "n": args.base, "seconds": round(time.perf_counter() - start, 2)}))
        config = validate_config({"image_size": args.image_size, "normalize": {"mode": args.mode}})
        settings = settings_from_config(NormalizeSettings, config)
        peaks = {}
        for n in args.sizes:
            write_parquet_atomic(tiled_manifest(base, n), stage_file(raw, "raw_manifest"))
            start = time.perf_counter()
            with PeakRss() as memory:
                build_dataset(raw, Path(tmp) / f"data{n}", settings, seed=0, workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            peaks[n] = memory.peak_mb
            print(json.dumps({
                "bench": "normalize", "n": n, "workers": args.workers, "mode": args.mode,
                "image_size": args.image_size, "seconds": round(seconds, 2),
                "patches_per_s": round(n / seconds, 1), "peak_rss_mb": round(memory.peak_mb, 1),
            }))  # fmt: skip
        smallest, largest = min(peaks), max(peaks)
        print(json.dumps({
            "bench": "normalize_memory_growth", "from_n": smallest, "to_n": largest,
            "ratio": round(peaks[largest] / peaks[smallest], 3),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
