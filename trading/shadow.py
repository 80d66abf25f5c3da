"""Live hit rate of the champion against its shadow challenger: each BUY signal's outcome under the
labels' own triple-barrier rule (``features.labels.triple_barrier``), counted once it is known,
per symbol × timeframe × role."""

from __future__ import annotations

import logging
import math

import polars as pl

from core.candles import conform
from core.feature_spec import LabelSpec
from core.timeframes import parse_timeframe
from features.labels import triple_barrier

logger = logging.getLogger(__name__)

CHAMPION, SHADOW = "champion", "shadow"
BUY = 1
SIGNAL_COLUMNS = ("symbol", "timeframe", "ts", "model_version", "shadow", "status", "action")
REPORT_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "role": pl.String(),
    "model_versions": pl.String(),
    "signals": pl.Int64(),
    "buys": pl.Int64(),
    "resolved": pl.Int64(),
    "wins": pl.Int64(),
    "hit_rate": pl.Float64(),
    "pending": pl.Int64(),
}
_OUTCOME_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Datetime("us", "UTC"), "label": pl.Int8()}


def known_outcomes(candles: pl.DataFrame, timeframe: str, labels: LabelSpec) -> pl.DataFrame:
    """``ts`` → ``label`` (+1 take-profit, −1 stop-loss, 0 time-out) for every bar whose outcome
    the candles already decide: a barrier touched, or ``horizon`` bars elapsed.

    ``triple_barrier`` leaves the last ``horizon`` bars unlabelled even when a barrier was already
    touched; so the candles are extended by ``horizon`` bars of NaN prices, which touch nothing.
    An outcome whose exit falls in that padding is not known yet and is dropped."""
    frame = conform(candles).sort("ts").unique("ts", keep="last", maintain_order=True)
    if frame.is_empty():
        return pl.DataFrame(schema=_OUTCOME_SCHEMA)
    last = frame["ts"][-1]
    step = parse_timeframe(timeframe).duration
    pad = pl.DataFrame(
        {"ts": [last + (k + 1) * step for k in range(labels.horizon)]},
        schema={"ts": pl.Datetime("us", "UTC")},
    ).with_columns([pl.lit(math.nan).alias(c) for c in frame.columns if c != "ts"])
    padded = pl.concat([frame, pad.select(frame.columns)], how="vertical_relaxed")
    outcome = triple_barrier(padded, labels).head(frame.height)
    return outcome.filter(pl.col("label").is_not_null() & (pl.col("t1") <= last)).select(
        "ts", pl.col("label").cast(pl.Int8)
    )


def _ok_signals(signals: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in SIGNAL_COLUMNS if c not in signals.columns]
    if missing:
        raise ValueError(f"signals lack column(s) {missing}; found {signals.columns}")
    dtype = signals.schema["ts"]
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"signals column 'ts' must be a datetime, got {dtype}")
    ts = pl.col("ts")  # naive times are UTC, as everywhere in candleflow
    ts = ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts
    return signals.filter(pl.col("status") == "OK").with_columns(
        ts.dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        pl.when(pl.col("shadow")).then(pl.lit(SHADOW)).otherwise(pl.lit(CHAMPION)).alias("role"),
        pl.col("model_version").cast(pl.String),
    )


def signal_outcomes(
    signals: pl.DataFrame,
    candles_by_key: dict[tuple[str, str], pl.DataFrame],
    labels: LabelSpec,
) -> pl.DataFrame:
    """The OK signals with ``role`` and ``label``: the outcome of a BUY once known, else null
    (pending, not a BUY, or no candles for its symbol × timeframe)."""
    ok = _ok_signals(signals)
    parts = []
    for (symbol, timeframe), group in ok.group_by(["symbol", "timeframe"], maintain_order=True):
        candles = candles_by_key.get((str(symbol), str(timeframe)))
        if candles is None:
            logger.warning(
                "no candles for %s %s: its %d signal(s) stay pending", symbol, timeframe, len(group)
            )
            outcomes = pl.DataFrame(schema=_OUTCOME_SCHEMA)
        else:
            outcomes = known_outcomes(candles, str(timeframe), labels)
        joined = group.join(outcomes, on="ts", how="left")
        label = pl.when(pl.col("action") == BUY).then(pl.col("label")).alias("label")
        parts.append(joined.with_columns(label))
    if not parts:
        return ok.with_columns(label=pl.lit(None, dtype=pl.Int8))
    return pl.concat(parts, how="vertical")


def shadow_report(
    signals: pl.DataFrame,
    candles_by_key: dict[tuple[str, str], pl.DataFrame],
    labels: LabelSpec,
) -> pl.DataFrame:
    """Per symbol × timeframe × role (champion / shadow): the model versions, OK signals, BUYs,
    resolved BUYs, wins (take-profit first, the training target), ``hit_rate`` = wins / resolved
    (NaN when none) and pending BUYs. Only ``status == "OK"`` signals count; ``candles_by_key``
    maps (symbol, timeframe), spelt as in ``signals``, to candles covering the signals and after."""
    outcomes = signal_outcomes(signals, candles_by_key, labels)
    if outcomes.is_empty():
        return pl.DataFrame(schema=REPORT_SCHEMA)
    buy = pl.col("action") == BUY
    resolved = (buy & pl.col("label").is_not_null()).sum()
    wins = (pl.col("label") == 1).sum()
    report = outcomes.group_by(["symbol", "timeframe", "role"]).agg(
        pl.col("model_version").unique().sort().str.join(",").alias("model_versions"),
        pl.len().alias("signals"),
        buy.sum().alias("buys"),
        resolved.alias("resolved"),
        wins.alias("wins"),
        pl.when(resolved > 0).then(wins / resolved).otherwise(math.nan).alias("hit_rate"),
        (buy & pl.col("label").is_null()).sum().alias("pending"),
    )
    return report.select([pl.col(c).cast(t) for c, t in REPORT_SCHEMA.items()]).sort(
        "symbol", "timeframe", "role"
    )
