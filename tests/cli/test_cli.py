"""The CLI as a user meets it: JSON alone on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_bad_config_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "zero")
    result = _invoke("collect", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "universe.history_days" in result.stderr and "'zero'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_symbol_fails_fast(tmp_path: Path) -> None:
    result = _invoke("collect", "--symbols", "EURUSD,NOPE", "--json")
    assert result.exit_code == 2
    assert "NOPE" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "candles").exists()  # nothing started


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_manual_promotion_without_a_reason_is_refused(tmp_path: Path, reason: str | None) -> None:
    args = ["models", "promote", "BTCUSD", "1h", "1"] + (
        [] if reason is None else ["--reason", reason]
    )
    result = _invoke(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "--reason TEXT" in result.stderr
    assert not (tmp_path / "home" / "mlflow").exists()  # refused before the registry is opened


def test_bad_start_date() -> None:
    result = _invoke("collect", "--start", "yesterday")
    assert result.exit_code == 2 and "--start" in result.stderr


def test_import_missing_file() -> None:
    result = _invoke("import", "nope.csv", "--symbol", "X", "--timeframe", "1h")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_import_broken_file_fails_before_prefect_starts(tmp_path: Path) -> None:
    csv = tmp_path / "broken.csv"
    csv.write_text("Date,Open,High,Low\n2024-01-02,1,2,0.5\n")
    result = _invoke("import", str(csv), "--symbol", "X", "--timeframe", "1d")
    assert result.exit_code == 2
    assert "no close column" in result.stderr.lower() or "close" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_with_the_wrong_timeframe_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "hourly.csv"
    rows = [f"2024-01-02 {h:02d}:00,1.1,1.2,1.0,1.15,10" for h in range(24)]
    csv.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    result = _invoke("import", str(csv), "--symbol", "X", "--timeframe", "1d")
    assert result.exit_code == 2
    assert "1h apart" in result.stderr and "give the timeframe 1h" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--symbol", "a;b", "--timeframe", "1h"], "invalid symbol"),
        (["--symbol", "X", "--timeframe", "2h"], "unknown timeframe"),
        (["--symbol", "X", "--timeframe", "1h", "--tz", "Mars/Base"], "IANA"),
    ],
)
def test_import_argument_errors_fail_fast(tmp_path: Path, args: list[str], fragment: str) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("Date,Open,High,Low,Close\n2024-01-02 00:00,1,2,0.5,1.5\n")
    result = _invoke("import", str(csv), *args)
    assert result.exit_code == 2 and fragment in result.stderr


def test_config_show_is_json(tmp_path: Path) -> None:
    result = _invoke("--home", str(tmp_path / "h"), "config", "show")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["home"] == str((tmp_path / "h").resolve())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
class TestWithPrefect:
    def test_collect_json_then_store_list(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "7")
        result = _invoke("collect", "--symbols", "ETHUSD,eur/usd", "--json")
        assert result.exit_code == 0, result.stderr
        rows = json.loads(result.stdout)  # stdout holds exactly one JSON document
        assert [r["symbol"] for r in rows] == ["ETHUSD", "EURUSD"]
        for key in (
            "symbol",
            "timeframe",
            "fetched",
            "new",
            "replaced",
            "quarantined",
            "gaps",
            "first_ts",
            "last_ts",
        ):
            assert key in rows[0]
        listing = json.loads(_invoke("store", "list", "--json").stdout)
        assert {(d["symbol"], d["rows"]) for d in listing} == {
            (r["symbol"], r["rows"]) for r in rows
        }

    def test_start_backfills_and_store_gaps_lists_weekends(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "3")
        result = _invoke("collect", "--symbols", "EURUSD", "--start", "2025-03-01", "--json")
        assert result.exit_code == 0, result.stderr
        row = json.loads(result.stdout)[0]
        assert row["first_ts"].startswith("2025-03-02T22:00")  # Sat 1 March: FX opens Sun 22:00
        gaps = json.loads(_invoke("store", "gaps", "EURUSD", "1h", "--json").stdout)
        assert len(gaps) == row["gaps"] >= 4
        assert all(g["missing"] == 48 for g in gaps)  # Fri 22:00 → Sun 22:00, nothing else

    def test_import_quarantines_bad_rows_and_reports_them(self, tmp_path: Path) -> None:
        csv = tmp_path / "mine.csv"
        csv.write_text(
            "Date,Open,High,Low,Close,Volume\n"
            "2024-01-02 00:00,1.10,1.11,1.09,1.105,100\n"
            "2024-01-02 01:00,1.105,1.10,1.10,1.106,100\n"  # high below open/close
            "2024-01-02 02:00,1.106,1.12,1.10,1.11,-4\n"  # negative volume
            "2024-01-02 03:00,1.11,1.12,1.10,1.115,90\n"
        )
        result = _invoke("import", str(csv), "--symbol", "my-pair", "--timeframe", "1h", "--json")
        assert result.exit_code == 0, result.stderr
        row = json.loads(result.stdout)
        assert (row["symbol"], row["new"], row["quarantined"]) == ("MYPAIR", 2, 2)
        quarantine = json.loads(_invoke("store", "quarantine", "MYPAIR", "1h", "--json").stdout)
        assert sorted(q["source_row"] for q in quarantine) == [2, 3]
        assert {q["reason"] for q in quarantine} == {"high below open/close", "negative volume"}
