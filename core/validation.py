"""Candle validation before anything is stored: every row is either good or quarantined with the
reasons it failed. Nothing is dropped silently; exact duplicate rows within a batch collapse into
one (counted), conflicting duplicates are all quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from core.candles import COLUMNS, PRICE_COLUMNS, conform
from core.timeframes import Timeframe

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
        pl.when(ts.dt.epoch("s") % tf.seconds != 0).then(
            pl.lit(f"timestamp not aligned to {tf.name}")
        ),
        pl.when(ts > now).then(pl.lit("timestamp in the future")),
        pl.when((ts <= now) & (ts + tf.duration > now)).then(pl.lit("candle not closed yet")),
    ]
    return rules


def _sequence_rules(row_ok: pl.Expr) -> list[pl.Expr]:
    """Order and duplicate rules, judged among rows that passed the row rules only (a row with a
    bad timestamp must not make every row after it look out of order)."""
    ts = pl.col("ts")
    previous_max = pl.when(row_ok).then(ts).cum_max().forward_fill().shift(1)
    values = pl.struct(*VALUE_COLUMNS)
    return [
        pl.when(row_ok & (ts < previous_max)).then(pl.lit("out-of-order timestamp")),
        pl.when(row_ok & (values.n_unique().over("ts", row_ok) > 1)).then(
            pl.lit("conflicting duplicate timestamp")
        ),
    ]


def _joined(rules: list[pl.Expr]) -> pl.Expr:
    return pl.concat_str(rules, separator="; ", ignore_nulls=True)


def validate_candles(frame: pl.DataFrame, timeframe: Timeframe, now: datetime) -> ValidationResult:
    """Split ``frame`` (candle columns, plus extras such as ``source_row``) into good and bad."""
    extras = [c for c in frame.columns if c not in COLUMNS]
    typed = conform(frame).with_columns(frame.select(extras)) if extras else conform(frame)
    row_reason = _joined(_row_rules(timeframe, now))
    row_ok = row_reason.is_null() | (row_reason == "")
    checked = typed.with_columns(
        _joined([row_reason.replace("", None), *_sequence_rules(row_ok)]).alias("reason")
    )
    bad = checked.filter(pl.col("reason").is_not_null() & (pl.col("reason") != ""))
    good = checked.filter(pl.col("reason").is_null() | (pl.col("reason") == ""))
    deduplicated = good.unique(subset=list(COLUMNS), keep="first", maintain_order=True)
    return ValidationResult(
        good=deduplicated.select(COLUMNS).sort("ts"),
        bad=bad,
        duplicates=good.height - deduplicated.height,
    )
