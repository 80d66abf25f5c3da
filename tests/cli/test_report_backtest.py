"""`candleflow report backtest`: one line and exit 2 (with the next step) when there is nothing to
report; otherwise the HTML file, the table across models and valid JSON."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from models.recording import record_training
from models.registry import Reviewer
from models.tracking import setup
from tests.models.conftest import Trained
from tests.models.conftest import trained as trained  # the session fixture, shared

runner = CliRunner()


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's INFO notices (a new database) stay off the terminal, as in a `candleflow`
    process (quiet by default: MLflow's own log handler is never configured there)."""
    monkeypatch.setattr(logging.getLogger("mlflow"), "level", logging.WARNING)


def _invoke(home: Path, *args: str):
    args = ["--home", str(home), "report", "backtest", *args]
    return runner.invoke(app, args, catch_exceptions=False)


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    return result.stderr


def test_from_nothing_trained_to_the_champion_s_report(
    trained: Trained,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    err = _one_line_exit_2(_invoke(home, "--symbols", "BTCUSD,ETHUSD"))
    assert "BTCUSD 1h: no trained model: run `candleflow train --symbols BTCUSD` first" in err
    assert "ETHUSD" in err
    assert "one model" in _one_line_exit_2(_invoke(home, "--version", "1"))
    assert not (home / "mlflow").exists()  # nothing trained: MLflow was not even opened

    record_training(trained.result, trained.cfg, trained.dataset, home)
    err = _one_line_exit_2(_invoke(home, "--symbols", "BTCUSD", "--version", "9"))
    assert "BTCUSD 1h: candleflow.BTCUSD.1h has no version 9" in err
    err = _one_line_exit_2(_invoke(home, "--symbols", "BTCUSD"))
    assert "BTCUSD 1h: no champion" in err and "--version 1" in err

    Reviewer(trained.settings, setup(home)).promote_manually("BTCUSD", "1h", "1", "cli test")
    out = tmp_path / "out" / "report.html"
    result = _invoke(home, "--symbols", "BTCUSD,ETHUSD", "--html", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["html"] == str(out.resolve())
    (row,) = document["models"]
    assert row["symbol"] == "BTCUSD" and row["version"] == "1" and row["decision"] == "promoted"
    assert row["trades"] == trained.result.metrics["oos_trades"]
    assert document["not_reported"][0].startswith("ETHUSD 1h: no trained model")
    page = out.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "<section id='BTCUSD-1h'>" in page and "ETHUSD 1h: no trained model" in page

    table = _invoke(home, "--symbols", "BTCUSD")  # the default path, a table on stdout
    assert table.exit_code == 0, table.stderr
    assert "BTCUSD" in table.stdout and "promoted" in table.stdout
    default = (home / "reports" / "backtest.html").resolve()
    assert default.exists() and f"report: {default}" in table.stderr
