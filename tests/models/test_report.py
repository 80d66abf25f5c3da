"""The backtest report and the MLflow record of a training: the report is built from the
evaluation the gate reads (same numbers, same daily record), is one HTML file with nothing to
fetch, and the training run is named, described and dated as a person reading MLflow needs."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from models.evidence import evidence, oos_daily
from models.recording import TrainingRun, record_training
from models.registry import Reviewer, get_version
from models.report import (
    REPORT_ARTIFACT,
    BacktestRecord,
    ReportError,
    load_record,
    record_of,
    render,
)
from models.tracking import EXPERIMENT_KIND, NOTE_TAG, describe_run, ensure_experiment, setup
from tests.models.conftest import Trained

NAME = "candleflow.BTCUSD.1h"


class Recorded(NamedTuple):
    trained: Trained
    client: MlflowClient
    run: TrainingRun
    home: Path


@pytest.fixture(scope="module")
def recorded(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The tiny training recorded in a home of its own (version 1, not reviewed yet)."""
    home = tmp_path_factory.mktemp("report-home")
    run = record_training(trained.result, trained.cfg, trained.dataset, home)
    return Recorded(trained, setup(home), run, home)


def script_sources(page: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", page, flags=re.IGNORECASE)


def test_the_training_run_holds_a_self_contained_report(recorded: Recorded) -> None:
    client, run = recorded.client, recorded.run
    assert run.report.endswith(REPORT_ARTIFACT)
    page = Path(
        client.download_artifacts(run.run_id, REPORT_ARTIFACT, str(recorded.home))
    ).read_text()
    assert script_sources(page) == []  # nothing fetched: plotly.js is inlined
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # the library itself is there
    assert "BTCUSD 1h v1" in page and "Decision: not reviewed yet" in page
    for div in ("equity-0", "monthly-0"):
        assert f'id="{div}"' in page
    trades = int(recorded.trained.result.metrics["oos_trades"])
    assert f"<h3>Trades ({trades})</h3>" in page


def test_the_report_reads_what_the_gate_read(recorded: Recorded) -> None:
    client, result = recorded.client, recorded.trained.result
    with pytest.raises(ReportError, match=r"no champion .*v1.*--version 1"):
        load_record(client, "BTCUSD", "1h")  # not reviewed, not champion
    record = load_record(client, "BTCUSD", "1h", "1")
    mv = get_version(client, NAME, "1")
    # The very numbers and daily record the gate judges (models.evidence), not a recomputation.
    assert record.metrics == evidence(client, mv)
    assert record.daily["ret"].to_list() == oos_daily(client, mv)["ret"].to_list()
    assert record.daily["day"].to_list() == result.oos_backtest.daily["day"].to_list()
    m = record.metrics
    assert math.isclose(np.prod(1 + record.daily["ret"].to_numpy()) - 1, m["oos_total_return"])
    bh = np.prod(1 + record.daily["bh_ret"].to_numpy()) - 1
    assert math.isclose(bh, m["oos_bh_total_return"], rel_tol=1e-9, abs_tol=1e-12)
    assert record.trades is not None and record.trades.height == m["oos_trades"]
    assert record.trades["ret"].to_list() == result.oos_backtest.trades["ret"].to_list()
    assert record.verdict is None and record.row()["decision"] == "not reviewed"


def test_run_name_description_duration_and_experiment_kind(recorded: Recorded) -> None:
    client, run, trained = recorded.client, recorded.run, recorded.trained
    info = client.get_run(run.run_id)
    assert re.fullmatch(r"BTCUSD 1h v1 \d{4}-\d{2}-\d{2}", info.info.run_name)
    experiment = client.get_experiment(info.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    # The run starts when the training did: it lasts at least the training's measured stages.
    measured_ms = 1000 * sum(trained.result.seconds.values())
    assert info.info.end_time - info.info.start_time >= measured_ms - 1
    before = info.data.tags[NOTE_TAG]
    assert before.startswith("**Not reviewed yet") and "DSR" in before

    decision = Reviewer(trained.settings, client).review("BTCUSD", "1h")
    assert not decision.promoted  # a tiny sample: refused
    note = client.get_run(run.run_id).data.tags[NOTE_TAG]
    assert note.startswith("**BTCUSD 1h v1 not promoted**")
    assert "\n- ✘ DSR" in note
    assert note.endswith(before.split("---\n\n", 1)[1])  # the training's summary stays below
    Reviewer(trained.settings, client).promote_manually("BTCUSD", "1h", "1", "report test")
    note = client.get_run(run.run_id).data.tags[NOTE_TAG]
    assert note.startswith("**BTCUSD 1h v1 promoted manually**") and note.count("---") == 1

    champion = load_record(client, "BTCUSD", "1h")  # the champion now
    assert champion.version == "1" and champion.verdict is not None
    assert champion.verdict.decision == "promoted" and champion.verdict.kind == "manual"
    assert "champion" in champion.aliases


def test_every_model_has_its_section_and_reasons_are_escaped(recorded: Recorded) -> None:
    record = load_record(recorded.client, "BTCUSD", "1h", "1")
    other = dataclasses.replace(record, symbol="ETHUSD", version="3")
    page = render([record, other], missing=["SOLUSD 1h: no trained model: run <train> first"])
    assert script_sources(page) == []
    for symbol in ("BTCUSD", "ETHUSD"):
        assert f"<section id='{symbol}-1h'>" in page
    assert 'id="overlay"' in page  # the models' equity side by side
    assert "Across models" in page and "ETHUSD 1h v3" in page
    assert "run &lt;train&gt; first" in page and "<train>" not in page


def test_a_record_from_before_reports_renders_what_it_has() -> None:
    """An evaluation recorded before buy-and-hold and trades were kept: no crash, said so."""
    evaluation = {
        "ensemble": {"oos_sharpe_annual": 1.5, "oos_dsr": float("nan"), "oos_trades": 3.0},
        "oos_daily": {"day": ["2025-01-01", "2025-01-02", "2025-02-01"], "ret": [0.01, -0.02, 0]},
    }
    mv = SimpleNamespace(name=NAME, version="2", run_id="r", tags={}, aliases=[])
    record = record_of(evaluation, mv, symbol="BTCUSD", timeframe="1h")
    assert isinstance(record, BacktestRecord) and record.metrics["oos_dsr"] is None
    page = render([record])
    assert "recorded before trade lists" in page and "buy and hold" not in page
    assert "<td>1.50</td>" in page  # Sharpe to 2 d.p.


def test_no_training_names_the_next_step(recorded: Recorded) -> None:
    with pytest.raises(ReportError, match=r"run `candleflow train --symbols EURUSD` first"):
        load_record(recorded.client, "EURUSD", "1h")


def test_an_existing_experiment_gets_the_training_kind(recorded: Recorded) -> None:
    client, home = recorded.client, recorded.home
    location = (home / "mlflow" / "artifacts" / "candleflow_X_1h").as_uri()
    created = client.create_experiment("candleflow/X/1h", artifact_location=location)
    assert EXPERIMENT_KIND[0] not in client.get_experiment(created).tags
    assert ensure_experiment(client, "candleflow/X/1h", home) == created
    assert client.get_experiment(created).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    run = client.create_run(created).info.run_id
    describe_run(client, run, "**decided**")
    assert client.get_run(run).data.tags[NOTE_TAG].startswith("**decided**")
    client.delete_run(run)
    describe_run(client, run, "**again**")  # a deleted run is left as it is
    assert client.get_run(run).data.tags[NOTE_TAG].startswith("**decided**")
