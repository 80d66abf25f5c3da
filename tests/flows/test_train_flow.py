"""The training flow end to end on a small dataset: MLflow runs, a registered challenger that
scores features with its own spec, and `candleflow train --json`."""

from __future__ import annotations

import json

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
    collect_candles(symbols=["BTCUSD"])
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
    for key in ("cv_auc", "holdout_auc", "holdout_sharpe", "psr", "dsr", "trades"):
        assert key in row["metrics"], key
    assert 0.3 < row["metrics"]["holdout_auc"] < 0.8

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
        "evaluation/equity_holdout.png",
    } <= artifacts

    frame, meta = read_dataset(dataset_path(settings.home, "BTCUSD", "1h"))
    model = mlflow.pyfunc.load_model("models:/candleflow.BTCUSD.1h@challenger")
    scored = model.predict(frame.select(meta["feature_columns"]).tail(5).to_pandas())
    assert list(scored.columns) == ["proba_logreg", "proba_lightgbm", "proba", "signal"]
    assert scored["proba"].between(0, 1).all()
    assert pl.from_pandas(scored).height == 5
