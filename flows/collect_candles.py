"""Stage 1: collect candles from the configured broker into the local Parquet store.

Fans out per symbol × timeframe; each unit fetches only what is missing since its newest stored
candle, validates, upserts and reports. One unit's failure does not stop the others; the flow ends
failed, naming the failed units, only when something failed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import Flow, flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from brokers import create_broker
from core.collect import collection_units
from core.config import Settings, load_settings
from core.reports import CollectReport
from core.timeframes import as_utc
from flows._fanout import Chain, fan_out, finish
from tasks.collect import fetch_candles, plan_fetch, store_candles


@flow(name="collect-candles", task_runner=ThreadPoolTaskRunner(max_workers=4))
def collect_candles(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    history_days: int | None = None,
    overlap_bars: int | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[CollectReport]:
    """Collect closed candles for each symbol × timeframe. Parameters left empty take the
    configuration's values (universe, history_days, overlap_bars). ``end`` (default: now, never
    later) collects as if it were that time: reproducible runs and backfills of a past range.
    ``settings``: the configuration already resolved by the caller (else loaded from ``config`` /
    ``home``)."""
    settings = settings or load_settings(config, home)
    broker = create_broker(settings)
    now = datetime.now(UTC) if end is None else min(as_utc(end), datetime.now(UTC))
    retry = {
        "retries": settings.collect.retries,
        "retry_delay_seconds": exponential_backoff(settings.collect.retry_delay_seconds),
    }
    plan, fetch = plan_fetch.with_options(**retry), fetch_candles.with_options(**retry)
    history = history_days or settings.universe.history_days
    overlap = settings.collect.overlap_bars if overlap_bars is None else overlap_bars

    def chain(symbol: str, timeframe: str) -> Chain:
        window = plan.submit(broker, settings.home, symbol, timeframe, now, history, overlap, start)
        candles = fetch.submit(broker, symbol, timeframe, window)
        stored = store_candles.submit(
            settings.home,
            symbol,
            timeframe,
            candles,
            now,
            source=f"broker:{broker.name}",
            bounds=settings.validation.bounds(symbol),
        )
        return window, candles, stored

    rows = fan_out(collection_units(settings, symbols, timeframes), chain, CollectReport)
    return finish(rows, "collect-report", f"Candles collected from broker {broker.name!r}")


def configured(settings: Settings) -> Flow:
    """The flow with the thread pool the configuration asks for (``collect.max_workers``): a task
    runner is fixed per flow run, so callers that know the settings pick it here."""
    runner = ThreadPoolTaskRunner(max_workers=settings.collect.max_workers)
    return collect_candles.with_options(task_runner=runner)


if __name__ == "__main__":
    collect_candles()
