"""Exact-point crashes (a real SIGKILL at a named point, in a child process), then the state is
checked and the work re-run: nothing torn, nothing lost, leftovers cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from core.store import CandleStore
from tests.features.test_features import market

ROOT = Path(__file__).resolve().parents[2]


def _killed_at(point: str, code: str, home: Path) -> None:
    """Run ``code`` in a child that SIGKILLs itself when ``point`` is reached."""
    script = f"import os, signal, sys\nsys.path.insert(0, {str(ROOT)!r})\n{point}\n{code}"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -9, (done.returncode, done.stderr[-2000:])


# The candle store's atomic write: the temp file is complete, the rename never happens.
AFTER_TEMP_WRITE = """
os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_after_the_temp_write_keeps_the_old_file_and_the_next_write_cleans_up(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    candles = market("EURUSD")
    store = CandleStore(home)
    store.upsert("EURUSD", "1h", candles.head(500))
    path = store.path("EURUSD", "1h")
    before = path.read_bytes()
    code = f"""
from core.store import CandleStore
from tests.features.test_features import market
CandleStore({str(home)!r}).upsert("EURUSD", "1h", market("EURUSD").head(800))
"""
    _killed_at(AFTER_TEMP_WRITE, code, home)
    assert path.read_bytes() == before  # the old version, whole
    left = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and pl.read_parquet(left[0]).height == 800  # the killed write's temp
    old = time.time() - 3600
    os.utime(left[0], (old, old))  # a temp of a write long dead
    report = CandleStore(home).upsert("EURUSD", "1h", candles.head(800))  # the re-run
    assert report.rows == 800 and report.new == 300
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert CandleStore(home).read("EURUSD", "1h")["ts"].is_unique().all()
