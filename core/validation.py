"""Candle validation before anything is stored: every row is either good or quarantined with the
reasons it failed. Nothing is dropped silently; exact duplicate rows within a batch collapse into
one (counted), conflicting duplicates are all quarantined."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from core.candles import COLUMNS, PRICE_COLUMNS, TRACE_COLUMNS, conform
from core.errors import DataFormatError
from core.timeframes import TIMEFRAMES, Timeframe, as_utc

VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")


@dataclass(frozen=True)
class ValidationResult:
    good: pl.DataFrame  # candle schema, sorted and unique by ts
    bad: pl.DataFrame  # the input's columns plus ``reason``
    duplicates: int  # exact duplicate rows collapsed within the batch

    @property
    def reasons(self) -> dict[str, int]:
        """How many quarantined rows failed each rule."""
        if self.bad.is_empty():
            return {}
        counts = self.bad["reason"].str.split("; ").explode().value_counts(sort=True)
        return dict(zip(counts["reason"].to_list(), counts["count"].to_list(), strict=True))


def _row_rules(tf: Timeframe, now: datetime) -> list[pl.Expr]:
    ts = pl.col("ts")
    rules = [pl.when(ts.is_null()).then(pl.lit("missing or unparsable timestamp"))]
    for col in VALUE_COLUMNS:
        c = pl.col(col)
        rules.append(pl.when(c.is_null() | c.is_nan()).then(pl.lit(f"missing {col}")))
        rules.append(pl.when(c.is_infinite()).then(pl.lit(f"non-finite {col}")))
    rules += [
        pl.when(pl.min_horizontal(*[pl.col(c) for c in PRICE_COLUMNS]) <= 0).then(
            pl.lit("non-positive price")
        ),
        pl.when(pl.col("high") < pl.max_horizontal("open", "close")).then(
            pl.lit("high below open/close")
        ),
        pl.when(pl.col("low") > pl.min_horizontal("open", "close")).then(
            pl.lit("low above open/close")
        ),
        pl.when(pl.col("volume") < 0).then(pl.lit("negative volume")),
        pl.when(ts.dt.epoch("us") % (tf.seconds * 1_000_000) != 0).then(
            pl.lit(f"timestamp not aligned to {tf.name}")
        ),
        pl.when(ts > now).then(pl.lit("timestamp in the future")),
        pl.when((ts <= now) & (ts + tf.duration > now)).then(pl.lit("candle not closed yet")),
    ]
    return rules


def in_longest_ordered_run(values: np.ndarray) -> np.ndarray:
    """Mask of one longest non-decreasing subsequence of ``values`` (patience sorting, O(n log n)).
    The rows outside it are the fewest that must go for the rest to be in order: one mistyped date
    far ahead marks that one row, not every row after it."""
    n = values.size
    keep = np.zeros(n, dtype=bool)
    if n == 0 or bool(np.all(values[1:] >= values[:-1])):
        keep[:] = True
        return keep
    tails: list[int] = []  # tails[k]: smallest last value of a run of length k + 1
    tail_index: list[int] = []
    parent = np.full(n, -1, dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        k = bisect.bisect_right(tails, value)
        if k == len(tails):
            tails.append(value)
            tail_index.append(i)
        else:
            tails[k], tail_index[k] = value, i
        parent[i] = tail_index[k - 1] if k else -1
    i = tail_index[-1]
    while i >= 0:
        keep[i] = True
        i = int(parent[i])
    return keep


def _joined(rules: list[pl.Expr]) -> pl.Expr:
    return pl.concat_str(rules, separator="; ", ignore_nulls=True)


def validate_candles(frame: pl.DataFrame, timeframe: Timeframe, now: datetime) -> ValidationResult:
    """Split ``frame`` (candle columns, plus extras such as ``source_row``) into good and bad.

    Order of judgement: each row on its own; then exact copies of an earlier good row collapse
    (counted); then a timestamp held by good rows with different values quarantines all of them;
    then the good rows outside the longest run in time order are out of order."""
    now = as_utc(now)
    extras = [c for c in frame.columns if c not in COLUMNS and c not in TRACE_COLUMNS]
    typed = conform(frame).with_columns(frame.select(extras)) if extras else conform(frame)
    checked = typed.with_columns(reason=_joined(_row_rules(timeframe, now)).replace("", None))
    row_ok = pl.col("reason").is_null()
    copy = row_ok & ~pl.struct(*COLUMNS).is_first_distinct()
    checked = checked.with_columns(_copy=copy)
    duplicates = int(checked["_copy"].sum())
    checked = checked.filter(~pl.col("_copy")).drop("_copy")
    values = pl.struct(*VALUE_COLUMNS)
    conflict = row_ok & (values.n_unique().over("ts", row_ok) > 1)
    checked = checked.with_columns(
        reason=pl.when(conflict)
        .then(pl.lit("conflicting duplicate timestamp"))
        .otherwise(pl.col("reason"))
    )
    candidates = checked["reason"].is_null().to_numpy()
    in_order = np.ones(checked.height, dtype=bool)
    in_order[candidates] = in_longest_ordered_run(
        checked["ts"].dt.epoch("us").to_numpy()[candidates]
    )
    checked = checked.with_columns(
        reason=pl.when(pl.Series(~in_order))
        .then(pl.lit("out-of-order timestamp"))
        .otherwise(pl.col("reason"))
    )
    return ValidationResult(
        good=checked.filter(pl.col("reason").is_null()).select(COLUMNS).sort("ts"),
        bad=checked.filter(pl.col("reason").is_not_null()),
        duplicates=duplicates,
    )


def dominant_step(ts: pl.Series) -> timedelta | None:
    """The most common positive spacing between sorted timestamps (``None`` under 3 steps)."""
    steps = ts.drop_nulls().unique().sort().diff().drop_nulls()
    if steps.len() < 3:
        return None
    return steps.mode().sort()[0]


def check_spacing(ts: pl.Series, timeframe: Timeframe, what: str) -> None:
    """Refuse data whose candles are mostly not ``timeframe`` apart: hourly candles imported as
    daily would otherwise be stored (the ones at midnight) and the rest quarantined."""
    step = dominant_step(ts)
    if step is None or step == timeframe.duration:
        return
    named = next((tf.name for tf in TIMEFRAMES.values() if tf.duration == step), None)
    hint = f"; give the timeframe {named}" if named else ""
    raise DataFormatError(
        f"{what}: its candles are {named or step} apart (the most common spacing), "
        f"not {timeframe.name}{hint}"
    )
