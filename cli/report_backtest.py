"""``candleflow report backtest``: each champion's out-of-sample record (equity against
buy-and-hold, drawdown, monthly returns, trades, the gate's numbers and decision) as one
self-contained HTML file, and the table across models on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import output
from cli.common import JsonOption, SymbolsOption, TimeframeOption, settings_of, units_of
from core.errors import CandleflowError

if TYPE_CHECKING:
    from core.config import Settings

COLUMNS = (
    "symbol",
    "timeframe",
    "version",
    "decision",
    "oos_sharpe",
    "bh_sharpe",
    "dsr",
    "pbo",
    "oos_days",
    "trades",
    "oos_auc",
    "total_return",
    "max_drawdown",
)


def backtest(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Report on this model version (one symbol; default: the champion)"
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write the report here (default: reports/backtest.html in the state directory)",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Each champion's out-of-sample backtest as one HTML file that opens offline: equity vs
    buy-and-hold, drawdown, monthly returns, trades, the gate's numbers and decision."""
    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    if version is not None and len(units) != 1:
        raise output.fail(
            f"--version names one model: give one symbol and timeframe, not {len(units)}"
        )
    untrained = _untrained(settings, units)
    if untrained:
        raise output.fail(untrained)
    from models.report import load_record, render
    from models.tracking import setup

    client = setup(settings.home, settings.mlflow.tracking_uri)
    records, missing = [], []
    for symbol, tf in units:
        try:
            records.append(load_record(client, symbol, tf, version))
        except CandleflowError as exc:
            missing.append(str(exc))
    if not records:
        raise output.fail("; ".join(missing))
    path = (html or settings.home / "reports" / "backtest.html").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(records, missing), encoding="utf-8")
    rows = [r.row() for r in records]
    if json_:
        output.print_json({"html": str(path), "models": rows, "not_reported": missing})
        return
    output.print_table("Out-of-sample backtests", [_shown(r) for r in rows], COLUMNS)
    for reason in missing:
        output.stderr.print(f"not reported: {reason}", highlight=False, soft_wrap=True)
    output.stderr.print(f"report: {path}", highlight=False, soft_wrap=True)


def _untrained(settings: Settings, units: list[tuple[str, str]]) -> str:
    """Without the state directory's registry database nothing was ever trained: said at once,
    without loading MLflow (which would create the database)."""
    if settings.mlflow.tracking_uri or (settings.home / "mlflow" / "mlflow.db").exists():
        return ""
    return "; ".join(
        f"{s} {tf}: no trained model: run `candleflow train --symbols {s}` first" for s, tf in units
    )


def _shown(row: dict) -> dict:
    """The row for the table: columns the table renderer has no kind for are formatted here."""
    from core.reports import COLUMNS
    from models.report import number

    known = [k for k, v in row.items() if k in COLUMNS or isinstance(v, str)]
    return {k: v if k in known else number(k, v) for k, v in row.items()}
