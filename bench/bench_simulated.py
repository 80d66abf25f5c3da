"""Speed of the simulated market: a cold 2-year 1h fetch of the default symbols, a warm incremental
fetch, and the first fetch in a fresh process, against numpy drawing as many normals as minutes.

Run ``uv run python bench/bench_simulated.py``: prints a table, writes bench/results/simulated.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import brokers.simulated as simulated  # noqa: E402
from core.config import DEFAULT_SYMBOLS  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 34, tzinfo=UTC)
HISTORY = timedelta(days=730)
RESULTS = ROOT / "bench" / "results" / "simulated.json"

FRESH_PROCESS = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
from datetime import UTC, datetime, timedelta
t0 = time.perf_counter()
from brokers.simulated import SimulatedBroker
t1 = time.perf_counter()
now = datetime(2026, 6, 1, 12, 34, tzinfo=UTC)
frame = SimulatedBroker(now=lambda: now).fetch_candles("EURUSD", "1h", now - timedelta(days=730),
                                                       now)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_fetch_s": t2 - t1, "candles": frame.height}}))
"""


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def cold_fetch(broker: simulated.SimulatedBroker) -> int:
    simulated._PATHS.clear()  # forget every cached hourly path: generation from the 2018 epoch
    return sum(broker.fetch_candles(s, "1h", NOW - HISTORY, NOW).height for s in DEFAULT_SYMBOLS)


def warm_fetch(broker: simulated.SimulatedBroker) -> int:
    return sum(
        broker.fetch_candles(s, "1h", NOW - timedelta(hours=6), NOW).height for s in DEFAULT_SYMBOLS
    )


def reference(n_normals: int) -> float:
    rng = np.random.default_rng(0)
    return best_of(3, lambda: rng.standard_normal(n_normals))


def fresh_process() -> dict[str, float]:
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["first_fetch_s"])


def main() -> None:
    broker = simulated.SimulatedBroker(now=lambda: NOW)
    candles = cold_fetch(broker)
    cold = best_of(3, lambda: cold_fetch(broker))
    warm_candles = warm_fetch(broker)
    warm = statistics.median(best_of(1, lambda: warm_fetch(broker)) for _ in range(20))
    days = -(-HISTORY // timedelta(days=1)) + 1
    minutes_cold = days * 1440 * len(DEFAULT_SYMBOLS)
    minutes_warm = 2 * 1440 * len(DEFAULT_SYMBOLS)  # the last candles span at most two UTC days
    fresh = fresh_process()
    rows = [
        ("cold 2y 1h, 7 symbols", candles, cold, reference(minutes_cold), minutes_cold),
        ("warm last 6h, 7 symbols", warm_candles, warm, reference(minutes_warm), minutes_warm),
        ("fresh process: import", 0, fresh["import_s"], None, 0),
        (
            "fresh process: 2y 1h EURUSD",
            fresh["candles"],
            fresh["first_fetch_s"],
            reference(days * 1440),
            days * 1440,
        ),
    ]
    table = pl.DataFrame(
        [
            {
                "case": case,
                "candles": n,
                "seconds": round(t, 4),
                "minutes_simulated": m,
                "numpy_normals_seconds": None if ref is None else round(ref, 4),
                "ratio_vs_numpy": None if ref is None else round(t / ref, 1),
            }
            for case, n, t, ref, m in rows
        ]
    )
    with pl.Config(tbl_rows=10, tbl_cols=10, tbl_width_chars=140):
        print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "polars": pl.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
        "reference": "numpy default_rng().standard_normal(minutes_simulated), best of 3",
        "results": table.to_dicts(),
    }
    RESULTS.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
