"""Stage 1: collect candles from the configured broker into the local Parquet store.

Fans out per symbol × timeframe; each unit fetches only what is missing since its newest stored
candle, validates, upserts and reports. One unit's failure does not stop the others; the flow ends
failed, naming the failed units, only when something failed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from brokers import create_broker
from core.collect import collection_units
from core.config import load_settings
from core.errors import CollectError
from flows._reporting import first_error, publish_table, unit_row
from tasks.collect import fetch_candles, plan_fetch, store_candles


@flow(name="collect-candles", task_runner=ThreadPoolTaskRunner(max_workers=4))
def collect_candles(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    start: datetime | None = None,
    home: str | None = None,
    config: str | None = None,
) -> list[dict]:
    """Collect closed candles for each symbol × timeframe (defaults: the configured universe)."""
    settings = load_settings(config, home)
    broker = create_broker(settings)
    now = datetime.now(UTC)
    fetch = fetch_candles.with_options(
        retries=settings.collect.retries,
        retry_delay_seconds=exponential_backoff(settings.collect.retry_delay_seconds),
    )
    units = []
    for symbol, timeframe in collection_units(settings, symbols, timeframes):
        window = plan_fetch.submit(
            broker,
            settings.home,
            symbol,
            timeframe,
            now,
            settings.universe.history_days,
            settings.collect.overlap_bars,
            start,
        )
        candles = fetch.submit(broker, symbol, timeframe, window)
        report = store_candles.submit(settings.home, symbol, timeframe, candles, now)
        units.append((symbol, timeframe, window, candles, report))

    rows = []
    for symbol, timeframe, window, candles, report in units:
        error = first_error(window, candles, report)
        fetched = candles.result().height if candles.state.is_completed() else None
        rows.append(unit_row(symbol, timeframe, fetched, None if error else report.result(), error))
    publish_table("collect-report", rows, f"Candles collected from broker {broker.name!r}")
    failed = [f"{r['symbol']} {r['timeframe']} ({r['error']})" for r in rows if r["error"]]
    if failed:
        raise CollectError(f"{len(failed)} of {len(rows)} failed: " + "; ".join(failed), rows)
    return rows


if __name__ == "__main__":
    collect_candles()
