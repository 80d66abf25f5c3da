"""The one table renderer: values rounded and worded by column kind, tables that fit 100
columns unless ``--wide``, ``--json`` of the same rows exact and valid."""

from __future__ import annotations

import ast
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from cli import output
from cli.common import report_rows
from cli.models import LIST_COLUMNS, LIST_DETAIL, list_rows
from core.formatting import COLUMNS, Kind, format_value, style_of
from core.reports import PromoteReport, SignalReport, TrainReport

TS = datetime(2025, 3, 7, 14, 0, tzinfo=UTC)


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the tables print, on a console far wider than 100 columns: a line longer than 100
    is the table's own width, not the terminal's."""
    text = io.StringIO()
    monkeypatch.setattr(output, "stdout", Console(file=text, width=240, color_system=None))
    return text


def _lines(text: io.StringIO) -> list[str]:
    return [line.rstrip() for line in text.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (0.123456, Kind.AUC, "0.123"),
        (1.23456, Kind.RATIO, "1.23"),
        (-0.455, Kind.RATIO, "-0.46"),
        (0.37212345, Kind.PROB, "0.372"),
        (87.0, Kind.INT, "87"),
        (12, Kind.INT, "12"),
        (math.nan, Kind.AUC, "-"),
        (math.inf, Kind.RATIO, "-"),
        (None, Kind.INT, "-"),
        (0.0823456, Kind.PERCENT, "8.2%"),
        (100000.0, Kind.MONEY, "100,000.00"),
        (0.0123456789, Kind.NUMBER, "0.01235"),
        (True, Kind.BOOL, "yes"),
        (False, Kind.BOOL, "no"),
        (-1, Kind.SIDE, "SELL"),
        (TS, Kind.TIME, "2025-03-07 14:00"),
        ("2025-03-07T14:00:00+00:00", Kind.TIME, "2025-03-07 14:00"),
        (["DSR 0.372 < 0.950", "PBO 0.60 > 0.50"], Kind.TEXT, "DSR 0.372 < 0.950; PBO 0.60 > 0.50"),
        ({"-1": 1841, "1": 912}, Kind.TEXT, "-1: 1841, 1: 912"),
        ({"warm-up": 200.0}, Kind.TEXT, "warm-up: 200"),
    ],
)
def test_values_are_rounded_and_worded_by_kind(value: object, kind: Kind, shown: str) -> None:
    assert format_value(value, kind) == shown


@pytest.mark.parametrize(
    ("symbol", "price", "shown"),
    [
        ("EURUSD", 1.0823456, "1.08235"),
        ("USDJPY", 151.234567, "151.235"),
        ("BTCUSD", 84123.46, "84123.5"),
    ],
)
def test_a_price_takes_its_instruments_precision(symbol: str, price: float, shown: str) -> None:
    assert format_value(price, Kind.PRICE, symbol) == shown


def test_decisions_and_sides_are_coloured() -> None:
    assert style_of("promoted", Kind.DECISION) == style_of("BUY", Kind.SIDE) == "green"
    assert style_of("refused", Kind.DECISION) == style_of(-1, Kind.SIDE) == "red"
    assert style_of("none: SPEC_MISMATCH", Kind.DECISION) == "red"
    assert style_of("kept champion", Kind.DECISION) is None
    assert style_of(0.9, Kind.PROB) is None


def _promotion(kind: str, promoted: bool, reasons: list[str]) -> PromoteReport:
    return PromoteReport(
        symbol="X", timeframe="1h", version="3", promoted=promoted, kind=kind, reasons=reasons
    )


def _metrics(auc: float, sharpe: float, dsr: float, trades: float) -> dict[str, float | None]:
    return {
        "cv_auc": 0.5612345678901234,
        "oos_auc": auc,
        "oos_logloss": 0.6823456789012345,
        "oos_sharpe": sharpe,
        "oos_days": 72.0,
        "psr": 0.9123456789,
        "dsr": dsr,
        "pbo": 0.1875,
        "trials_total": 12.0,
        "trades": trades,
        "win_rate": None,
        "profit_factor": 1.3456789,
        "max_drawdown": 0.0823456,
        "exposure": 0.3123456,
        "bh_sharpe": -12.4512345,
        "cv_sharpe": 1.1234567,
    }


def _train_rows() -> list[TrainReport]:
    cases = [
        ("BTCUSD", "3", _metrics(0.5823456789012345, 2.3456789, 0.97123, 87.0), "gate", True),
        ("EURUSD", "12", _metrics(0.5123456789012345, -0.4567890, 0.37212, 1041.0), "gate", False),
        (
            "ETHUSD",
            "5",
            _metrics(0.6012345678901234, 3.1234567, 0.99345, 112.0),
            "already_champion",
            True,
        ),
    ]
    return [
        TrainReport(
            symbol=symbol,
            timeframe="1h",
            model_name=f"candleflow.{symbol}.1h",
            version=version,
            run_id="a" * 32,
            experiment=f"candleflow/{symbol}/1h",
            reused=False,
            metrics=metrics,
            families={"lightgbm": {"oos_roc_auc": 0.58}},
            trials=4,
            promotion=_promotion(kind, promoted, ["DSR 0.372 < 0.950"]),
        )
        for symbol, version, metrics, kind, promoted in cases
    ]


def test_the_train_table_fits_100_columns_unless_wide(screen: io.StringIO) -> None:
    report_rows(_train_rows(), False, "Models")
    lines = _lines(screen)
    assert max(map(len, lines)) <= 100
    assert len(lines) == 3 + 3  # title, header, rule, one line per row: no cell wrapped
    body = "\n".join(lines)
    assert "0.582" in body and "2.35" in body and " 87 " in body and "1041" in body
    assert "87.0" not in body and "0.5823456" not in body and "True" not in body
    assert "kept champion" in body and "refused" in body
    assert "logloss" not in body and "candleflow.BTCUSD.1h" not in body

    screen.truncate(0)
    screen.seek(0)
    report_rows(_train_rows(), False, "Models", wide=True)
    wide = _lines(screen)
    assert max(map(len, wide)) > 100 and len(wide) == 6  # wider, still one line per row
    assert "logloss" in wide[1] and "candleflow.BTCUSD.1h" in "\n".join(wide)


def test_json_of_the_same_rows_stays_exact(capsys: pytest.CaptureFixture[str]) -> None:
    report_rows(_train_rows(), True, "Models")
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["metrics"]["oos_auc"] == 0.5823456789012345
    assert rows[0]["metrics"]["trades"] == 87.0 and rows[0]["promoted"] is True
    assert rows[2]["decision"] == "kept champion"


def test_json_has_null_where_a_number_is_undefined(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_json([{"role": "shadow", "hit_rate": math.nan, "wins": 0}])
    text = capsys.readouterr().out
    assert "NaN" not in text and json.loads(text) == [
        {"role": "shadow", "hit_rate": None, "wins": 0}
    ]


def _models() -> list[dict[str, object]]:
    reasons = (
        "DSR 0.372 < 0.950 (deflated over 12 trials); net Sharpe 0.46 < 0.50; "
        "challenger's Sharpe not above the champion's (P = 0.61 < 0.90 over 72 days)"
    )
    versions = [
        {
            "version": str(v),
            "aliases": aliases,
            "decision": decision,
            "reasons": reasons,
            "oos_auc": 0.5823456789012345,
            "oos_sharpe": -12.3456789,
            "dsr": 0.37212345,
            "trades": 1087.0,
            "trials": 4.0,
        }
        for v, aliases, decision in [
            (1, ["previous"], "rolled back"),
            (2, ["champion"], "promoted"),
            (13, ["challenger"], "rejected"),
        ]
    ]
    return [
        {"model": f"candleflow.{s}.1h", "symbol": s, "timeframe": "1h", "versions": versions}
        for s in ("BTCUSD", "EURUSD", "XAUUSD")
    ]


def test_models_list_fits_100_columns_unless_wide(screen: io.StringIO) -> None:
    output.print_table("Registered models", list_rows(_models()), LIST_COLUMNS, False, LIST_DETAIL)
    lines = _lines(screen)
    assert max(map(len, lines)) <= 100 and len(lines) == 3 + 9
    body = "\n".join(lines)
    assert "-12.35" in body and "1087" in body and "1087.0" not in body
    assert "rolled back" in body and "…" in body  # the long reasons are cut, not wrapped
    assert "candleflow.BTCUSD.1h" not in body and "['" not in body

    screen.truncate(0)
    screen.seek(0)
    output.print_table("Registered models", list_rows(_models()), LIST_COLUMNS, True, LIST_DETAIL)
    wide = "\n".join(_lines(screen))
    assert "candleflow.BTCUSD.1h" in wide and "over 72 days" in wide


def _signal(**fields: object) -> SignalReport:
    base: dict[str, object] = {"symbol": "BTCUSD", "timeframe": "1h", "ts": TS, "status": "OK"}
    return SignalReport(**(base | fields))


ORDERED = {"action": "BUY", "tier": "BUY", "position_multiplier": 0.75, "model_version": "3"}


@pytest.mark.parametrize(
    ("fields", "order"),
    [
        (ORDERED | {"order_id": "abc", "quantity": 0.01}, "placed"),
        (ORDERED | {"order_id": "abc", "dry_run": True}, "dry-run"),
        (ORDERED | {"model_version": "4", "shadow": True}, "none: shadow"),
        (
            ORDERED | {"tier": "AVOID", "position_multiplier": 0.0, "reasons": ["regime"]},
            "none: AVOID",
        ),
        ({"status": "STALE", "model_version": "3", "reasons": ["5 h old"]}, "none: STALE"),
        ({"status": "NO_MODEL", "reasons": ["no champion"]}, "none: NO_MODEL"),
        (ORDERED | {"reasons": ["daily loss limit reached"]}, "none: daily loss limit reached"),
    ],
)
def test_the_order_column_says_whether_an_order_went_out(
    fields: dict[str, object], order: str
) -> None:
    assert _signal(**fields).order == order


def test_signals_table_shows_the_order_and_no_duplicate_looking_rows(screen: io.StringIO) -> None:
    rows = [
        _signal(
            **ORDERED | {"order_id": "0f3c2a9e7b5d4c1a8e6f2b3c4d5e6f7a", "probability": 0.6234}
        ),
        _signal(**ORDERED | {"model_version": "4", "shadow": True, "probability": 0.6012345}),
        _signal(**ORDERED | {"champion_kind": "manual", "symbol": "EURUSD", "tier": "AVOID"}),
        _signal(symbol="XAUUSD", status="SPEC_MISMATCH", model_version="2", reasons=["spec"]),
    ]
    report_rows(rows, False, "Signals (1h)")
    lines = _lines(screen)
    assert max(map(len, lines)) <= 100 and len(lines) == 3 + 4
    champion, shadow, manual, mismatch = lines[3:]
    assert "0.623" in champion and "v3" in champion and champion.endswith("placed")
    assert "v4 shadow" in shadow and shadow.endswith("none: shadow")
    assert "v3 manual" in manual and manual.endswith("none: AVOID")
    assert mismatch.endswith("none: SPEC_MISMATCH")
    assert "0f3c2a9e" not in "\n".join(lines)  # the order id is wide detail


def test_a_champion_is_never_promoted_false() -> None:
    assert _promotion("already_champion", True, []).decision == "kept champion"
    assert _promotion("no_challenger", False, ["no challenger"]).decision == "no challenger"
    assert _promotion("gate", False, ["DSR"]).decision == "refused"
    assert _promotion("manual", True, []).decision == "promoted manually"
    assert _train_rows()[2].table_row()["decision"] == "kept champion"


def test_prefect_artifacts_use_the_same_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import _fanout

    published: dict[str, object] = {}
    monkeypatch.setattr(_fanout, "create_table_artifact", lambda **kw: published.update(kw))
    _fanout.publish_table("training-report", _train_rows(), "Training")
    first = published["table"][0]  # type: ignore[index]
    assert (first["oos_auc"], first["oos_sharpe"], first["trades"]) == ("0.582", "2.35", "87")
    assert first["win_rate"] == "-" and first["decision"] == "promoted"
    assert first["max_drawdown"] == "8.2%" and first["reused"] == "no"


def _dict_literal(path: Path, name: str) -> dict[str, str]:
    """A module-level dict literal, read without importing its module (MLflow loads slowly)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in {path}")


