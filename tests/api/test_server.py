"""``candleflow api`` as a real uvicorn process on 127.0.0.1 (a free port), stopped by its PID:
health, a refused prediction through the real registry (no champion registered), a stored
TradingView alert, Prometheus metrics; and the refusal to listen elsewhere without keys."""

from __future__ import annotations

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


@pytest.fixture
def server(world: tuple, tmp_path: Path) -> Iterator[str]:
    """The API on the test store's home, its ledger and registry in ``tmp_path``."""
    home, _, _ = world
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEFLOW_", "PREFECT_"))}
    env |= {
        "CANDLEFLOW_HOME": str(home),
        "CANDLEFLOW_LIVE__DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
        "CANDLEFLOW_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CANDLEFLOW_API__WEBHOOK_SECRET": SECRET,
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
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
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)  # by its PID: uvicorn's graceful shutdown
        code = process.wait(timeout=30)
        log.close()
        assert code == 0, (tmp_path / "api.log").read_text()
        assert not alive(process.pid)


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
