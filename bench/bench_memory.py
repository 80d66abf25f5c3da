"""Peak resident memory of training 20 symbols × 50k hourly candles the way the training flow does
(two symbols at a time on threads, every result kept until the end as Prefect futures keep them)
[target ≤ 4 GB]. The 17 catalogue instruments plus 3 from a second market seed make 20 series.

The trial budget is 1 per family (``--trials``): memory is set by the data, the fold copies and the
fitted models, not by how many trials run one after another; the time is reported, not judged.

    uv run --frozen python bench/bench_memory.py [--trials 1]
"""

from __future__ import annotations

import argparse
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
from core.instruments import CATALOGUE
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.training import TrainingConfig, train_dataset

END = datetime(2026, 11, 1, tzinfo=UTC)
CANDLES = 50_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    units = [(s, 7) for s in CATALOGUE] + [(s, 8) for s in list(CATALOGUE)[: 20 - len(CATALOGUE)]]
    start = time.perf_counter()

    def train(unit: tuple[str, int]):
        symbol, seed = unit
        home = root / f"seed{seed}"
        settings = load_settings(home=home)
        store = CandleStore(home)
        broker = SimulatedBroker(seed=seed, edge=settings.simulated.edge)
        candles = broker.fetch_candles(symbol, "1h", END - timedelta(hours=CANDLES * 1.5), END)
        store.upsert(symbol, "1h", candles.tail(CANDLES))
        inputs = load_inputs(store, symbol, "1h", settings.features)
        dataset = build_dataset(inputs, symbol, "1h", settings.features, settings.labels)
        cfg = dataclasses.replace(
            TrainingConfig.from_settings(settings, symbol, "1h"), trials=args.trials, n_threads=1
        )
        result = train_dataset(dataset, inputs.candles, cfg, home / "optuna")
        return (dataset, inputs), result  # both kept alive, as the flow's futures keep them

    with ThreadPoolExecutor(max_workers=2) as pool:
        kept = list(pool.map(train, units))
    seconds = time.perf_counter() - start
    rows = [
        {
            "case": f"{len(kept)} symbols × {CANDLES} candles, 2 in parallel",
            "trials_per_family": args.trials,
            "dataset_rows": sum(k[0][0].height for k in kept),
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(_rss_mb()),
            "target_mb": 4096,
        }
    ]
    save("memory", rows)


if __name__ == "__main__":
    main()
