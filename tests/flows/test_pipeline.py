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
    assert set(doc) == {"collect", "dataset", "train", "signals", "seconds", "errors", "flow_run"}
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
    for symbol in ("BTCUSD", "ETHUSD"):
        _each_stage_is_a_completed_task_run(doc["flow_run"], symbol)

    table = CliRunner().invoke(app, ["run", "--symbols", "BTCUSD"])  # again: incremental
    assert table.exit_code == 0, table.stderr
    assert "candleflow run" in table.stdout and "Time:" in table.stderr


STAGES = ("store", "label", "features", "dataset", "train", "record", "promote", "signal")


def _each_stage_is_a_completed_task_run(flow_run: str, symbol: str) -> None:
    """What the Prefect UI shows, read back from its API: per symbol a task run for each stage
    (collect's store, label, features, dataset, train, record, promote, signal), completed, in
    the pipeline's order (labels and features both before the dataset that joins them)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        (parent,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run]))
        )
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            )
        )
        ids = [parent.id, *(c.id for c in children)]
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
        )
    by_name = {}  # each stage's first run (the signals stage collects again: a second store)
    for r in sorted(runs, key=lambda r: r.start_time or r.expected_start_time):
        by_name.setdefault(r.name, r)
    started = {}
    for stage in STAGES:
        run = by_name.get(f"{stage}-{symbol}-1h")
        assert run is not None, (stage, sorted(by_name))
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
        started[stage] = run.start_time
    order = [started[s] for s in STAGES]
    assert started["store"] < started["label"] and started["store"] < started["features"]
    assert max(started["label"], started["features"]) < started["dataset"]
    assert order[3:] == sorted(order[3:]), dict(zip(STAGES, order, strict=True))
