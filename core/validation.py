"""Candle validation before anything is stored: every row is either good or quarantined with the
reasons it failed. Nothing is dropped silently; exact duplicate rows within a batch collapse into
one (counted), conflicting duplicates are all quarantined; finite but absurd values (a volume of
1e308, a price far from the candles around it) fail the plausibility bounds of the asset class."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from core.candles import COLUMNS, PRICE_COLUMNS, TRACE_COLUMNS, conform
from core.errors import DataFormatError
from core.plausibility import (  # noqa: F401 (plausibility_for is re-exported)
    DEFAULT_PLAUSIBILITY,
    Plausibility,
    plausibility_for,
)
from core.timeframes import TIMEFRAMES, Timeframe, as_utc

VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
# A candle's prices are judged against the median close of this many candles on each side of it
# (itself included): one absurd candle, or a few in a row, cannot move that median, while a real
# lasting move of the market soon holds the majority of the window.
JUMP_NEIGHBOURS = 5


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


def _row_rules(tf: Timeframe, now: datetime, bounds: Plausibility) -> list[pl.Expr]:
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
        pl.when(pl.col("volume").is_finite() & (pl.col("volume") > bounds.max_volume)).then(
            pl.lit(f"volume above the plausible maximum {bounds.max_volume:g}")
        ),
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


def validate_candles(
    frame: pl.DataFrame,
    timeframe: Timeframe,
    now: datetime,
    bounds: Plausibility = DEFAULT_PLAUSIBILITY,
    stored: pl.DataFrame | None = None,
) -> ValidationResult:
    """Split ``frame`` (candle columns, plus extras such as ``source_row``) into good and bad.

    Order of judgement: each row on its own; then exact copies of an earlier good row collapse
    (counted); then a timestamp held by good rows with different values quarantines all of them;
    then the good rows outside the longest run in time order are out of order; then a good row
    whose prices jump beyond ``bounds`` from the closes around it (``stored``: the dataset's
    candles, whose neighbours of the batch count too) is implausible."""
    now = as_utc(now)
    extras = [c for c in frame.columns if c not in COLUMNS and c not in TRACE_COLUMNS]
    typed = conform(frame).with_columns(frame.select(extras)) if extras else conform(frame)
    rules = _row_rules(timeframe, now, bounds)
    checked = typed.with_columns(reason=_joined(rules).replace("", None))
    row_ok = pl.col("reason").is_null()
    copy = row_ok & ~pl.struct(*COLUMNS).is_first_distinct()
    checked = checked.with_columns(_copy=copy)
    duplicates = int(checked["_copy"].sum())
    checked = checked.filter(~pl.col("_copy")).drop("_copy")
    values = pl.struct(*VALUE_COLUMNS)
    conflict = row_ok & (values.n_unique().over("ts", row_ok) > 1)
    checked = _mark(checked, conflict, "conflicting duplicate timestamp")
    checked = _mark(checked, pl.Series(~_in_order(checked)), "out-of-order timestamp")
    jump = f"price jump beyond {bounds.max_price_jump:g}x the closes around it"
    checked = _mark(checked, _jumps(checked, stored, bounds.max_price_jump), jump)
    return ValidationResult(
        good=checked.filter(pl.col("reason").is_null()).select(COLUMNS).sort("ts"),
        bad=checked.filter(pl.col("reason").is_not_null()),
        duplicates=duplicates,
    )


def _mark(checked: pl.DataFrame, where: pl.Expr | pl.Series, reason: str) -> pl.DataFrame:
    """Give the rows ``where`` holds ``reason`` (they are good so far: their reason is null)."""
    where = pl.lit(where) if isinstance(where, pl.Series) else where
    return checked.with_columns(
        reason=pl.when(where).then(pl.lit(reason)).otherwise(pl.col("reason"))
    )


def _in_order(checked: pl.DataFrame) -> np.ndarray:
    """Mask: the row is not a good row outside the longest run of good rows in time order."""
    candidates = checked["reason"].is_null().to_numpy()
    in_order = np.ones(checked.height, dtype=bool)
    in_order[candidates] = in_longest_ordered_run(
        checked["ts"].dt.epoch("us").to_numpy()[candidates]
    )
    return in_order


def _jumps(checked: pl.DataFrame, stored: pl.DataFrame | None, max_jump: float) -> pl.Series:
    """Mask of the good rows whose high is above ``max_jump`` × the median close of the candles
    around it, or whose low is below that median / ``max_jump``."""
    rows = checked.with_row_index("_row").filter(pl.col("reason").is_null())
    if rows.is_empty():
        return pl.Series([False] * checked.height, dtype=pl.Boolean)
    context = _stored_around(stored, rows["ts"].min(), rows["ts"].max())
    context = context.join(rows.select("ts"), on="ts", how="anti")  # a new value wins
    window = 2 * JUMP_NEIGHBOURS + 1
    series = (
        pl.concat([rows.select("_row", "ts", "close"), context], how="diagonal_relaxed")
        .sort("ts")
        .with_columns(ref=pl.col("close").rolling_median(window, min_samples=1, center=True))
    )
    judged = rows.join(series.select("_row", "ref"), on="_row").select(
        "_row",
        jump=(pl.col("high") > max_jump * pl.col("ref"))
        | (pl.col("low") * max_jump < pl.col("ref")),
    )
    mask = np.zeros(checked.height, dtype=bool)
    mask[judged["_row"].to_numpy()] = judged["jump"].to_numpy()
    return pl.Series(mask)


def _stored_around(stored: pl.DataFrame | None, first: datetime, last: datetime) -> pl.DataFrame:
    """``ts`` and ``close`` of the stored candles from ``JUMP_NEIGHBOURS`` before ``first`` to as
    many after ``last`` (``stored`` is sorted by ``ts``)."""
    if stored is None or stored.is_empty():
        return pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "close": pl.Float64})
    ts = pl.col("ts")
    parts = (
        stored.filter(ts < first).tail(JUMP_NEIGHBOURS),
        stored.filter(ts.is_between(first, last)),
        stored.filter(ts > last).head(JUMP_NEIGHBOURS),
    )
    return pl.concat([p.select("ts", "close") for p in parts])


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
