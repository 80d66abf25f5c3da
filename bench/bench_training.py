"""Training speed against today's code, measured in the same run (issue targets in brackets):

* the default tuned training of one symbol (default config, 730 days of simulated hourly candles):
  this tree against a base commit checked out into a temp dir, each run in a subprocess of the
  same venv's python, alternating old/new to share out the machine's noise [new ≥ 2× faster];
  tuned parameters and promotion metrics compared between the two;
* ``--pipeline``: ``candleflow run`` on the default universe, fresh home, old and new
  [≤ 90 s wall on 2 cores];
* ``--fanout``: 6 symbols on 2 cores, one at a time against two at a time (1 thread per fit).

Usage: ``python bench/bench_training.py [--base c360639] [--repeats 2] [--pipeline] [--fanout]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--worker":
    ROOT = Path(sys.argv[2]).resolve()  # the tree under test (this one or the base commit)
else:
    ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: both trees train on the same candles
SYMBOL = "BTCUSD"
PROMOTION = ("cv_roc_auc", "oos_roc_auc", "oos_sharpe", "oos_dsr", "pbo", "trials", "trials_total")


def _dataset(home: Path, symbol: str, days: int | None = None):
    from brokers.simulated import SimulatedBroker
    from core.config import load_settings
    from core.store import CandleStore
    from features.dataset import build_dataset, load_inputs

    settings = load_settings(home=home)
    store = CandleStore(home)
    broker = SimulatedBroker(seed=settings.simulated.seed, edge=settings.simulated.edge)
    start = NOW - timedelta(days=days or settings.universe.history_days)
    store.upsert(symbol, "1h", broker.fetch_candles(symbol, "1h", start, NOW))
    inputs = load_inputs(store, symbol, "1h", settings.features)
    dataset = build_dataset(inputs, symbol, "1h", settings.features, settings.labels)
    return settings, dataset, inputs.candles


def _tree_cpu() -> float:
    """CPU seconds of this process and its live children (the fit pool's worker processes)."""
    import psutil

    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def worker(symbol: str, out: Path) -> None:
    """One default tuned training of ``symbol`` by the tree on sys.path; its figures to ``out``."""
    from models.training import TrainingConfig, train_dataset

    home = Path(tempfile.mkdtemp(prefix="bench-training-worker-"))
    try:
        settings, dataset, candles = _dataset(home, symbol)
        cfg = TrainingConfig.from_settings(settings, symbol, "1h")
        wall, cpu = time.perf_counter(), _tree_cpu()
        result = train_dataset(dataset, candles, cfg, home / "optuna")
        wall, cpu = time.perf_counter() - wall, _tree_cpu() - cpu
        figures = {
            "seconds": wall,
            "cpu_seconds": cpu,
            "rows": dataset.frame.height,
            "stages": result.seconds,
            "metrics": {k: result.metrics.get(k) for k in PROMOTION},
            "params": {f: t.params for f, t in result.tuned.items()},
            "completed": {f: len(t.trial_sharpes) for f, t in result.tuned.items()},
            "data_hash": result.data_hash,
        }
        out.write_text(json.dumps(figures, default=float))
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def base_tree(commit: str) -> Iterator[Path]:
    """The base commit checked out into a temp dir (a detached worktree), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cf-base-")) / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(path.parent, ignore_errors=True)


def _env(home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "60"
    # Both trees trade this tree's simulated market (its edge was re-calibrated since the base
    # commit): the same candles give the same dataset, so their tuned results can be compared.
    env.setdefault("CANDLEFLOW_SIMULATED__EDGE", str(_edge()))
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        env["CANDLEFLOW_HOME"] = str(home)
        env["PREFECT_HOME"] = str(home / "prefect-home")
    return env


def _edge() -> float:
    from core.config import load_settings

    return load_settings().simulated.edge


def run_worker(tree: Path, symbol: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), symbol]
        subprocess.run([*cmd, str(out)], cwd=tree, env=_env(), check=True)
        return json.loads(out.read_text())


def run_pipeline(tree: Path) -> dict:
    """``candleflow run`` on the default universe in a fresh home: wall seconds and exit code."""
    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "run"],
            cwd=tree,
            env=_env(home),
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        stages = [line for line in done.stderr.splitlines() if line.startswith("Time:")]
        return {"seconds": wall, "exit": done.returncode, "stages": stages[-1:] or None}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _ratio(old: list[float], new: list[float]) -> float:
    return round(min(old) / min(new), 2)


def same_run(base: Path, repeats: int) -> list[dict]:
    """Old and new one-symbol trainings, alternating which goes first in each round."""
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(repeats):
        order = [("old", base), ("new", ROOT)]
        for name, tree in order if i % 2 == 0 else order[::-1]:
            runs[name].append(run_worker(tree, SYMBOL))
            print(f"{name} #{i + 1}: {runs[name][-1]['seconds']:.1f} s", flush=True)
    old, new = runs["old"], runs["new"]
    rows = []
    for key in ("seconds", "cpu_seconds"):
        o, n = [r[key] for r in old], [r[key] for r in new]
        rows.append(
            {
                "case": f"one symbol, default tuned training, {key} (best of {repeats})",
                "old_s": round(min(o), 1),
                "new_s": round(min(n), 1),
                "speed_up": _ratio(o, n),
                "target": "≥ 2×" if key == "seconds" else "",
                "note": f"old {[round(v, 1) for v in o]}, new {[round(v, 1) for v in n]}",
            }
        )
    same_data = len({r["data_hash"] for r in old + new}) == 1
    same = same_data and all(r["params"] == old[0]["params"] for r in old + new)
    rows.append(
        {
            "case": "tuned params, old vs new (same seed)",
            "old_s": None,
            "new_s": None,
            "speed_up": None,
            "target": "identical",
            "note": "identical" if same else ("DIFFER" if same_data else "datasets differ"),
        }
    )
    _details(
        "training_same_run",
        {"rows": new[0]["rows"], "old": old, "new": new, "params_identical": same},
    )
    return rows


def _details(name: str, details: dict) -> None:
    from bench._common import RESULTS

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(details, indent=2, default=float))
    for side in ("old", "new"):
        for run in details.get(side, []):
            print(side, json.dumps(run["metrics"]), json.dumps(run["stages"]))


def pipeline(base: Path) -> list[dict]:
    runs = {"new": run_pipeline(ROOT)}
    print(f"candleflow run, new: {runs['new']}", flush=True)
    runs["old"] = run_pipeline(base)
    print(f"candleflow run, old: {runs['old']}", flush=True)
    return [
        {
            "case": "candleflow run, default universe, fresh home (wall)",
            "old_s": round(runs["old"]["seconds"], 1),
            "new_s": round(runs["new"]["seconds"], 1),
            "speed_up": _ratio([runs["old"]["seconds"]], [runs["new"]["seconds"]]),
            "target": "new ≤ 90 s",
            "note": f"exit old {runs['old']['exit']}, new {runs['new']['exit']}; "
            f"{runs['old']['stages']} → {runs['new']['stages']}",
        }
    ]


def fanout() -> list[dict]:
    """6 symbols on 2 cores with this tree: one at a time, and two at a time (the flow)."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from models.training import TrainingConfig, train_dataset

    symbols = ["BTCUSD", "ETHUSD", "SOLUSD", "EURUSD", "XAUUSD", "US500"]
    home = Path(tempfile.mkdtemp(prefix="bench-training-"))
    data = {s: _dataset(home, s) for s in symbols}

    def run(symbol: str, journal: Path) -> None:
        settings, dataset, candles = data[symbol]
        cfg = dataclasses.replace(TrainingConfig.from_settings(settings, symbol, "1h"))
        train_dataset(dataset, candles, cfg, journal)

    timings = {}
    for case, workers in (("one at a time", 1), ("two at a time (the flow)", 2)):
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda s, j=home / f"journal-{workers}": run(s, j), symbols))
        timings[case] = time.perf_counter() - start
    parallel = timings["two at a time (the flow)"]
    return [
        {
            "case": f"6 symbols, 1 thread per fit, {case}",
            "old_s": None,
            "new_s": round(seconds, 1),
            "speed_up": round(seconds / parallel, 2),
            "target": "",
            "note": "speed_up: against two at a time",
        }
        for case, seconds in timings.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="c360639", help="today's code: a commit of this repo")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pipeline", action="store_true", help="also time `candleflow run`")
    parser.add_argument("--fanout", action="store_true", help="also time 6 symbols on 2 cores")
    args = parser.parse_args()
    from bench._common import save

    rows = []
    with base_tree(args.base) as base:
        rows += same_run(base, args.repeats)
        if args.pipeline:
            rows += pipeline(base)
    if args.fanout:
        rows += fanout()
    save("training", rows)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[3], Path(sys.argv[4]))
    else:
        main()
