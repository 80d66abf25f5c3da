"""Fits in parallel, each in a worker process: the families of one training are independent (own
study, own fits, own seed), so they run side by side and every result is what it would be one
after the other (each fit keeps its ``n_threads`` cap and runs the same single-threaded code).

Processes, not threads: scikit-learn's histogram GBM grows its trees in Python between its
OpenMP loops, and the tuning's backtests are Python, so threads contend for the GIL (two hgb fits
in two threads ran 1.25× faster than one after the other; in two processes, 2×). joblib's loky
executor keeps its workers between calls (started once per process, ~2 s) and is shared by every
training the process runs: concurrent trainings (the flow's fan-out) queue on the same workers
instead of oversubscribing the cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_workers(n_threads: int) -> int:
    """Concurrent fits of ``n_threads`` threads each that the cores hold."""
    return max(1, cores() // max(1, n_threads))


def map_ordered(
    fn: Callable[[K], T], keys: Iterable[K], workers: int, n_threads: int = 1
) -> dict[K, T]:
    """``{key: fn(key)}`` in ``keys``' order, computed in up to ``workers`` worker processes
    (inline for one worker or one key). ``fn`` and what it holds are pickled (cloudpickle: a
    closure is fine); each worker's OpenMP and BLAS pools are capped to ``n_threads``. The first
    error is raised in the caller, with its own type, and the remaining calls are cancelled."""
    keys = list(keys)
    # A daemonic process (some pools' workers) may not start children: it fits inline.
    if workers <= 1 or len(keys) <= 1 or multiprocessing.current_process().daemon:
        return {k: fn(k) for k in keys}
    from joblib import Parallel, delayed, parallel_config

    # A worker's nested call runs inline (joblib gives nested calls one job).
    with parallel_config(backend="loky", inner_max_num_threads=max(1, n_threads)):
        # Always ``workers`` jobs: a different size would make loky resize the shared pool
        # under a concurrent training's feet.
        results = Parallel(n_jobs=workers)(delayed(fn)(k) for k in keys)
    return dict(zip(keys, results, strict=True))
