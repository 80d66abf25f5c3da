"""Training figures (issue targets in brackets), measured on the simulated market:

* one symbol, ~20k rows, default features, 4 families, purged K-fold, default trials [≤ 60 s];
* a refit of the 4 families with fixed (tuned) parameters [≤ 15 s];
* 6 symbols on 2 cores: one at a time (2 threads per fit) against two at a time (1 thread per
  fit) [parallel ≥ 1.6× faster], and against one at a time with 1 thread per fit;
* peak resident memory of this process.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save
from brokers.simulated import SimulatedBroker
from core.config import load_settings
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.training import TrainingConfig, train_dataset
from models.tuning import fit

SYMBOLS = ["BTCUSD", "ETHUSD", "SOLUSD", "EURUSD", "XAUUSD", "US500"]
FANOUT_TRIALS = None  # the default budget


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-training-"))
    settings = load_settings(home=home)
    store, now = CandleStore(home), datetime.now(UTC)
    broker = SimulatedBroker(seed=settings.simulated.seed, edge=settings.simulated.edge)
    for symbol in SYMBOLS:  # ~20k hourly candles for crypto (24/7), ~14k for the others
        store.upsert(
            symbol, "1h", broker.fetch_candles(symbol, "1h", now - timedelta(days=840), now)
        )
    data = {}
    for symbol in SYMBOLS:
        inputs = load_inputs(store, symbol, "1h", settings.features)
        dataset = build_dataset(inputs, symbol, "1h", settings.features, settings.labels)
        data[symbol] = (dataset, inputs.candles)
    rows = []

    def run(symbol: str, n_threads: int, trials: int | None, journal: Path):
        cfg = TrainingConfig.from_settings(settings, symbol, "1h")
        cfg = dataclasses.replace(cfg, n_threads=n_threads, trials=trials or cfg.trials)
        dataset, candles = data[symbol]
        return train_dataset(dataset, candles, cfg, journal)

    start = time.perf_counter()
    result = run("BTCUSD", 2, None, home / "journal-one")
    one = time.perf_counter() - start
    frame = data["BTCUSD"][0].frame
    rows.append(
        {
            "case": "one symbol, default budget",
            "rows": frame.height,
            "trials": int(result.metrics["trials"]),
            "seconds": round(one, 1),
            "target_s": 60,
        }
    )

    X = frame.select(data["BTCUSD"][0].meta.feature_columns).to_numpy()
    y = (frame["label"] == 1).to_numpy().astype("int8")
    start = time.perf_counter()
    for family, tuned in result.tuned.items():
        fit(family, tuned.params, X, y, seed=42, n_threads=2)
    rows.append(
        {
            "case": "refit 4 families, fixed params",
            "rows": frame.height,
            "trials": 0,
            "seconds": round(time.perf_counter() - start, 1),
            "target_s": 15,
        }
    )

    timings = {}
    for case, workers, threads in (
        ("serial, 1 thread per fit (the flow's fits, one symbol at a time)", 1, 1),
        ("serial, 2 threads per fit", 1, 2),
        ("2 symbols in parallel, 1 thread per fit (the flow)", 2, 1),
    ):
        journal = home / f"journal-{workers}-{threads}"
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda s, t=threads, j=journal: run(s, t, FANOUT_TRIALS, j), SYMBOLS))
        timings[case] = time.perf_counter() - start
    parallel = timings["2 symbols in parallel, 1 thread per fit (the flow)"]
    for case, seconds in timings.items():
        rows.append(
            {
                "case": f"6 symbols: {case}",
                "rows": None,
                "trials": int(result.metrics["trials"]) * len(SYMBOLS),
                "seconds": round(seconds, 1),
                "target_s": None,
                "parallel_speed_up": round(seconds / parallel, 2),
            }
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        {
            "case": "peak resident memory (MB)",
            "rows": None,
            "trials": None,
            "seconds": None,
            "target_s": None,
            "peak_mb": round(peak_mb),
        }
    )
    save("training", rows)


if __name__ == "__main__":
    main()
