"""Tasks of the live-signals stage: open the run (unsent orders of earlier runs sent again or
expired, paper account brought up to date or a venue reconciled, account snapshot, pending orders,
the registry's aliases), report the reconciliation, score each symbol, publish charts, notify."""

from __future__ import annotations

import base64
import functools
import logging
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.config import Settings
from core.errors import CandleflowError
from core.reports import SignalReport
from core.timeframes import parse_timeframe
from trading.live import LiveContext, run_symbol
from trading.notify import NotifyReport
from trading.runtime import LiveRuntime

logger = logging.getLogger(__name__)


@functools.cache
def live_runtime() -> LiveRuntime:
    """The process's live runtime: models stay loaded, the database engine open and candle files
    read between the runs of a long-lived process (``candleflow serve``)."""
    return LiveRuntime()


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def open_live_run(
    settings: Settings, symbols: list[str], timeframe: str, now: datetime | None = None
) -> LiveContext:
    """Recover unsent orders, bring the paper account up to the newest candles (fills, exits) or
    reconcile the venue's fills and positions, and snapshot the account; a symbol whose candles
    cannot be read is left to fail on its own row."""
    return live_runtime().open_run(settings, symbols, timeframe, now)


@task(cache_policy=NO_CACHE)
def publish_reconciliation(ctx: LiveContext) -> list[str]:
    """A venue's reconciliation in the run's log and report (a markdown artifact): fills
    recorded, orders still working or refused, positions closed there, and — as warnings —
    positions the ledger does not know (never adopted). The paper account has none."""
    r = ctx.reconciliation
    if r is None:
        return []
    log = get_run_logger()
    warnings = r.warnings()
    for line in warnings:
        log.warning(line)
    rows = [
        ("filled (fills recorded)", r.filled),
        ("still working at the venue", r.working),
        ("refused or cancelled by the venue (REJECTED)", r.rejected),
        ("SUBMITTED, unknown to the venue", r.missing),
        ("closed at the venue", r.closed),
        ("positions unknown to the ledger (not adopted)", r.unknown_positions),
        ("not reconciled (tried again next run)", r.failed),
    ]
    lines = [f"# Reconciliation with {r.broker}", "", "| what | orders / positions |", "|---|---|"]
    lines += [f"| {what} | {'; '.join(items) or '—'} |" for what, items in rows]
    create_markdown_artifact(
        key="live-reconciliation", markdown="\n".join(lines), description="Venue reconciliation"
    )
    return warnings


@task(cache_policy=NO_CACHE, task_run_name="signal-{symbol}-{timeframe}")
def score_symbol(ctx: LiveContext, symbol: str, timeframe: str) -> list[SignalReport]:
    """The champion's decision on the newest closed candle (and the challenger's, in shadow)."""
    rows = run_symbol(ctx, symbol, timeframe)
    log = get_run_logger()
    for r in rows:  # the decision and its reasons in the run's log (the Prefect UI shows them)
        who = "shadow v" if r.shadow else "v"
        reasons = "; ".join(r.reasons or []) or "-"
        log.info(
            "%s %s %s%s: %s %s p=%s order=%s (%s)",
            r.symbol,
            r.timeframe,
            who,
            r.model_version,
            r.status,
            r.action,
            "-" if r.probability is None else f"{r.probability:.3f}",
            r.order_id or "none",
            reasons,
        )
    return rows


@task(cache_policy=NO_CACHE)
def publish_charts(ctx: LiveContext, rows: list[SignalReport], last_n: int = 120) -> list[str]:
    """A PNG per scored symbol (last candles, the signal, SL and TP) and a markdown artifact.
    One symbol's chart failing does not cost the others: the task fails at the end, naming it."""
    paths, parts, failed = [], ["# Live signals", ""], []
    for r in rows:
        if r.shadow or r.status != "OK" or r.ts is None:
            continue
        try:
            path = _chart(ctx, r, last_n)
        except Exception as exc:
            logger.exception("chart of %s %s failed", r.symbol, r.timeframe)
            failed.append(f"{r.symbol} {r.timeframe}: {type(exc).__name__}: {exc}")
            continue
        paths.append(str(path))
        parts += [f"## {r.symbol} {r.timeframe} — {r.tier}", _inline(path), f"`{path}`", ""]
    if paths:
        create_markdown_artifact(
            key="live-signal-charts", markdown="\n".join(parts), description="Signal charts"
        )
    if failed:
        raise ChartError(f"{len(failed)} chart(s) failed: " + "; ".join(failed))
    return paths


class ChartError(CandleflowError):
    """Signal charts could not be drawn (the signals and orders are not affected)."""


def _chart(ctx: LiveContext, r: SignalReport, last_n: int) -> Path:
    """Draw the signal's chart; its path."""
    from trading.charts import signal_chart

    assert r.ts is not None  # only scored signals are drawn
    path = (
        ctx.settings.home / "live" / "charts" / r.timeframe / f"{r.symbol}_{r.ts:%Y%m%dT%H%M}.png"
    )
    end = r.ts + parse_timeframe(r.timeframe).duration  # up to the signal's candle
    signal_chart(
        ctx.store.read(r.symbol, r.timeframe, end=end).tail(last_n),
        symbol=r.symbol,
        timeframe=r.timeframe,
        signal_ts=r.ts,
        action=r.action,
        probability=r.probability,
        tier=r.tier,
        stop_loss=r.stop_loss,
        take_profit=r.take_profit,
        path=path,
        last_n=last_n,
    )
    return path


def _inline(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def notify_signals(settings: Settings, rows: list[SignalReport]) -> NotifyReport:
    """Post the signals to the configured webhook (off unless ``live.webhook_url`` is set)."""
    from trading.notify import notify  # looked up at call time: tests replace it

    return notify([r for r in rows if not r.shadow and r.status == "OK"], settings.live)
