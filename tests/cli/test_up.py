"""`candleflow up` starts a real Prefect server, the MLflow UI and `serve` on 127.0.0.1: the
deployments of prefect.yaml appear with their schedules, the registry's aliases in the MLflow UI;
Ctrl-C stops everything (no process left, schedules left as they were), and `candleflow down`
stops what a killed `up` left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deployments.servers import alive, group_alive

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CANDLEFLOW = str(Path(sys.executable).parent / "candleflow")
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEFLOW_", "PREFECT_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | {
        "CANDLEFLOW_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CANDLEFLOW_ORCHESTRATION__PREFECT_PORT": str(_free_port()),
        "CANDLEFLOW_ORCHESTRATION__MLFLOW_PORT": str(_free_port()),
        "CANDLEFLOW_API__PORT": str(_free_port()),
    }


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([CANDLEFLOW, "up"], env=env, stdout=out, stderr=out)


def _wait_until_served(env: dict[str, str], up: subprocess.Popen, log: Path) -> list[dict]:
    """The deployments, once `serve` has registered all of them."""
    api = f"http://127.0.0.1:{env['CANDLEFLOW_ORCHESTRATION__PREFECT_PORT']}/api"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert up.poll() is None, log.read_text()[-3000:]
        try:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()
            if isinstance(found, list) and len(found) == len(DEPLOYMENTS):
                return found
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("deployments not served in time:\n" + log.read_text()[-3000:])


def _children(home: Path) -> list[dict]:
    return json.loads((home / "run" / "up.json").read_text())["children"]


def _register_a_champion(home: Path) -> None:
    """A registered model with a champion alias, as training and promotion leave it."""
    from mlflow.tracking import MlflowClient

    (home / "mlflow").mkdir(parents=True)
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("candleflow.BTCUSD.1h")
    client.create_model_version("candleflow.BTCUSD.1h", source=str(home))
    client.set_registered_model_alias("candleflow.BTCUSD.1h", "champion", "1")


def test_up_serves_and_ctrl_c_stops_everything(env: dict[str, str], tmp_path: Path) -> None:
    home = Path(env["CANDLEFLOW_HOME"])
    _register_a_champion(home)
    log = tmp_path / "up.log"
    up = _start(env, log)
    try:
        deployments = _wait_until_served(env, up, log)
        children = _children(home)
        assert [c["name"] for c in children] == ["prefect server", "mlflow ui", "api", "serve"]
        api = f"http://127.0.0.1:{env['CANDLEFLOW_API__PORT']}"
        assert httpx.get(f"{api}/healthz", timeout=10).json()["status"] == "ok"
        refused = httpx.post(f"{api}/v1/predict", json={"symbol": "ETHUSD"}, timeout=30)
        assert refused.status_code == 404 and "no champion" in refused.text
        by_name = {d["name"]: d for d in deployments}
        for d in DEPLOYMENTS:
            served = by_name[d["name"]]
            assert not served["paused"]
            expected = [s.get("cron") or float(s["interval"]) for s in d.get("schedules") or []]
            got = [
                s["schedule"].get("cron") or s["schedule"].get("interval")
                for s in served["schedules"]
            ]
            assert got == expected and all(s["active"] for s in served["schedules"]), d["name"]
        mlflow = f"http://127.0.0.1:{env['CANDLEFLOW_ORCHESTRATION__MLFLOW_PORT']}"
        model = httpx.get(
            f"{mlflow}/api/2.0/mlflow/registered-models/get",
            params={"name": "candleflow.BTCUSD.1h"},
            timeout=10,
        ).json()["registered_model"]
        assert {"alias": "champion", "version": "1"} in model["aliases"]
        text = log.read_text()
        assert "http://127.0.0.1:" in text and "Up." in text and api in text
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        code = up.wait(timeout=90)
    assert code == 0, log.read_text()[-3000:]
    assert not any(group_alive(c["pid"]) for c in children), "a server outlived `up`"
    assert not (home / "run" / "up.json").exists()
    with sqlite3.connect(Path(env["PREFECT_HOME"]) / "prefect.db") as db:  # as they were
        paused = db.execute("select count(*) from deployment where paused").fetchone()[0]
        inactive = db.execute("select count(*) from deployment_schedule where not active")
        assert paused == 0 and inactive.fetchone()[0] == 0


def test_down_stops_what_a_killed_up_left(env: dict[str, str], tmp_path: Path) -> None:
    home = Path(env["CANDLEFLOW_HOME"])
    log = tmp_path / "up.log"
    up = _start(env, log)
    try:
        _wait_until_served(env, up, log)
        children = _children(home)
        again = subprocess.run([CANDLEFLOW, "up"], env=env, capture_output=True, text=True)
        assert again.returncode == 2 and "already up" in again.stderr
        up.kill()  # no chance to clean up: the servers run on
        up.wait(timeout=10)
        assert all(group_alive(c["pid"]) for c in children)
    finally:
        down = subprocess.run(
            [CANDLEFLOW, "down"], env=env, capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stderr
    said = " ".join(down.stderr.split())  # rich wraps the line at the console's width
    assert "Stopped: " in said and "prefect server" in said and "api (pid" in said
    assert not any(group_alive(c["pid"]) for c in children)
    assert not alive(up.pid) and not (home / "run" / "up.json").exists()
