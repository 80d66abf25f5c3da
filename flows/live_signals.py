"""Stage 6: live signals. For one timeframe: collect the newest candles (the collect flow's
tasks, in this flow), bring the paper account up to date (or reconcile a venue's fills and
positions with the ledger, reporting positions it does not know), then per symbol (fanned out,
each isolated) the champion scores the newest closed candle with its own feature spec, the vote,
signal weight and risk layer decide, and an approved order goes to the execution broker exactly
once (a venue: dry run until ``live.dry_run = false``). Artifacts: a signals table, a chart per
symbol and, for a venue, its reconciliation."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from core.collect import collection_units
from core.config import Settings, load_settings
from core.errors import UnitsFailedError
from core.reports import SignalReport
from features.build import correlated_symbols
from flows._fanout import first_error, publish_table, raise_if_failed
from flows.collect_candles import collect_candles
from tasks.live import (
    notify_signals,
    open_live_run,
    publish_charts,
    publish_reconciliation,
    score_symbol,
)


@flow(name="live-signals", task_runner=ThreadPoolTaskRunner(max_workers=2))
def live_signals(
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    collect: bool = True,
    charts: bool = True,
    now: datetime | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[SignalReport]:
    """Score the newest closed candle of every symbol (default: the universe) for ``timeframe``
    (default: the first configured one). ``now``: score as of this time (tests, replays).
    ``settings``: the configuration already resolved by the caller (else loaded from ``config``
    / ``home``)."""
    settings = settings or load_settings(config, home)
    timeframe = timeframe or settings.universe.timeframes[0]
    units = collection_units(settings, symbols, [timeframe])
    names = [s for s, _ in units]
    if collect:
        _collect(names + correlated_for(settings, names), timeframe, now, settings)
    ctx = open_live_run(settings, names, timeframe, now)
    publish_reconciliation(ctx)
    futures = [(s, score_symbol.submit(ctx, s, timeframe)) for s in names]
    rows: list[SignalReport] = []
    for symbol, future in futures:  # a symbol's rows: its champion's and any shadow's
        error = first_error(future)
        if error:
            rows.append(
                SignalReport(symbol=symbol, timeframe=timeframe, status="ERROR", error=error)
            )
        else:
            rows += [r.model_copy(update={"error": _refused(r)}) for r in future.result()]
    publish_table("live-signals", rows, f"Signals for the newest {timeframe} candles")
    if charts:  # a failed chart shows as a failed task; it never holds back the notification
        drawn = publish_charts(ctx, rows, return_state=True)
        if drawn.is_failed():
            get_run_logger().warning("charts: %s", drawn.message)
    notify_signals(settings, rows)
    return raise_if_failed(rows)


def _collect(symbols: list[str], timeframe: str, now: datetime | None, settings: Settings) -> None:
    """The collect flow's tasks, run in this flow (a subflow costs ~1 s of its own). A failed
    fetch is not fatal: the symbol's last candle will be judged STALE (the failure shows in the
    collect report and the failed task)."""
    try:
        collect_candles.fn(symbols=symbols, timeframes=[timeframe], end=now, settings=settings)
    except UnitsFailedError as exc:
        get_run_logger().warning("collect: %s", exc)


def _refused(row: SignalReport) -> str | None:
    """ERROR and SPEC_MISMATCH fail the run (someone must look); STALE and NO_MODEL do not (a
    closed market, a symbol not yet promoted)."""
    if row.status in ("ERROR", "SPEC_MISMATCH"):
        return f"{row.status}: " + "; ".join(row.reasons or [])
    return None


def correlated_for(settings: Settings, symbols: list[str]) -> list[str]:
    """The correlated symbols the feature spec joins, not already in ``symbols``."""
    extra = {c for s in symbols for c in correlated_symbols(s, settings.features.correlated)}
    return sorted(extra - set(symbols))


if __name__ == "__main__":
    live_signals()
