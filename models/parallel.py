"""Fits in parallel, each on its own thread: the families of one training are independent (own
study, own fits, own seed), so they run side by side and every result is what it would be one
after the other (each fit keeps its ``n_threads`` cap; nothing is shared but read-only arrays).

One pool per process and size, shared by every training the process runs: a lone training uses
every core, and concurrent trainings (the flow's fan-out) queue on the same threads instead of
oversubscribing them. The fits run in C with the GIL released (scikit-learn's OpenMP loops,
LightGBM, XGBoost, BLAS), so threads give real parallelism.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
_PREFIX = "candleflow-fit"


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_workers(n_threads: int) -> int:
    """Concurrent fits of ``n_threads`` threads each that the cores hold."""
    return max(1, cores() // max(1, n_threads))


def _pool(workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=_PREFIX)
        return _POOLS[workers]


def map_ordered(fn: Callable[[K], T], keys: Iterable[K], workers: int) -> dict[K, T]:
    """``{key: fn(key)}`` in ``keys``' order, computed on up to ``workers`` threads (inline for
    one). Every call finishes before the first error, if any, is raised: nothing keeps running
    behind the caller's back."""
    keys = list(keys)
    nested = threading.current_thread().name.startswith(_PREFIX)  # never wait on its own pool
    if workers <= 1 or len(keys) <= 1 or nested:
        return {k: fn(k) for k in keys}
    pool = _pool(workers)
    futures: dict[K, Future[T]] = {k: pool.submit(fn, k) for k in keys}
    wait(futures.values())
    return {k: f.result() for k, f in futures.items()}
