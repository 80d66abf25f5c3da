"""Wall time of everyday commands, today's code against a reference commit, in the same run.

Targets (issue 17, warm venv): ``--help`` ≤ 1 s; ``collect`` (incremental) ≤ 5 s; ``signals`` for
7 symbols ≤ 8 s; every user error (exit 2) ≤ 2 s.

The reference is checked out with ``git worktree`` into a temp directory and run with the same
interpreter (``python -m cli.main`` from its tree). Each command runs ``--repeats`` times per
variant, interleaved, and the median is reported:

* ``ref``: the reference commit (a temporary Prefect server per flow command);
* ``new``: this tree without ``candleflow up`` (a temporary server whose database lives in the
  state directory);
* ``new+up``: this tree while ``candleflow up --no-serve`` runs for the same state directory
  (commands attach to its Prefect server; ``signals`` and ``collect`` run their flow in its signal
  service, a warm process: ``core/attach.py``).

Set-up (untimed): the 7 default symbols, 120 days of hourly candles, a quick training of each
(2 families, 1 trial) made champion by hand, so that ``signals`` scores 7 champions. Offline, on
the simulated market; every server binds 127.0.0.1 and is stopped by its PID.

    uv run --frozen python bench/bench_cli.py [--ref c360639] [--repeats 3] [--only signals]

``--only`` measures the named commands alone (comma-separated labels) and writes ``cli-only``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = "BTCUSD,ETHUSD,SOLUSD,EURUSD,USDJPY,XAUUSD,US500"
TARGETS = {"--help": 1.0, "collect": 5.0, "signals": 8.0, "user error": 2.0}
COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "status": ["status"],
    "models list": ["models", "list"],
    "collect": ["collect"],
    "signals": ["signals"],
    "user error: unknown symbol": ["signals", "--symbols", "FOOBAR"],
    "user error: --start after --end": ["collect", "--start", "2026-02-01", "--end", "2026-01-01"],
    "user error: no dataset": ["train", "--symbols", "BTCUSD", "--timeframe", "4h"],
    "user error: nothing stored": ["store", "gaps", "FOO", "1h"],
}


def _env(home: Path, prefect_home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CANDLEFLOW_"))}
    env |= {
        "CANDLEFLOW_HOME": str(home),
        "CANDLEFLOW_UNIVERSE__SYMBOLS": SYMBOLS,
        "CANDLEFLOW_UNIVERSE__HISTORY_DAYS": "120",
        "CANDLEFLOW_TRAINING__FAMILIES": '["logreg", "lightgbm"]',
        "CANDLEFLOW_TRAINING__FOLDS": "2",
        "DO_NOT_TRACK": "true",
    }
    if prefect_home is not None:  # the reference's default is the global ~/.prefect: one place
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def _run(tree: Path, args: list[str], env: dict[str, str], check: bool = False) -> tuple:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=tree, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {tree}: {done.stderr[-2000:]}")
    return seconds, done.returncode, done.stderr


def _setup(tree: Path, env: dict[str, str]) -> None:
    _run(tree, ["collect"], env, check=True)
    _run(tree, ["dataset"], env, check=True)
    _run(tree, ["train", "--trials", "1", "--no-promote"], env, check=True)
    for symbol in SYMBOLS.split(","):
        _run(tree, ["models", "promote", symbol, "1h", "1", "--reason", "cli bench"], env, True)
    _run(tree, ["signals"], env, check=True)  # the first scoring writes the ledger


def _up(tree: Path, env: dict[str, str], home: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--no-serve"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    sys.path.insert(0, str(tree))
    from cli.prefect_env import up_server_url
    from core.attach import attached_service

    def service_healthy() -> bool:
        service = attached_service(home)
        try:
            return service is not None and httpx.get(f"{service.url}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    while time.monotonic() < deadline:  # its Prefect server and its signal service both up
        if up_server_url(home) and service_healthy():
            return process
        if process.poll() is not None:
            raise SystemExit("candleflow up exited while starting")
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit("candleflow up not healthy after 120 s")


def _selected(parser: argparse.ArgumentParser, only: str | None) -> dict[str, list[str]]:
    """The commands to measure: every one, or those ``--only`` names."""
    if not only:
        return COMMANDS
    labels = [label.strip() for label in only.split(",")]
    unknown = [label for label in labels if label not in COMMANDS]
    if unknown:
        parser.error(f"--only: unknown command(s) {unknown}; known: {list(COMMANDS)}")
    return {label: COMMANDS[label] for label in labels}


def _rows(
    commands: dict[str, list[str]],
    times: dict[tuple[str, str], list[float]],
    codes: dict[tuple[str, str], int],
    ran_here: set[str],
) -> list[dict[str, object]]:
    """One row a command: each variant's median seconds and exit code, the ratio, the target."""
    rows = []
    for label in commands:
        row: dict[str, object] = {"command": label}
        for variant in ("ref", "new", "new+up"):
            samples = times.get((label, variant), [])
            row[variant] = round(statistics.median(samples), 2) if samples else None
            row[f"exit {variant}"] = codes.get((label, variant))
        ref, fast = row["ref"], row["new+up"]
        row["ratio ref/new+up"] = round(ref / fast, 1) if ref and fast else None
        row["target s"] = TARGETS.get("user error" if label.startswith("user error") else label)
        if label in ("signals", "collect"):
            row["new+up in the service"] = label not in ran_here
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="c360639", help="the reference commit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help=f"comma-separated commands, of: {', '.join(COMMANDS)}")
    args = parser.parse_args()
    commands = _selected(parser, args.only)
    root = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    ref_tree = root / "ref"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", str(ref_tree), args.ref])
    variants = {
        "ref": (ref_tree, _env(root / "home-ref", root / "prefect-ref")),
        "new": (ROOT, _env(root / "home-new", None)),
    }
    up = None
    try:
        for name, (tree, env) in variants.items():
            print(f"set-up {name} …", flush=True)
            _setup(tree, env)
        times: dict[tuple[str, str], list[float]] = {}
        codes: dict[tuple[str, str], int] = {}

        ran_here: set[str] = set()  # new+up commands the signal service did not take

        def measure(variant: str, tree: Path, env: dict[str, str]) -> None:
            for label, command in commands.items():
                seconds, code, stderr = _run(tree, command, env)
                times.setdefault((label, variant), []).append(seconds)
                codes[(label, variant)] = code
                if variant == "new+up" and "running it here" in stderr:
                    ran_here.add(label)
                    print(f"{label}: not taken by the signal service: {stderr[-300:]}")

        for repeat in range(args.repeats):
            print(f"round {repeat + 1} …", flush=True)
            for name, (tree, env) in variants.items():
                measure(name, tree, env)
        tree, env = variants["new"]
        # The commands run with up's own settings (its ports too): the signal service takes a
        # run only for the settings and code it started with.
        env = env | {"CANDLEFLOW_ORCHESTRATION__PREFECT_PORT": "4281"}
        env |= {"CANDLEFLOW_ORCHESTRATION__MLFLOW_PORT": "5281"}
        up = _up(tree, env, root / "home-new")
        for _ in range(args.repeats):
            measure("new+up", tree, env)
        rows = _rows(commands, times, codes, ran_here)
        save("cli-only" if args.only else "cli", rows)
    finally:
        if up is not None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_tree)])
        shutil.rmtree(root, ignore_errors=True)  # both homes (candles, models, Prefect state)


if __name__ == "__main__":
    main()
