"""``POST /v1/runs/{kind}``: the flow runs the command line hands to the service. Refused without
the state directory's token and for another identity; taken, it runs the same flow as the
command's own process and answers its report rows, which read back into the same reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runs import FlowRuns, RunRequest
from core.attach import TOKEN_HEADER, identity, read_token
from core.config import load_settings
from core.reports import CollectReport, SignalReport
from core.store import CandleStore


@pytest.fixture
def runs(service, tmp_path: Path) -> FlowRuns:
    return FlowRuns(service.settings, home=tmp_path)  # its token in tmp_path, not the shared home


@pytest.fixture
def run_client(service, runs: FlowRuns) -> Iterator[TestClient]:
    app = create_app(service.settings, service, runs=runs)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _body(settings, **extra) -> dict:
    return {"identity": identity(settings), "symbols": ["BTCUSD"], "timeframes": ["1h"]} | extra


def test_a_run_needs_the_state_directorys_token(run_client, runs: FlowRuns, tmp_path) -> None:
    assert read_token(tmp_path) == runs.token
    body = _body(runs.settings)
    assert run_client.post("/v1/runs/signals", json=body).status_code == 403
    wrong = {TOKEN_HEADER: "not-the-token"}
    refused = run_client.post("/v1/runs/signals", json=body, headers=wrong)
    assert refused.status_code == 403 and TOKEN_HEADER in refused.json()["detail"]


def test_a_run_of_other_settings_is_refused(run_client, runs: FlowRuns) -> None:
    other = runs.settings.model_copy(
        update={"risk": runs.settings.risk.model_copy(update={"max_leverage": 1.5})}
    )
    headers = {TOKEN_HEADER: runs.token}
    refused = run_client.post("/v1/runs/signals", json=_body(other), headers=headers)
    assert refused.status_code == 409
    assert "other settings or code" in refused.json()["detail"]
    unknown = run_client.post("/v1/runs/train", json=_body(runs.settings), headers=headers)
    assert unknown.status_code == 422  # only signals and collect are taken
    odd = run_client.post("/v1/runs/signals", json=_body(runs.settings, x=1), headers=headers)
    assert odd.status_code == 422


def test_no_run_route_unless_asked(client) -> None:
    assert client.post("/v1/runs/signals", json={}).status_code == 404


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_collect_then_signals_run_in_the_service(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "20")
    settings = load_settings(home=tmp_path / "home")
    runs = FlowRuns(settings)
    request = RunRequest(identity=identity(settings), symbols=["BTCUSD"], timeframes=["1h"])

    collected = runs.run("collect", request)
    assert collected.outcome == "ok"
    (row,) = [CollectReport.model_validate(r) for r in collected.rows]
    assert row.symbol == "BTCUSD" and row.error is None and row.new > 20 * 24 - 2
    assert CandleStore(settings.home).read("BTCUSD", "1h").height == row.rows

    scored = runs.run("signals", request)
    assert scored.outcome == "ok"  # no champion: NO_MODEL, which does not fail the run
    (signal,) = [SignalReport.model_validate(r) for r in scored.rows]
    assert signal.status == "NO_MODEL" and signal.order == "none: NO_MODEL"
