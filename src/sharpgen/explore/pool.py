"""The explorer's worker processes: each holds the run (generator, directions, encoder, index) and computes
answers, so that ``workers`` requests really run on ``workers`` CPU cores (threads of one process share its
interpreter lock, which the steering loop's Python and pandas work holds most of the time).

Work is handed out first come, first served. A worker that dies (killed, out of memory) fails the requests it
held with one line; the pool is started afresh for the next ones. Workers ignore Ctrl-C: the server stops them.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from http import HTTPStatus
from pathlib import Path

from ..errors import SharpgenError

START_TIMEOUT_S = 600
"""How long the workers may take to load the run before the explorer gives up (a slow shared disk)."""

_explorer = None
"""The worker process's own explorer (computing in its one thread), set by :func:`_load`."""


def _load(run_dir: str, device: str, threads: int) -> None:
    """Worker start: load the run."""
    global _explorer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the server stops us
    from .server import Explorer, set_threads

    set_threads(threads)
    _explorer = Explorer.from_run(run_dir, device=device, workers=1)


def _loaded_pid() -> int:
    """This worker's process id (it answers once it has loaded the run), after a short pause that lets the
    other workers take their turn."""
    time.sleep(0.05)
    return os.getpid()


def _call(method: str, *args):
    """Run the explorer method ``method`` in this worker."""
    return getattr(_explorer, method)(*args)


class WorkerPool:
    """``workers`` processes, each with ``run_dir`` loaded on ``device`` with ``threads`` CPU threads."""

    def __init__(self, run_dir: str | Path, device: str, workers: int, threads: int = 1):
        self.run_dir, self.device, self.workers, self.threads = str(run_dir), device, workers, threads
        self._lock = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # a fork of a process running PyTorch threads can hang
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_load, initargs=(self.run_dir, self.device, self.threads)
        )
        try:  # the first requests find every worker loaded: wait until each has answered
            deadline, answered = time.monotonic() + START_TIMEOUT_S, set()
            while len(answered) < self.workers:
                with _ctrl_c_held_from_children():
                    pending = [executor.submit(_loaded_pid) for _ in range(self.workers)]  # starts every worker
                answered.update(future.result(timeout=max(1.0, deadline - time.monotonic())) for future in pending)
        except BaseException as exc:
            _stop(executor, now=True)
            if isinstance(exc, BrokenProcessPool | TimeoutError):
                raise SharpgenError(f"{self.run_dir}: the explorer's worker processes could not load the run") from None
            raise
        return executor

    def call(self, method: str, *args):
        """``Explorer.<method>(*args)`` in a worker process; its answer, or its exception re-raised here."""
        with self._lock:
            executor = self._executor
        try:
            return executor.submit(_call, method, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:  # the first request to notice starts a new pool
                    _stop(executor)
                    self._executor = self._start()
            from .server import RequestError

            raise RequestError(
                "a worker process of the explorer died during this request (out of memory?); it was replaced, "
                "try again",
                HTTPStatus.SERVICE_UNAVAILABLE,
            ) from None

    def close(self) -> None:
        """Stop the workers (pending work is dropped; a running computation finishes first)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            _stop(executor)


@contextlib.contextmanager
def _ctrl_c_held_from_children():
    """Processes started inside begin with SIGINT blocked (the signal mask survives fork and exec) and ignore it
    once loaded (:func:`_load`), so a Ctrl-C while they import and load stops the server alone, without a
    traceback from each worker. The server's own main thread holds a Ctrl-C that lands meanwhile and takes it
    as the block ends: never lost (ignoring SIGINT here instead dropped a Ctrl-C that came while the second
    worker was being started, and the server went on to serve). From the main thread only, where the platform
    can block signals."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop(executor: ProcessPoolExecutor, now: bool = False) -> None:
    """Drop the pending work of ``executor``, end its processes (``now``: at once, else after their current
    computation) and free its queues' semaphores (else the resource tracker warns of leaked ones when the
    server leaves without the interpreter's teardown)."""
    processes = list((executor._processes or {}).values())  # noqa: SLF001 (no public handle on them)
    if now:
        for process in processes:
            process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    del executor, processes
    gc.collect()
