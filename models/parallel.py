"""Fits in parallel, each in a worker process: the families of one training are independent (own
study, own fits, own seed), so they run side by side and every result is what it would be one
after the other (each fit keeps its ``n_threads`` cap and runs the same single-threaded code).

Processes, not threads: scikit-learn's histogram GBM grows its trees in Python between its
OpenMP loops, and the tuning's backtests are Python, so threads contend for the GIL (two hgb fits
in two threads ran 1.25× faster than one after the other; in two processes, 2×). The workers are
loky's reusable executor (what joblib runs on): started once per process (~3.5 s of imports) and
shared by every training the process runs, so concurrent trainings (the flow's fan-out) queue on
the same workers instead of oversubscribing the cores. Jobs are futures (:class:`FitPool`), so a
caller can submit a job's followers as soon as it ends, without waiting for its siblings.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any, TypeVar

T = TypeVar("T")

# Set in every worker: a worker's own jobs run inline (no pool inside the pool).
IN_WORKER = "CANDLEFLOW_FIT_WORKER"
# What joblib's loky backend caps in its workers (OpenMP, BLAS, numexpr pools).
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
IDLE_SECONDS = 300  # a worker idle this long exits (joblib's default too)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_workers(n_threads: int) -> int:
    """Concurrent fits of ``n_threads`` threads each that the cores hold."""
    return max(1, cores() // max(1, n_threads))


def _inline(workers: int) -> bool:
    # A daemonic process (some pools' workers) may not start children; a fit worker's jobs run
    # where they are.
    return (
        workers <= 1 or multiprocessing.current_process().daemon or os.environ.get(IN_WORKER) == "1"
    )


class FitPool:
    """Jobs on up to ``workers`` worker processes, each with its OpenMP and BLAS pools capped to
    ``n_threads``; inline (run at submission) for one worker or inside a worker. ``fn`` and its
    arguments are pickled (cloudpickle: a closure is fine). Every pool of a process is the same
    loky executor: always ``workers`` of them (another size would make loky resize it under a
    concurrent training's feet)."""

    def __init__(self, workers: int, n_threads: int = 1) -> None:
        self.workers, self.n_threads = workers, max(1, n_threads)
        self.inline = _inline(workers)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self.inline:
            done: Future[T] = Future()
            try:
                done.set_result(fn(*args))
            except Exception as error:  # raised by gather(), as a worker's would be
                done.set_exception(error)
            return done
        from joblib.externals.loky import get_reusable_executor

        env = {var: str(self.n_threads) for var in THREAD_VARS} | {IN_WORKER: "1"}
        executor = get_reusable_executor(max_workers=self.workers, timeout=IDLE_SECONDS, env=env)
        return executor.submit(fn, *args)

    def warm(self, *modules: str) -> None:
        """Start the workers now, each importing ``modules``, without waiting: their start-up
        (~3.5 s of imports) runs while the caller does its own work."""
        if not self.inline:
            for _ in range(self.workers):
                self.submit(_import, modules)


def _import(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def gather(futures: Sequence[Future[T]]) -> list[T]:
    """The futures' results in their order. The first error is raised with its own type and the
    futures not yet started are cancelled."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f in done and f.exception() is not None), None)
    if failed is not None:
        for future in pending:
            future.cancel()
        raise failed.exception()  # type: ignore[misc]
    return [f.result() for f in futures]
