"""Randomised ``kill -9`` soak: commands that write the state directory are killed at a random
moment, then the state is checked and the command re-run to completion.

Per trial: one of ``collect`` (candle store), ``import`` (candle store, another symbol),
``dataset`` (datasets), ``train`` (Optuna journal, MLflow) and ``signals`` (ledger, paper orders)
is started in its own process group
and killed with SIGKILL (the command and its Prefect server) at a random moment between 5 % and
90 % of that command's clean run time (measured once, untimed, before the trials); then every
Parquet file under the state directory must read, candles must be unique per ``ts``, no order of
a candle may exist twice; the same command is re-run and must exit 0, after which no order may
be left NEW (stranded) and no temporary file of the store left. The table: trials per command,
kills that landed, corrupt files, duplicate candles / orders, stranded orders, re-runs OK, temp
files left.

Set-up (untimed): 120 days of hourly candles of 2 symbols, a quick training promoted by hand (so
``signals`` has a champion and places paper orders). Runs offline on the simulated market.

    uv run --frozen python bench/bench_crash.py [--trials 40] [--kills 40] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import random_candles, save

SYMBOLS = "BTCUSD,ETHUSD"
CANDLEFLOW = [sys.executable, "-m", "cli.main"]


def _env(home: Path) -> dict[str, str]:
    return os.environ | {
        "CANDLEFLOW_HOME": str(home),
        "CANDLEFLOW_UNIVERSE__HISTORY_DAYS": "120",
        "CANDLEFLOW_TRAINING__FAMILIES": '["logreg", "lightgbm"]',
        "CANDLEFLOW_TRAINING__FOLDS": "2",
        "PREFECT_HOME": str(home.parent / "prefect"),
        "DO_NOT_TRACK": "true",
    }


def _run(args: list[str], env: dict[str, str], check: bool = True) -> int:
    """Run one command to completion; its exit code."""
    done = subprocess.run(
        CANDLEFLOW + args, env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.returncode


def _killed(args: list[str], env: dict[str, str], after: float) -> bool:
    """Start ``args`` in its own process group; SIGKILL the group after ``after`` seconds.
    Whether it was still running (a kill that landed)."""
    process = subprocess.Popen(
        CANDLEFLOW + args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        process.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def _check(home: Path) -> dict[str, int]:
    """Unreadable Parquet files, duplicate candles, duplicate orders, temp files left."""
    corrupt = duplicates = 0
    for path in home.rglob("*.parquet"):
        try:
            frame = pl.read_parquet(path)
        except Exception:
            corrupt += 1
            continue
        if "candles" in path.parts and "ts" in frame.columns:
            duplicates += frame.height - frame["ts"].n_unique()
    orders = stranded = 0
    database = home / "live" / "live.db"
    if database.exists():
        import sqlite3

        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT symbol, timeframe, ts, status FROM orders").fetchall()
        placed = Counter((s, tf, ts) for s, tf, ts, status in rows if status != "REJECTED")
        orders = sum(n - 1 for n in placed.values() if n > 1)
        stranded = sum(1 for *_, status in rows if status == "NEW")
    temps = sum(1 for p in home.rglob("*.tmp") if p.is_file())
    return {
        "corrupt": corrupt,
        "duplicates": duplicates,
        "duplicate_orders": orders,
        "stranded_orders": stranded,
        "tmp": temps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--kills", type=int, default=0, help="go on until this many kills landed (≤ 2× trials)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="candleflow-crash-"))
    home, env = root / "home", _env(root / "home")
    file = root / "MYCOIN_1h.csv"
    random_candles(3000, seed=args.seed).write_csv(file)
    print(f"set-up in {root} …", flush=True)
    _run(["collect", "--symbols", SYMBOLS], env)
    _run(["dataset", "--symbols", SYMBOLS], env)
    _run(["train", "--symbols", "BTCUSD", "--trials", "1", "--no-promote"], env)
    _run(["models", "promote", "BTCUSD", "1h", "1", "--reason", "crash bench"], env)
    commands = {
        "collect": ["collect", "--symbols", SYMBOLS],
        "import": ["import", str(file), "--symbol", "MYCOIN", "--timeframe", "1h"],
        "dataset": ["dataset", "--symbols", SYMBOLS],
        "train": ["train", "--symbols", "ETHUSD", "--trials", "1", "--no-promote"],
        "signals": ["signals", "--symbols", SYMBOLS],
    }
    durations = {}
    for name, command in commands.items():  # a clean run of each: the kill window scales to it
        started = time.perf_counter()
        _run(command, env)
        durations[name] = time.perf_counter() - started
    print("clean run seconds:", {n: round(d, 1) for n, d in durations.items()}, flush=True)
    results: dict[str, Counter[str]] = {name: Counter() for name in commands}
    trial = landed_kills = 0
    while trial < args.trials or (landed_kills < args.kills and trial < 2 * args.trials):
        name = list(commands)[trial % len(commands)]
        trial += 1
        after = rng.uniform(0.05, 0.9) * durations[name]
        landed = _killed(commands[name], env, after=after)
        landed_kills += landed
        state = _check(home)
        rerun = _run(commands[name], env, check=False)
        checked = _check(home)
        r = results[name]
        r.update(trials=1, killed=int(landed), rerun_ok=int(rerun == 0))
        r.update(
            corrupt=state["corrupt"],
            duplicates=state["duplicates"] + checked["duplicates"],
            duplicate_orders=checked["duplicate_orders"],
            stranded_orders=checked["stranded_orders"],
            tmp_left=checked["tmp"],
        )
        print(
            f"trial {trial}: {name} at {after:.1f}s killed={landed} rerun={rerun} {checked}",
            flush=True,
        )
    keys = (
        "trials",
        "killed",
        "corrupt",
        "duplicates",
        "duplicate_orders",
        "stranded_orders",
        "rerun_ok",
        "tmp_left",
    )
    save("crash", [{"command": n, **{k: r[k] for k in keys}} for n, r in results.items()])
    if args.keep:
        print(f"state kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