def test_every_numeric_report_column_has_a_numeric_kind() -> None:
    from core import reports

    models = Path(reports.__file__).parents[1] / "models"
    summary = _dict_literal(models / "recording.py", "SUMMARY_METRICS")
    listed = _dict_literal(models / "registry.py", "LIST_METRICS")
    assert set(reports.TRAIN_METRICS) == set(summary)  # the train table shows every metric
    numeric = set(summary) | set(listed.values())
    for model in vars(reports).values():
        if isinstance(model, type) and issubclass(model, reports.UnitReport):
            numeric |= {
                name
                for name, field in model.model_fields.items()
                if field.annotation in (float | None, int | None)
            }
    undeclared = sorted(
        n for n in numeric if COLUMNS.get(n) is None or COLUMNS[n].kind is Kind.TEXT
    )
    assert undeclared == []


def test_every_report_reads_back_from_its_fields_json() -> None:
    """What the signal service answers a command (``fields_json``) is the same report again on the
    command's side, for every report type, computed columns included."""
    from core import reports

    signal = SignalReport(symbol="BTCUSD", timeframe="1h", status="OK", tier="BUY", order_id="x")
    assert SignalReport.model_validate(json.loads(json.dumps(signal.fields_json()))) == signal
    assert "order" not in signal.fields_json()
    for model in vars(reports).values():
        if isinstance(model, type) and issubclass(model, reports.UnitReport):
            failed = model.failed("EURUSD", "1h", "broker down")
            again = model.model_validate(json.loads(json.dumps(failed.fields_json())))
            assert again.row() == failed.row(), model.__name__
