"""Test isolation: no test reads the user's environment or writes outside a temp directory, and no
test talks to the internet. Prefect runs against one session-scoped test harness."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="candleflow-tests-"))
# Removed when the interpreter exits (after the session harness has stopped its server).
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
# Before anything imports Prefect or MLflow.
os.environ.update(
    {
        "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DO_NOT_TRACK": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_TMP / 'mlflow.db'}",
    }
)
os.environ.pop("PREFECT_API_URL", None)

# Prefect binds its console log handler to sys.stderr on first import; importing it here, before
# any CliRunner swaps sys.stderr, keeps the handler on the real stream.
import prefect  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("CANDLEFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CANDLEFLOW_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_candles(
    start: datetime, n: int, step: timedelta = timedelta(hours=1), price: float = 1.1
) -> pl.DataFrame:
    """``n`` valid candles from ``start`` (a gentle deterministic zig-zag)."""
    rows = []
    for i in range(n):
        o = price + 0.001 * (i % 5)
        c = o + (0.0005 if i % 2 else -0.0005)
        rows.append(
            {
                "ts": start + i * step,
                "open": o,
                "high": max(o, c) + 0.0002,
                "low": min(o, c) - 0.0002,
                "close": c,
                "volume": 100.0 + i,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "ts": pl.Datetime("us", "UTC"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
    )


T0 = datetime(2024, 1, 2, tzinfo=UTC)  # a Tuesday
