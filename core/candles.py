"""The candle schema every broker returns and the store keeps: ``ts`` (UTC open time) and OHLCV."""

from __future__ import annotations

import polars as pl

from core.errors import DataFormatError

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
COLUMNS: tuple[str, ...] = tuple(CANDLE_SCHEMA)
# Optional columns a broker may add to trace a row to its origin (a file's data row); they reach
# the quarantine, never the store.
TRACE_COLUMNS: tuple[str, ...] = ("source_row",)


_EMPTY = pl.DataFrame(schema=CANDLE_SCHEMA)


def empty_candles() -> pl.DataFrame:
    """A new empty candle frame (a copy: building one from the schema costs ~0.1 ms, and a
    live decision reads an absent higher-timeframe file each time)."""
    return _EMPTY.clear()


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast ``frame`` to the candle schema (column order, dtypes, UTC), keeping trace columns;
    missing columns raise."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"candle frame lacks column(s) {missing}; found {frame.columns}, need {list(COLUMNS)}"
        )
    ts = pl.col("ts")
    dtype = frame.schema["ts"]
    if isinstance(dtype, pl.Datetime):
        ts = (
            ts.dt.replace_time_zone("UTC")
            if dtype.time_zone is None
            else ts.dt.convert_time_zone("UTC")
        )
        ts = ts.dt.cast_time_unit("us")
    else:
        raise DataFormatError(f"column 'ts' must be a datetime, got {dtype}")
    trace = [c for c in TRACE_COLUMNS if c in frame.columns]
    return frame.select(
        ts.alias("ts"), *[pl.col(c).cast(pl.Float64, strict=False) for c in COLUMNS[1:]], *trace
    )
