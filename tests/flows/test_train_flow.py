"""The training flow end to end on a small dataset: MLflow runs, a registered challenger that
scores features with its own spec, and `candleflow train --json`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from cli.main import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.build_dataset import build_datasets
    from flows.collect_candles import collect_candles

    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "200")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FAMILIES", '["logreg", "lightgbm"]')
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FOLDS", "3")
    # No edge and a fixed end date: the gate's verdict (refused) does not depend on the day.
    monkeypatch.setenv("CANDLEFLOW_SIMULATED__EDGE", "0")
    collect_candles(symbols=["BTCUSD"], end=datetime(2026, 11, 1, tzinfo=UTC))
    build_datasets(symbols=["BTCUSD"])


def test_cli_train_registers_a_challenger_that_scores_its_features(dataset: None) -> None:
    import mlflow
    import polars as pl

    from core.config import load_settings
    from features.dataset import dataset_path, read_dataset
    from models.tracking import setup

    result = CliRunner().invoke(
        app, ["train", "--symbols", "BTCUSD", "--trials", "3", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["model_name"] == "candleflow.BTCUSD.1h" and row["version"] == "1"
    assert row["trials"] == 6  # 3 per family, every one counted
    for key in ("cv_auc", "oos_auc", "oos_sharpe", "psr", "dsr", "trades"):
        assert key in row["metrics"], key
    assert 0.3 < row["metrics"]["oos_auc"] < 0.8
    # 200 days and 6 trials cannot show a DSR of 0.95: refused, with the numbers.
    assert row["promoted"] is False and row["promotion"]["reasons"][0].startswith("DSR")

    settings = load_settings()
    client = setup(settings.home)
    version = client.get_model_version_by_alias("candleflow.BTCUSD.1h", "challenger")
    assert str(version.version) == "1" and version.tags["trials"] == "6"
    runs = mlflow.search_runs(experiment_names=["candleflow/BTCUSD/1h"])
    assert len(runs) == 3  # the parent and one nested run per family
    artifacts = {a.path for a in client.list_artifacts(row["run_id"], "evaluation")}
    assert {
        "evaluation/feature_spec.json",
        "evaluation/folds.json",
        "evaluation/predictions.parquet",
        "evaluation/equity_oos.png",
    } <= artifacts

    stored = read_dataset(dataset_path(settings.home, "BTCUSD", "1h"))
    model = mlflow.pyfunc.load_model("models:/candleflow.BTCUSD.1h@challenger")
    scored = model.predict(stored.frame.select(stored.meta.feature_columns).tail(5).to_pandas())
    assert list(scored.columns) == ["proba_logreg", "proba_lightgbm", "proba", "signal"]
    assert scored["proba"].between(0, 1).all()
    assert pl.from_pandas(scored).height == 5


def test_cli_models_list_promote_and_rollback(dataset: None) -> None:
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--symbols", "BTCUSD", "--trials", "2", "--no-promote"])
    assert trained.exit_code == 0, trained.stderr
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert [(m["model"], [v["aliases"] for v in m["versions"]]) for m in listed] == [
        ("candleflow.BTCUSD.1h", [["challenger"]])
    ]
    assert listed[0]["versions"][0]["decision"] is None  # --no-promote: not reviewed yet

    reviewed = runner.invoke(app, ["promote", "--symbols", "BTCUSD", "--json"])
    assert reviewed.exit_code == 0, reviewed.stderr
    (decision,) = json.loads(reviewed.stdout)
    assert decision["promoted"] is False and decision["kind"] == "gate"

    rollback = runner.invoke(app, ["models", "rollback", "BTCUSD", "1h"])
    assert rollback.exit_code == 2 and "no 'previous' version" in rollback.stderr
    reason = ["--reason", "reviewed by hand"]
    manual = runner.invoke(app, ["models", "promote", "BTCUSD", "1h", "1", *reason, "--json"])
    assert manual.exit_code == 0, manual.stderr
    promoted = json.loads(manual.stdout)
    assert promoted["kind"] == "manual"
    assert promoted["reasons"][0] == "manual override (gate not applied): reviewed by hand"
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    version = listed[0]["versions"][0]
    assert version["aliases"] == ["champion"] and version["decision"] == "promoted"
    assert "manually" in listed[0]["last_decision"]
    again = json.loads(runner.invoke(app, ["promote", "--symbols", "BTCUSD", "--json"]).stdout)
    assert again[0]["kind"] == "no_challenger"
