"""End to end: ``candleflow signals --json`` and ``POST /v1/predict`` on the same newest candle,
with a champion trained, registered and crowned through the CLI and loaded by the service from
the MLflow registry: the same decision (probability, action, weight, tier, multiplier, model)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SAME = (
    "symbol",
    "timeframe",
    "ts",
    "status",
    "action",
    "probability",
    "weight",
    "tier",
    "position_multiplier",
    "model_version",
    "champion_kind",
)


def test_predict_answers_what_signals_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.app import create_app
    from api.service import SignalService
    from core.config import load_settings

    for key, value in {
        "UNIVERSE__HISTORY_DAYS": "200",
        "TRAINING__FAMILIES": '["logreg", "lightgbm"]',
        "TRAINING__FOLDS": "3",
        "TRAINING__THRESHOLD": "0.05",  # every bar votes BUY
        "SIGNALS__AVOID_REGIME_BELOW": "0",
    }.items():
        monkeypatch.setenv(f"CANDLEFLOW_{key}", value)
    runner = CliRunner()
    for command in (
        ["collect", "--symbols", "BTCUSD"],
        ["dataset", "--symbols", "BTCUSD"],
        ["train", "--symbols", "BTCUSD", "--trials", "1", "--no-promote"],
        ["models", "promote", "BTCUSD", "1h", "1", "--reason", "test"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.stderr)
    result = runner.invoke(app, ["signals", "--symbols", "BTCUSD", "--json"])
    assert result.exit_code == 0, result.stderr
    (decided,) = [r for r in json.loads(result.stdout) if not r["shadow"]]
    assert decided["status"] == "OK" and decided["order_id"]

    service = SignalService(load_settings())
    answer = TestClient(create_app(service.settings, service)).post(
        "/v1/predict", json={"symbol": "BTCUSD", "timeframe": "1h"}
    )
    assert answer.status_code == 200, answer.text
    predicted = answer.json()
    assert {k: predicted[k] for k in SAME} == {k: decided[k] for k in SAME}
    assert predicted["champion_kind"] == "manual" and predicted["order_id"] is None
    assert set(predicted["families"]) == {"logreg", "lightgbm"}
    service.close()
