"""The retrain-check flow: judges each model from the registry, the store and the live ledger, then
starts the retrain deployment for the models due (run_deployment), or retrains inline, or only
reports; a missing deployment is a clear failure, not a silent skip."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from core.config import load_settings
from core.errors import UnitsFailedError
from core.reports import RetrainReport
from models.tracking import setup

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

END = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SYMBOLS = ["BTCUSD", "ETHUSD"]


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Candles for both; BTCUSD's model saw data up to 40 days ago, ETHUSD's up to the end."""
    from core.store import CandleStore
    from flows.collect_candles import collect_candles

    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "120")
    monkeypatch.setenv("CANDLEFLOW_RETRAIN__COOLDOWN_HOURS", "0")
    monkeypatch.setenv("CANDLEFLOW_RETRAIN__MIN_NEW_SAMPLES", "500")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__TRIALS", "1")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FOLDS", "2")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FAMILIES", '["logreg", "lightgbm"]')
    collect_candles(symbols=SYMBOLS, end=END)
    settings = load_settings()
    client: MlflowClient = setup(settings.home, settings.mlflow.tracking_uri)
    store = CandleStore(settings.home)
    for symbol, back in (("BTCUSD", 960), ("ETHUSD", 30)):
        name = f"candleflow.{symbol}.1h"
        end = store.read(symbol, "1h")["ts"][-back]
        client.create_registered_model(name)
        client.create_model_version(
            name, source=str(settings.home), tags={"oos_end": end.isoformat()}
        )
        client.set_registered_model_alias(name, "champion", "1")


def _check(start: str) -> list[RetrainReport]:
    from flows.retrain_check import retrain_check

    state = retrain_check(symbols=SYMBOLS, start=start, return_state=True)
    result = state.result(raise_on_failure=False)
    return result.rows if isinstance(result, UnitsFailedError) else result


def test_report_then_deployment_then_inline(models: None) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    rows = {r.symbol: r for r in _check("none")}
    btc, eth = rows["BTCUSD"], rows["ETHUSD"]
    assert btc.retrain and btc.trigger == "new_samples" and btc.new_samples >= 900
    assert "not started" in btc.flow_run
    assert not eth.retrain and eth.trigger == "none" and eth.new_samples < 30
    assert "0 resolved live BUYs < 30" in eth.reasons[1]  # no live record yet

    missing = {r.symbol: r for r in _check("deployment")}  # nothing deployed yet
    assert "candleflow-run/retrain" in missing["BTCUSD"].error
    assert "is it deployed?" in missing["BTCUSD"].error and missing["ETHUSD"].error is None

    from flows.pipeline import run_pipeline

    deployment_id = run_pipeline.to_deployment(
        name="retrain", parameters={"signals": False}
    ).apply()
    started = {r.symbol: r for r in _check("deployment")}
    assert started["BTCUSD"].error is None and started["BTCUSD"].flow_run
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )
    (run,) = runs
    assert run.name == started["BTCUSD"].flow_run
    assert run.parameters["symbols"] == ["BTCUSD"] and run.parameters["timeframes"] == ["1h"]

    inline = {r.symbol: r for r in _check("inline")}  # the pipeline, here, without signals
    assert inline["BTCUSD"].error is None, inline["BTCUSD"]
    settings = load_settings()
    registry = setup(settings.home, settings.mlflow.tracking_uri)
    versions = registry.search_model_versions("name = 'candleflow.BTCUSD.1h'")
    assert len(versions) == 2  # a new training was registered
    after = {r.symbol: r for r in _check("none")}  # its data end is the newest now
    assert not after["BTCUSD"].retrain and after["BTCUSD"].newest == "2"


def test_cli_retrain_check_json(models: None) -> None:
    result = CliRunner().invoke(
        app, ["retrain-check", "--symbols", "BTCUSD,ETHUSD", "--start", "none", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    rows = {r["symbol"]: r for r in json.loads(result.stdout)}
    assert rows["BTCUSD"]["retrain"] is True and rows["ETHUSD"]["retrain"] is False
    bad = CliRunner().invoke(app, ["retrain-check", "--start", "later"])
    assert bad.exit_code == 2 and "use inline, deployment or none" in bad.stderr
