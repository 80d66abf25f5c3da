"""What to collect and which window to fetch: the pure logic behind the collect flow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from core.config import Settings
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, as_utc, parse_timeframe

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
# One row of a collect/import report (CLI ``--json``, Prefect artifact), in this order.
REPORT_FIELDS = (
    "symbol",
    "timeframe",
    "fetched",
    "new",
    "replaced",
    "duplicated",
    "quarantined",
    "gaps",
    "missing_candles",
    "rows",
    "first_ts",
    "last_ts",
    "error",
)


@dataclass(frozen=True)
class FetchWindow:
    """Candles to request: open times in ``[start, end)``; ``end`` is the forming candle's open."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.start >= self.end


def collection_units(
    settings: Settings,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
) -> list[tuple[str, str]]:
    """Symbol × timeframe pairs to collect; defaults from the configured universe. Symbols outside
    the universe are allowed: whether they exist is the broker's call."""
    chosen_symbols = (
        [normalize_symbol(s) for s in symbols] if symbols else settings.universe.symbols
    )
    chosen_tfs = (
        [parse_timeframe(t).name for t in timeframes]
        if timeframes
        else settings.universe.timeframes
    )
    pairs = [(s, t) for s in dict.fromkeys(chosen_symbols) for t in dict.fromkeys(chosen_tfs)]
    return pairs


def fetch_window(
    timeframe: Timeframe,
    now: datetime,
    last_stored: datetime | None,
    history_days: int,
    overlap_bars: int,
    start: datetime | None = None,
    whole_history: bool = False,
) -> FetchWindow:
    """Only what is missing: from ``start`` if given, else from the newest stored candle minus
    ``overlap_bars`` (so a corrected candle replaces the stored one), else ``history_days`` back
    (or from the beginning for a broker of finite local data, ``whole_history``).
    The window ends at the open of the still-forming candle, which is never requested."""
    end = timeframe.floor(now)
    if start is not None:
        begin = timeframe.floor(start)
    elif last_stored is not None:
        begin = as_utc(last_stored) - overlap_bars * timeframe.duration
    elif whole_history:
        begin = EARLIEST
    else:
        begin = timeframe.floor(now - timedelta(days=history_days))
    return FetchWindow(start=begin, end=end)


def drop_forming(candles: pl.DataFrame, timeframe: Timeframe, now: datetime) -> pl.DataFrame:
    """Drop the candle still forming at ``now`` (open time passed, period not ended): it is never
    stored, and is fetched again once closed. Candles in the future are kept for validation to
    quarantine: they are bad data, not early data."""
    ts, now = pl.col("ts"), as_utc(now)
    forming = ts.is_not_null() & (ts <= now) & (ts + timeframe.duration > now)
    return candles.filter(~forming)
