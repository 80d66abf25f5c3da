"""Orders across live runs: the orders a stopped run left unsent (NEW) are sent again under their
client order id, or expired with a recorded reason once their signal candle closed more than
``live.new_order_max_age_bars`` bars ago; the orders not filled yet count as exposure, an unsent
one only until that age."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from brokers.execution import ExecutionBroker
from core.errors import CandleflowError
from core.store import CandleStore
from core.timeframes import as_utc, parse_timeframe
from models.risk import Position
from trading.ledger import Ledger
from trading.records import NEW, SUBMITTED, OrderRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What a run did with the unsent orders it found (client order ids)."""

    resubmitted: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # the broker did not answer: still NEW, tried again next run


def age_in_bars(ts: datetime, timeframe: str, now: datetime) -> float:
    """Bars since the signal candle opening at ``ts`` closed (negative while it is open)."""
    tf = parse_timeframe(timeframe)
    return (as_utc(now) - as_utc(ts) - tf.duration) / tf.duration


def recover_orders(
    ledger: Ledger,
    broker: ExecutionBroker,
    symbols: list[str],
    timeframe: str,
    now: datetime,
    max_age_bars: int,
) -> Recovery:
    """Send again (same client order id: the broker recognises a repeat) each order of these
    symbols and timeframe that ``broker`` never confirmed, or expire it when it is older than
    ``max_age_bars``, unless the broker holds it already (then it is only confirmed)."""
    resubmitted, expired, failed = [], [], []
    for row in ledger.unsent_orders(broker.name, timeframe, symbols):
        age = age_in_bars(row.ts, row.timeframe, now)
        try:
            if age > max_age_bars and not broker.known(row.order_id):
                if ledger.expire(
                    row,
                    _expiry_reason(row, broker.name, age, max_age_bars),
                    {"age_bars": age, "max_age_bars": max_age_bars},
                ):
                    logger.warning("order %s expired unsent (%.1f bars old)", row.order_id, age)
                    expired.append(row.order_id)
                continue
            sent = ledger.resubmit(row, broker)
        except Exception as exc:  # the broker's failure: the order stays NEW, counted as exposure
            logger.warning("order %s could not be sent again: %s", row.order_id, exc)
            failed.append(row.order_id)
            continue
        logger.info("order %s sent again after a stopped run: %s", row.order_id, sent.status)
        resubmitted.append(row.order_id)
    return Recovery(tuple(resubmitted), tuple(expired), tuple(failed))


def _expiry_reason(row: OrderRow, broker: str, age: float, max_age_bars: int) -> str:
    return (
        f"order {row.order_id} ({row.symbol} {row.timeframe}, candle {row.ts:%Y-%m-%d %H:%M} UTC)"
        f" never reached {broker}: its candle closed {age:.1f} bars ago, more than"
        f" live.new_order_max_age_bars = {max_age_bars}; expired, not sent"
    )


def pending_positions(
    ledger: Ledger, store: CandleStore, now: datetime, max_age_bars: int
) -> tuple[Position, ...]:
    """Orders not filled yet (NEW: the broker has not confirmed them, counted up to
    ``max_age_bars``; SUBMITTED: accepted, waiting for a candle), each at its signal candle's
    close: the notional it was sized at."""
    frames = [ledger.orders(status=status) for status in (NEW, SUBMITTED)]
    pending = []
    for row in pl.concat(frames).iter_rows(named=True):
        if row["status"] == NEW and age_in_bars(row["ts"], row["timeframe"], now) > max_age_bars:
            logger.warning("unsent order %s is past its age: not counted", row["order_id"])
            continue
        notional = row["quantity"] * _signal_close(store, row)
        pending.append(Position(row["symbol"], notional, row["side"]))
    return tuple(pending)


def _signal_close(store: CandleStore, row: dict) -> float:
    """The close of the order's signal candle; 0 when it cannot be read (the order still counts
    as an open position)."""
    end = as_utc(row["ts"]) + parse_timeframe(row["timeframe"]).duration
    try:
        close = store.read(row["symbol"], row["timeframe"], end=end)["close"].tail(1)
    except CandleflowError as exc:
        logger.warning("pending order %s: %s", row["order_id"], exc)
        return 0.0
    if close.is_empty():
        logger.warning("pending order %s: no candle to price it at", row["order_id"])
        return 0.0
    return float(close[0])
