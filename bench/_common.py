"""Shared bench helpers: synthetic candles, timing, result files."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

RESULTS = Path(__file__).resolve().parent / "results"


def random_candles(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` hourly candles of a fat-tailed random walk with gapping opens (valid OHLC)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.002))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.standard_normal(n) * 0.0003)
    high = np.maximum(open_, close) * (1 + np.abs(rng.standard_normal(n)) * 0.001)
    low = np.minimum(open_, close) * (1 - np.abs(rng.standard_normal(n)) * 0.001)
    start = datetime(1990, 1, 1, tzinfo=UTC)
    ts = pl.datetime_range(
        start, start + timedelta(hours=n - 1), "1h", eager=True, time_zone="UTC", time_unit="us"
    )
    return pl.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1, 1000, n),
        }
    )


def best_of(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs, in seconds (the least disturbed by the machine)."""
    fn()  # warm-up: imports, caches, first-touch of memory
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Process CPU time of one run (all threads), the fastest of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def save(name: str, rows: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(
        json.dumps(
            {"machine": platform.platform(), "python": platform.python_version(), "rows": rows},
            indent=2,
        )
    )
    print(pl.DataFrame(rows))
    print(f"wrote {path}")
    return path
