"""A live decision asked for, not acted on (``POST /v1/predict``): the champion's decision on the
newest closed candle exactly as ``trading.live`` makes it — score, vote, weight, risk layer, the
order it *would* place — with no order placed and nothing written to the ledger. Its signals
table holds the decisions live runs acted on (one row per candle and model version): a
prediction stored there would overwrite that record, and one made on posted candles is not a
market fact. ``tests/api`` pins the parity with ``candleflow signals``.

Posted candles (the newest OHLCV rows from the caller) pass the import's validation against the
stored candles and are laid over them in memory (:class:`OverlayStore`); the store is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import polars as pl

from core.candles import CANDLE_SCHEMA, COLUMNS
from core.config import Settings
from core.errors import CandleflowError, DataFormatError
from core.reports import SignalReport
from core.store import CandleStore
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, as_utc, parse_timeframe
from core.validation import validate_candles
from models.registry import CHAMPION
from models.risk import bars_per_year, decide
from models.signal import Signal
from models.tracking import registered_name
from trading.live import (
    LiveContext,
    LiveDecision,
    OrderOutcome,
    decision_signal,
    one_line,
    scored_decision,
    signal_rows,
)
from trading.live_models import LiveModel
from trading.records import SignalRecord
from trading.scoring import NO_MODEL

logger = logging.getLogger(__name__)

Row = Mapping[str, object]


class ModelLoadError(CandleflowError):
    """The registry names a champion that cannot be loaded (not the caller's fault)."""


class CandleRowsError(DataFormatError):
    """Posted candles that fail the import's validation (each reason named, with its rows)."""


@dataclass(frozen=True)
class Prediction:
    """The decision, its ledger row as a live run would store it (``record``: not stored) and
    its report row, as ``candleflow signals --json`` prints it."""

    decision: LiveDecision
    record: SignalRecord
    report: SignalReport

    @property
    def would_order(self) -> bool:
        order = self.decision.order
        return order is not None and order.quantity is not None


class OverlayStore(CandleStore):
    """The candle store with validated candles laid over one symbol × timeframe, in memory: a
    posted candle replaces the stored one of its time (as an import's newer value does)."""

    def __init__(self, base: CandleStore, symbol: str, timeframe: str, good: pl.DataFrame) -> None:
        super().__init__(base.home)
        self.base = base
        self.key = (normalize_symbol(symbol), parse_timeframe(timeframe).name)
        stored = base.read(symbol, timeframe)
        kept = stored.join(good.select("ts"), on="ts", how="anti")
        self.candles = pl.concat([kept, good.select(COLUMNS)], how="vertical").sort("ts")

    def _mine(self, symbol: str, timeframe: str | Timeframe) -> bool:
        return (normalize_symbol(symbol), parse_timeframe(timeframe).name) == self.key

    def read(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        if not self._mine(symbol, timeframe):
            return self.base.read(symbol, timeframe, start, end)
        frame = self.candles
        if start is not None:
            frame = frame.filter(pl.col("ts") >= as_utc(start))
        if end is not None:
            frame = frame.filter(pl.col("ts") < as_utc(end))
        return frame

    def last_ts(self, symbol: str, timeframe: str | Timeframe) -> datetime | None:
        if not self._mine(symbol, timeframe):
            return self.base.last_ts(symbol, timeframe)
        return None if self.candles.is_empty() else self.candles["ts"][-1]


def candle_frame(rows: Sequence[Row]) -> pl.DataFrame:
    """Posted OHLCV rows (``ts`` a datetime, naive meaning UTC) as a candle frame, unvalidated."""
    try:
        data = [{c: as_utc(r["ts"]) if c == "ts" else r.get(c) for c in COLUMNS} for r in rows]
        return pl.DataFrame(data, schema=CANDLE_SCHEMA, strict=False)
    except (pl.exceptions.PolarsError, KeyError, TypeError, ValueError) as exc:
        raise CandleRowsError(f"candles: not OHLCV rows ({one_line(exc)})") from None


def overlay(
    store: CandleStore,
    settings: Settings,
    symbol: str,
    timeframe: str,
    candles: pl.DataFrame,
    now: datetime,
) -> OverlayStore:
    """``store`` with ``candles`` laid over it once every row passes the import's validation
    (the symbol's plausibility bounds, the stored candles around them); else refused, naming
    each reason and its rows (1-based, in the order posted)."""
    tf = parse_timeframe(timeframe)
    stored = store.read(symbol, tf)
    traced = candles.with_row_index("source_row", offset=1)
    checked = validate_candles(traced, tf, now, settings.validation.bounds(symbol), stored)
    if not checked.bad.is_empty():
        by_reason: dict[str, list[int]] = {}
        for row in checked.bad.select("source_row", "reason").iter_rows():
            for reason in str(row[1]).split("; "):
                by_reason.setdefault(reason, []).append(int(row[0]))
        parts = [f"{reason} (row {', '.join(map(str, r[:5]))})" for reason, r in by_reason.items()]
        raise CandleRowsError(
            f"{normalize_symbol(symbol)} {tf.name}: {checked.bad.height} of {candles.height}"
            f" candle(s) refused: " + "; ".join(parts)
        )
    return OverlayStore(store, symbol, tf.name, checked.good)


def predict(ctx: LiveContext, symbol: str, timeframe: str) -> Prediction:
    """The champion's decision on the newest candle of ``ctx.store``, as a live run would make
    and report it, without the ledger or the broker (the shadow challenger is not asked)."""
    name = registered_name(symbol, timeframe)
    try:
        champion = ctx.cache.get(name, CHAMPION)
    except CandleflowError:
        raise
    except Exception as exc:  # the registry's or the artifact's own errors (MLflow, I/O)
        logger.exception("%s: the champion cannot be loaded", name)
        raise ModelLoadError(f"{name}: the champion cannot be loaded ({one_line(exc)})") from exc
    if champion is None:
        decision = LiveDecision(symbol, timeframe, name, NO_MODEL, ["no champion"])
    else:
        decision = _decide(ctx, symbol, timeframe, champion)
    record, report = signal_rows(ctx, decision)
    return Prediction(decision, record, report)


def _decide(ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel) -> LiveDecision:
    """``trading.live._decide`` for a champion (the same steps: ``scored_decision``,
    ``decision_signal``), the order only sized (not placed)."""
    decision = scored_decision(ctx, symbol, timeframe, model)
    if decision.scored is None:  # refused, with its status and reason
        return decision
    _, signal = decision_signal(ctx, decision)
    reasons, order = list(signal.reasons), None
    decision = replace(decision, signal=signal)
    if signal.is_order:
        order = _sized(ctx, decision, signal)
        reasons += order.reasons
    return replace(decision, reasons=reasons, order=order)


def _sized(ctx: LiveContext, d: LiveDecision, signal: Signal) -> OrderOutcome:
    """The risk layer's decision on the order the signal asks for: its size and exits if
    approved, else why not. Nothing is placed (no order id)."""
    assert d.model is not None and d.scored is not None  # a scored decision
    decision = decide(
        signal.order(d.symbol, d.scored.close, d.scored.sigma),
        ctx.account_state(),
        ctx.settings.risk,
        d.model.labels,
        periods_per_year=bars_per_year(d.timeframe, d.symbol),
        kill_file=ctx.kill_file,
    )
    if not decision.approved:
        return OrderOutcome(list(decision.reasons))
    return OrderOutcome(
        list(decision.reasons), None, decision.quantity, decision.stop_loss, decision.take_profit
    )
