"""`sharpgen normalize --scheduler-address` against a real `dask scheduler` with two `dask worker`s on 127.0.0.1.

The external cluster must give exactly the LocalCluster's output (every file of the Zarr store byte for byte,
the same table), also when a worker is killed with SIGKILL while it holds a chunk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from dask_helpers import DaskCluster, dask_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(dask_cli() is None, reason="no `dask` command next to this Python (pip install distributed)"),
]

SRC = Path(__file__).resolve().parents[1] / "src"
RECORDS = 12
CHUNK = 3
"""Records per Dask task: 4 chunks of the 12 records, more than the two workers, so both get work."""


def sharpgen_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """Argv and environment of `python -m sharpgen.cli ARGS` running this checkout's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "sharpgen.cli", *args], env


def sharpgen(*args: str) -> subprocess.CompletedProcess:
    argv, env = sharpgen_command(*args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def normalize_args(raw: Path, out: Path, *extra: str) -> list[str]:
    settings = f'{{"chunk_size": {CHUNK}, "mode": "fixed_scale"}}'
    return ["normalize", "--raw-dir", str(raw), "--out-dir", str(out), "--image-size", "32",
            "--settings", settings, "--seed", "5", "--no-progress", *extra]  # fmt: skip


def chunk_count(dataset: Path) -> int:
    return -(-len(pd.read_parquet(dataset / "patches.parquet")) // CHUNK)


def store_files(store: Path) -> dict[str, bytes]:
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*")) if path.is_file()}


def assert_same_dataset(result: Path, expected: Path) -> None:
    """The same patches (every Zarr file byte for byte) and the same table."""
    assert store_files(result / "patches.zarr") == store_files(expected / "patches.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(result / "patches.zarr"))[:],
                                  zarr.open_array(str(expected / "patches.zarr"))[:])  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(result / "patches.parquet"),
                                  pd.read_parquet(expected / "patches.parquet"))  # fmt: skip
    assert (result / "normalization.json").read_text() == (expected / "normalization.json").read_text()


@pytest.fixture(scope="module")
def raw_and_local(tmp_path_factory) -> tuple[Path, Path]:
    """A small synthetic raw set and its normalization by the default LocalCluster (2 workers)."""
    folder = tmp_path_factory.mktemp("dask")
    raw, local = folder / "raw", folder / "local"
    proc = sharpgen("retrieve", "--source", "synthetic", "--out-dir", str(raw), "--seed", "3", "--no-progress",
                    "--settings", f'{{"n_patches": {RECORDS}, "max_naxis": 240}}')  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = sharpgen(*normalize_args(raw, local, "--threads", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return raw, local


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker`s on 127.0.0.1, connected; stopped by PID afterwards."""
    cluster = DaskCluster(tmp_path / "cluster", workers=2)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_normalize_on_an_external_scheduler_equals_the_local_cluster(raw_and_local, dask_cluster, tmp_path):
    raw, local = raw_and_local
    proc = sharpgen(*normalize_args(raw, tmp_path / "out", "--scheduler-address", dask_cluster.address))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_dataset(tmp_path / "out", local)
    chunks = dask_cluster.chunk_workers()  # every chunk ran on the cluster's workers, not on a local one
    assert len(chunks) == chunk_count(local) and set(chunks) <= {worker.pid for worker in dask_cluster.workers}


def test_a_worker_killed_mid_chunk_does_not_change_the_output(raw_and_local, dask_cluster, tmp_path):
    raw, local = raw_and_local
    dask_cluster.stall_next_chunk()  # the first worker to finish a chunk (rows written) hangs before returning
    argv, env = sharpgen_command(*normalize_args(raw, tmp_path / "out", "--scheduler-address", dask_cluster.address))
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        victim = dask_cluster.stalled_worker()
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    killed = next(worker for worker in dask_cluster.workers if worker.pid == victim)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert_same_dataset(tmp_path / "out", local)
    chunks = dask_cluster.chunk_workers()
    assert chunks.count(victim) == 1 and len(chunks) == chunk_count(local) + 1  # its chunk was done once more
