"""``candleflow signals``, ``candleflow positions`` and ``candleflow report shadow``: the live
stage from the command line (signals run the flow; the others read the ledger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    WideOption,
    loading_libraries,
    report_rows,
    run_flow,
    settings_of,
    units_of,
)
from core.errors import CandleflowError, UnknownSymbolError

if TYPE_CHECKING:
    from core.config import Settings

report_app = typer.Typer(help="Reports on live trading.", no_args_is_help=True)

POSITION_COLUMNS = (
    "symbol",
    "timeframe",
    "side",
    "quantity",
    "entry_ts",
    "entry_price",
    "last_price",
    "unrealized_pnl",
    "stop_loss",
    "take_profit",
    "timeout_at",
)


def signals(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: Annotated[
        str | None, typer.Option(help="Timeframe to score (default: the first configured)")
    ] = None,
    json_: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Score the newest closed candle per symbol with its champion; orders go to the paper
    account (once per candle and model version). The ``order`` column says whether one was
    placed, and if not why (the full reasons print below the table)."""
    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe or settings.universe.timeframes[0])
    tf = sorted({t for _, t in units})
    if len(tf) != 1:
        raise output.fail(f"signals scores one timeframe per run, got {', '.join(tf)}")
    _check_known(settings, units)
    from cli.attach import run_in_service
    from core.reports import SignalReport

    names = [s for s, _ in units]
    result = run_in_service(settings, "signals", SignalReport, names, tf)
    if result is None:  # no `up` service to run it: in this process
        with loading_libraries():  # Prefect loads only once the input is known good
            from flows.live_signals import live_signals

        with output.stderr.status(f"Scoring {len(units)} symbol(s)…"):
            result = run_flow(live_signals, symbols=names, timeframe=tf[0], settings=settings)
    report_rows(result, json_, f"Signals ({tf[0]})", after_table=_reasons, wide=wide)


def _check_known(settings: Settings, units: list[tuple[str, str]]) -> None:
    """Fail fast on a symbol with no stored candles that the configured broker cannot serve
    either (a typo, not a symbol to score). A broker that cannot be reached now is not the
    user's error: the flow's collect retries it."""
    from brokers import create_broker
    from core.store import CandleStore

    store = CandleStore(settings.home)
    unstored = [(s, t) for s, t in units if not store.path(s, t).exists()]
    if not unstored:
        return
    try:
        broker = create_broker(settings)
    except CandleflowError as exc:  # collect reports it; stored candles are scored meanwhile
        output.stderr.print(f"could not check the symbols now ({exc})")
        return
    for symbol, tf in unstored:
        try:
            broker.check_symbol(symbol)
        except UnknownSymbolError as exc:
            where = store.path(symbol, tf).parent
            raise output.fail(f"{symbol}: no {tf} candles in {where} and {exc}") from None
        except CandleflowError as exc:
            output.stderr.print(f"could not check {symbol} {tf} now ({exc}); collect will retry")
            return


def _reasons(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("reasons") and not r.get("shadow"):
            output.stderr.print(f"{r['symbol']} {r['status']}: " + "; ".join(r["reasons"]))


def _ledger(ctx: typer.Context):
    from brokers.paper import PaperBroker
    from trading.ledger import Ledger

    settings = settings_of(ctx)
    ledger = Ledger.from_settings(settings.live, settings.home)
    ledger.create_all()
    return settings, ledger, PaperBroker(ledger.engine, settings.paper, settings.costs)


def positions(ctx: typer.Context, json_: JsonOption = False, wide: WideOption = False) -> None:
    """The paper account: balance, equity, open positions."""
    _, _, broker = _ledger(ctx)
    state = broker.state()
    account = {
        "account": state.account,
        "currency": state.currency,
        "balance": state.balance,
        "equity": state.equity,
        "unrealized_pnl": state.unrealized_pnl,
        "realized_pnl": state.realized_pnl,
        "day_start_equity": state.day_start_equity,
        "peak_equity": state.peak_equity,
        "drawdown": state.drawdown,
        "pending_orders": state.pending_orders,
        "as_of": state.as_of,
    }
    rows = [
        {
            "symbol": p.symbol,
            "timeframe": p.timeframe,
            "side": p.side,
            "quantity": p.quantity,
            "entry_ts": p.entry_ts,
            "entry_price": p.entry_price,
            "last_price": p.last_price,
            "unrealized_pnl": p.unrealized_pnl,
            "stop_loss": p.stop_loss,
            "take_profit": p.take_profit,
            "timeout_at": p.timeout_at,
        }
        for p in state.positions
    ]
    if json_:
        output.print_json(account | {"positions": rows})
        return
    output.print_record(f"Paper account {state.account}", account)
    if rows:
        output.print_table("Open positions", rows, POSITION_COLUMNS, wide)
    else:
        output.stdout.print("No open positions.")


@report_app.command("shadow")
def report_shadow(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, help="Signals of the last N days")] = 30,
    json_: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Champion vs challenger (shadow): live hit rate of BUY signals whose outcome is known."""
    from core.store import CandleStore
    from trading.shadow import shadow_report

    settings, ledger, _ = _ledger(ctx)
    frame = ledger.signals(since=datetime.now(UTC) - timedelta(days=days))
    store = CandleStore(settings.home)
    keys = {(r["symbol"], r["timeframe"]) for r in frame.select("symbol", "timeframe").to_dicts()}
    report = shadow_report(frame, {k: store.read(*k) for k in keys}, settings.labels)
    rows = report.to_dicts()
    if json_:
        output.print_json(rows)
    else:
        title = "Live hit rate: champion vs shadow"
        output.print_table(title, rows, tuple(report.columns), wide)
