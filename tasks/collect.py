"""Tasks of the collect stage: plan the window, fetch from the broker (retried on transient
errors only), validate + store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from brokers.base import BaseBroker, is_transient
from brokers.files import read_candle_file
from core.candles import empty_candles
from core.collect import FetchWindow, drop_forming, fetch_window
from core.provenance import ImportPolicy
from core.reports import CollectReport
from core.store import CandleStore
from core.timeframes import parse_timeframe
from core.validation import Plausibility, check_spacing


def retry_on_transient(task: Task[..., object], task_run: TaskRun, state: State) -> bool:
    """Retry a broker call only when it failed for a reason worth retrying."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return is_transient(exc)
    return False


# Broker calls: retried with backoff on transient failures only (the flow sets the counts from
# the config); validation errors and unknown symbols fail at once.
BROKER_CALL = {
    "cache_policy": NO_CACHE,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}


@task(**BROKER_CALL, task_run_name="plan-{symbol}-{timeframe}")
def plan_fetch(
    broker: BaseBroker,
    home: Path,
    symbol: str,
    timeframe: str,
    now: datetime,
    history_days: int,
    overlap_bars: int,
    start: datetime | None = None,
) -> FetchWindow:
    """Check the broker serves symbol × timeframe (a venue call, e.g. its market list) and
    compute the missing window."""
    canonical = broker.check_symbol(symbol)
    tf = broker.check_timeframe(timeframe)
    last = CandleStore(home).last_ts(canonical, tf)
    return fetch_window(
        tf,
        now,
        last,
        history_days,
        overlap_bars,
        start,
        whole_history=broker.capabilities.local_data,
    )


@task(**BROKER_CALL, task_run_name="fetch-{symbol}-{timeframe}")
def fetch_candles(
    broker: BaseBroker, symbol: str, timeframe: str, window: FetchWindow
) -> pl.DataFrame:
    """Fetch the window's candles from the broker."""
    if window.is_empty:
        return empty_candles()
    return broker.fetch_candles(symbol, timeframe, window.start, window.end)


@task(cache_policy=NO_CACHE, task_run_name="store-{symbol}-{timeframe}")
def store_candles(
    home: Path,
    symbol: str,
    timeframe: str,
    candles: pl.DataFrame,
    now: datetime | None = None,
    source: str = "collect",
    keep_forming: bool = False,
    bounds: Plausibility | None = None,
    policy: ImportPolicy | None = None,
) -> CollectReport:
    """Validate and upsert candles; bad rows go to quarantine. A still-forming candle is dropped
    (it is fetched again once closed) unless ``keep_forming``, which quarantines it instead.
    ``source``: ``broker:<name>`` or ``import:<path>``; ``bounds``: the plausibility bounds
    (default: the asset class's built-in ones); ``policy``: set for an import, which is refused
    when it would mix sources or change stored candles (a broker's own overlap re-fetch corrects
    its candles freely)."""
    now = now or datetime.now(UTC)
    fetched = candles.height
    if not keep_forming:
        candles = drop_forming(candles, parse_timeframe(timeframe), now)
    stored = CandleStore(home).upsert(
        symbol, timeframe, candles, now=now, source=source, bounds=bounds, policy=policy
    )
    return stored.report(fetched)


@task(cache_policy=NO_CACHE, task_run_name="read-{path.name}")
def read_candles_file(path: Path, timeframe: str, timezone: str = "UTC") -> pl.DataFrame:
    """Read a user's candle file (rows kept as they are, for validation); refuse it when its
    candles are not ``timeframe`` apart."""
    candles = read_candle_file(path, timezone=timezone)
    check_spacing(candles["ts"], parse_timeframe(timeframe), what=path.name)
    return candles
