"""A real Dask cluster for the tests: `dask scheduler` and `dask worker` processes on 127.0.0.1.

The scheduler binds a free port (``--port 0``) and writes its address into a scheduler file the workers read,
so no port is guessed. Workers run without a nanny (the process started is the worker, so ``kill -9`` of its PID
kills the worker and nothing restarts it), one thread each, with this checkout's ``src`` on PYTHONPATH.

Every worker preloads this file (:func:`dask_setup`), which logs the worker of each finished normalize chunk.
Armed by :meth:`DaskCluster.stall_next_chunk`, the first worker to finish a chunk (its rows already written to
Zarr) records its PID and then hangs before returning the result, so a test can kill it mid-task at a
deterministic point. Otherwise the chunks' work is unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PROBE_DIR_VARIABLE = "SHARPGEN_TEST_PROBE_DIR"
START_TIMEOUT_S = 90.0
STALL_LIMIT_S = 300.0
"""A stalled worker gives up (raises) after this long, should the test never kill it."""


def dask_cli() -> Path | None:
    """The `dask` command of the running interpreter's environment, or None when it is not installed."""
    path = Path(sys.executable).parent / "dask"
    return path if path.is_file() else None


class DaskCluster:
    """`dask scheduler` + ``workers`` `dask worker` processes; :meth:`close` stops each by PID."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = self.folder / "scheduler.json"
        self.probe_dir = self.folder / "probe"
        self.probe_dir.mkdir(exist_ok=True)
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []
        self.worker_count = workers

    def start(self) -> DaskCluster:
        """Start the scheduler and the workers; return once every worker is connected."""
        from distributed import Client

        self.scheduler = self._spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(self.scheduler_file),
        )  # fmt: skip
        self._wait_for(lambda: self._written_address() is not None, "the scheduler file", self.scheduler)
        for number in range(self.worker_count):
            options = ["--scheduler-file", str(self.scheduler_file), "--host", "127.0.0.1", "--no-nanny",
                       "--nthreads", "1", "--no-dashboard", "--name", f"worker-{number}",
                       "--local-directory", str(self.folder / f"worker-{number}"), "--preload", __file__]  # fmt: skip
            self.workers.append(self._spawn(f"worker-{number}", "worker", *options))
        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(self.worker_count, timeout=START_TIMEOUT_S)
        return self

    @property
    def address(self) -> str:
        """The scheduler's address, e.g. ``tcp://127.0.0.1:40123``."""
        return self._written_address()

    def _written_address(self) -> str | None:
        """The address in the scheduler file, or None while the scheduler has not (completely) written it."""
        try:
            return json.loads(self.scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    def stall_next_chunk(self) -> None:
        """Arm the preload: the next worker to finish a normalize chunk hangs before returning it."""
        (self.probe_dir / "armed").touch()

    def stalled_worker(self, timeout_s: float = START_TIMEOUT_S) -> int:
        """The PID of the worker that stalled (waits until one has)."""
        claim = self.probe_dir / "stalled"
        self._wait_for(lambda: claim.is_file() and claim.read_text().strip() != "", "a stalled chunk", None, timeout_s)
        return int(claim.read_text())

    def chunk_workers(self) -> list[int]:
        """The PID of the worker of every normalize chunk finished so far (one entry per chunk)."""
        log = self.probe_dir / "chunks.log"
        return [int(line) for line in log.read_text().split()] if log.is_file() else []

    def close(self) -> None:
        """Stop the workers, then the scheduler, each by its PID (SIGTERM, then SIGKILL after 10 s)."""
        for group in (self.workers, [self.scheduler]):
            for process in group:
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in group:
                if process is None:
                    continue
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in self._logs:
            log.close()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of every process's log (for assertion messages)."""
        return "\n".join(f"--- {log.name}\n{Path(log.name).read_text()[-chars:]}" for log in self._logs)

    def _spawn(self, name: str, role: str, *args: str) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        env[PROBE_DIR_VARIABLE] = str(self.probe_dir)
        env["OMP_NUM_THREADS"] = "1"
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 (closed in close())
        self._logs.append(log)
        return subprocess.Popen([str(dask_cli()), role, *args], stdout=log, stderr=subprocess.STDOUT, env=env)

    def _wait_for(self, ready, what: str, process, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"dask exited with {process.returncode} before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)


# -- the worker preload -------------------------------------------------------------------------------------


def dask_setup(worker) -> None:
    """Runs in each worker at start (``--preload``): wrap ``normalize_chunk`` so that every finished chunk is
    logged (the worker's PID, one line per chunk) and an armed test can stall one."""
    import functools

    from sharpgen.data import normalize

    original = normalize.normalize_chunk

    @functools.wraps(original)
    def normalize_chunk(*args, **kwargs):
        result = original(*args, **kwargs)
        probe = Path(os.environ[PROBE_DIR_VARIABLE])
        with open(probe / "chunks.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        if (probe / "armed").is_file():
            try:
                claim = os.open(probe / "stalled", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return result  # another worker already stalled: this one works normally
            os.write(claim, str(os.getpid()).encode())
            os.close(claim)
            time.sleep(STALL_LIMIT_S)  # until the test kills this process
            raise RuntimeError("the test never killed the stalled worker")
        return result

    normalize.normalize_chunk = normalize_chunk
