"""``candleflow api`` as a real uvicorn process on 127.0.0.1 (a free port), stopped by its PID:
health, a refused prediction through the real registry (no champion registered), a stored
TradingView alert, Prometheus metrics; and the refusal to listen elsewhere without keys."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cli.main import app
from core.processes import alive

from .conftest import SECRET

CANDLEFLOW = str(Path(sys.executable).parent / "candleflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``candleflow api`` on a free loopback port with ``env``: its URL and PID; stopped by its
    PID (uvicorn's graceful shutdown), which must end it cleanly."""
    port = _free_port()
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [CANDLEFLOW, "api", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the API did not answer: " + (tmp_path / "api.log").read_text())
        yield url, process.pid
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        code = process.wait(timeout=30)
        log.close()
        assert code == 0, (tmp_path / "api.log").read_text()
        assert not alive(process.pid)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEFLOW_", "PREFECT_"))}


@pytest.fixture
def server(world: tuple, tmp_path: Path) -> Iterator[str]:
    """The API on the test store's home, its ledger and registry in ``tmp_path``."""
    home, _, _ = world
    env = _clean_env() | {
        "CANDLEFLOW_HOME": str(home),
        "CANDLEFLOW_LIVE__DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
        "CANDLEFLOW_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CANDLEFLOW_API__WEBHOOK_SECRET": SECRET,
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    with _serving(env, tmp_path) as (url, _):
        yield url


def test_a_real_server_on_the_loopback(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        refused = http.post("/v1/predict", json={"symbol": "BTCUSD", "timeframe": "1h"})
        assert refused.status_code == 404 and "no champion" in refused.json()["detail"]
        assert http.post("/v1/predict", json={"symbol": "NOPEUSD"}).status_code == 404
        alert = {"ticker": "BTCUSD", "action": "buy", "time": datetime.now(UTC).isoformat()}
        stored = http.post("/v1/webhooks/tradingview", json=alert | {"passphrase": SECRET})
        assert stored.status_code == 200 and stored.json()["created"], stored.text
        metrics = list(text_string_to_metric_families(http.get("/metrics").text))
    decisions = {
        s.labels["status"]: s.value
        for f in metrics
        if f.name == "candleflow_decisions"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert decisions == {"NO_MODEL": 1.0}


def test_refuses_to_listen_elsewhere_without_keys() -> None:
    result = CliRunner().invoke(app, ["api", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without API keys" in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_collect_and_signals_hand_their_runs_to_up_s_service(tmp_path: Path) -> None:
    """With ``up``'s service running for the state directory, ``collect`` and ``signals`` run
    there (its PID named with -v) and print the flow's rows; a command with other settings runs
    in its own process, with the same row."""
    from prefect.settings import get_current_settings

    home = tmp_path / "home"
    env = _clean_env() | {
        "CANDLEFLOW_HOME": str(home),
        "CANDLEFLOW_UNIVERSE__SYMBOLS": "BTCUSD",
        "CANDLEFLOW_UNIVERSE__HISTORY_DAYS": "20",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": str(get_current_settings().api.url),  # the session's test server
    }

    def command(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = [CANDLEFLOW, "-v", *args, "--json"]
        return subprocess.run(argv, env=env | (extra or {}), capture_output=True, text=True)

    with _serving(env, tmp_path) as (url, pid):
        up = {"pid": os.getpid(), "children": [{"name": "api", "pid": pid, "url": url}]}
        (home / "run").mkdir(parents=True, exist_ok=True)
        (home / "run" / "up.json").write_text(json.dumps(up))

        collected = command("collect")
        assert collected.returncode == 0, collected.stderr
        assert f"ran in the signal service (pid {pid})" in collected.stderr
        (row,) = json.loads(collected.stdout)
        assert row["symbol"] == "BTCUSD" and row["new"] > 20 * 24 - 2 and row["error"] is None

        scored = command("signals")
        assert scored.returncode == 0, scored.stderr
        assert f"ran in the signal service (pid {pid})" in scored.stderr
        (signal_row,) = json.loads(scored.stdout)
        assert signal_row["status"] == "NO_MODEL" and signal_row["order"] == "none: NO_MODEL"

        other = command("signals", extra={"CANDLEFLOW_RISK__MAX_LEVERAGE": "1.5"})
        assert other.returncode == 0, other.stderr
        assert "did not take the run: the service runs with other settings" in other.stderr
        assert "ran in the signal service" not in other.stderr
        (local_row,) = json.loads(other.stdout)  # (an hour may close in between: not its ts)
        assert local_row | {"ts": None} == signal_row | {"ts": None}
