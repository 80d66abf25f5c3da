"""`candleflow run` end to end on a tiny universe: every stage runs as a subflow, the JSON document
holds each stage's own rows and the time per stage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_candleflow_run_tiny_universe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "150")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FAMILIES", '["logreg", "lightgbm"]')
    monkeypatch.setenv("CANDLEFLOW_TRAINING__FOLDS", "2")
    monkeypatch.setenv("CANDLEFLOW_TRAINING__TRIALS", "1")
    result = CliRunner().invoke(app, ["run", "--symbols", "BTCUSD,ETHUSD", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"collect", "dataset", "train", "signals", "seconds", "errors"}
    assert doc["errors"] == {}
    for stage in ("collect", "dataset", "train"):
        assert sorted(r["symbol"] for r in doc[stage]) == ["BTCUSD", "ETHUSD"], stage
    assert all(r["version"] == "1" and isinstance(r["promoted"], bool) for r in doc["train"])
    main = [r for r in doc["signals"] if not r["shadow"]]
    assert sorted(r["symbol"] for r in main) == ["BTCUSD", "ETHUSD"]
    for r in main:  # a champion scores (OK) or, refused by the gate, there is none yet
        assert r["status"] == ("OK" if r["model_version"] else "NO_MODEL")
    assert set(doc["seconds"]) == {"collect", "dataset", "train", "signals", "total"}
    assert doc["seconds"]["total"] >= doc["seconds"]["train"] > 0

    table = CliRunner().invoke(app, ["run", "--symbols", "BTCUSD"])  # again: incremental
    assert table.exit_code == 0, table.stderr
    assert "candleflow run" in table.stdout and "Time:" in table.stderr
