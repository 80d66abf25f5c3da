"""The dataset flow end to end under Prefect, and `candleflow dataset` from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.errors import UnitsFailedError
from features.dataset import read_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def collected(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.collect_candles import collect_candles

    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "40")
    collect_candles(symbols=["ETHUSD", "BTCUSD", "EURUSD"])


def test_flow_builds_datasets_and_names_what_failed(collected: None, tmp_path: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.build_dataset import build_datasets

    state = build_datasets(symbols=["ETHUSD", "EURUSD", "XAUUSD"], return_state=True)
    assert state.is_failed()  # XAUUSD was never collected
    error = state.result(raise_on_failure=False)
    assert isinstance(error, UnitsFailedError)
    rows = {r.symbol: r for r in error.rows}
    assert "no candles in the store" in rows["XAUUSD"].error
    eth = rows["ETHUSD"]
    assert eth.error is None and eth.rows > 500 and eth.features > 60
    assert eth.skipped == []  # BTCUSD was collected: the correlated features were built
    stored = read_dataset(Path(eth.path))
    assert stored.frame.height == eth.rows and stored.meta.spec_hash == eth.spec_hash
    assert "xBTCUSD_ret_1" in stored.meta.feature_columns
    assert "dataset-report" in str(Artifact.get("dataset-report").key)


def test_cli_dataset_json(collected: None) -> None:
    result = CliRunner().invoke(
        app, ["dataset", "--symbols", "BTCUSD", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    for key in ("symbol", "timeframe", "rows", "features", "spec_hash", "label_counts", "path"):
        assert row[key] is not None, key
    # BTCUSD correlates with itself? Never: nothing to skip, nothing self-referential.
    assert row["skipped"] == [] and Path(row["path"]).is_file()
