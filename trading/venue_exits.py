"""The strategy's exits carried out at a real venue, at the start of each live run: a position whose
time-out bar has closed is closed at market (``TIMEOUT``), and one whose stop-loss / take-profit
the venue did not take with the order is closed when a closed candle touched them (judged by
``core.strategy.exit_for_candle``, the backtest's and the paper account's rule: stop first).

The exit is written to the ledger (``exit_reason`` on the still-OPEN position) before the venue
hears of it, and the venue looks the close up before sending it: a run that stops in between
closes the position once, under the reason first decided. A venue exit happens at the run's
market price, not at the bar's close or the touched level the backtest assumes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import polars as pl
from sqlalchemy.exc import IntegrityError

from brokers.execution import CLOSED, EXIT, OPEN, fills, positions
from brokers.venue_execution import CANCELLED, FILLED, REFUSED, PositionExit, VenueOrder
from core.strategy import TIMEOUT, Candle, Costs, exit_for_candle
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe
from trading.ledger import Ledger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VenueFacts:
    """What reconciliation learnt of this venue's ledger positions: the entry ids the venue still
    holds, the entries' venue ids, and whether the venue took each entry's exits."""

    held: set[str]
    venue_ids: Mapping[str, str]
    attached: Mapping[str, bool | None]


class ClosingVenue(Protocol):
    name: str
    account_name: str
    dry_run: bool

    def exits_attached(self, symbol: str) -> bool: ...

    def close(self, exit: PositionExit) -> VenueOrder | None: ...


def exit_due(
    row: Mapping, candles: pl.DataFrame | None, now: datetime, exits_at_venue: bool
) -> str | None:
    """Why the ledger position ``row`` is to be closed at ``now``, or None. Without exits at
    the venue, every candle closed since the entry is judged as the backtest judges it."""
    bar = parse_timeframe(row["timeframe"]).duration
    if not exits_at_venue and candles is not None and row["entry_ts"] is not None:
        closed = candles.filter(
            (pl.col("ts") + bar > row["entry_ts"]) & (pl.col("ts") + bar <= now)
        ).sort("ts")
        for c in closed.select("ts", "open", "high", "low", "close").iter_rows():
            hit = exit_for_candle(
                row["side"], row["stop_loss"], row["take_profit"], row["timeout_at"],
                Candle(*c), Costs(),
            )  # fmt: skip
            if hit is not None:
                return hit[1]
    # The time-out bar (opening at ``timeout_at``) has closed: the backtest exits at its close.
    if row["timeout_at"] is not None and now >= row["timeout_at"] + bar:
        return TIMEOUT
    return None


def close_due(
    ledger: Ledger,
    broker: ClosingVenue,
    known: VenueFacts,
    candles: Mapping[str, pl.DataFrame] | None,
    now: datetime,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Close this venue's due positions (module docstring); (client ids closed, failures). Only
    a position the venue still holds is judged (one gone without an exit asked for is the
    reconciliation's, closed there as ``VENUE``)."""
    by_symbol = {normalize_symbol(k): v for k, v in (candles or {}).items()}
    done, failed = [], []
    for row in ledger.open_positions(account=broker.account_name).iter_rows(named=True):
        order_id = row["order_id"]
        reason = row["exit_reason"]  # asked for by an earlier run, not yet confirmed
        if reason is None and order_id in known.held:
            at_venue = _at_venue(row, known.attached.get(order_id), broker)
            reason = exit_due(row, by_symbol.get(row["symbol"]), now, at_venue)
        if reason is None:
            continue
        exit = PositionExit(
            order_id, known.venue_ids.get(order_id), row["symbol"], row["timeframe"],
            row["candle_ts"], row["side"], row["quantity"], reason,
        )  # fmt: skip
        if broker.dry_run:
            broker.close(exit)  # logged, not sent
            message = f"{broker.name} DRY RUN: would close {order_id} at market ({reason})"
            ledger.record_risk_event(
                "venue_exit_dry_run", message, symbol=row["symbol"], ts=now,
                details={"order_id": order_id, "reason": reason},
            )  # fmt: skip
            continue
        _ask(ledger, row["id"], reason)
        try:
            closed = broker.close(exit)
        except Exception as exc:  # the exit stays asked for: the next run tries again
            logger.warning("%s: position %s not closed (%s): %s", broker.name, order_id,
                           reason, exc)  # fmt: skip
            failed.append(f"close {order_id} ({reason}): {exc}")
            continue
        if closed is not None and closed.status in (CANCELLED, REFUSED):
            said = f"close {order_id} ({reason}) refused at {broker.name}: {closed.reason}"
            logger.warning("%s; close the position at the venue by hand", said)
            failed.append(said)
            continue
        if closed is None or closed.status != FILLED:
            logger.info("%s: the close of %s is not filled yet", broker.name, order_id)
            continue
        _book_exit(ledger, broker, row, reason, closed, now)
        done.append(order_id)
    return tuple(done), tuple(failed)


def _at_venue(row: Mapping, attached: bool | None, broker: ClosingVenue) -> bool:
    if row["stop_loss"] is None and row["take_profit"] is None:
        return True  # nothing to watch
    if attached is not None:
        return attached
    return broker.exits_attached(row["symbol"])  # an order filled before this was recorded


def _ask(ledger: Ledger, position_id: int, reason: str) -> None:
    where = (positions.c.id == position_id) & (positions.c.status == OPEN)
    where &= positions.c.exit_reason.is_(None)
    with ledger.engine.begin() as conn:
        conn.execute(positions.update().where(where).values(exit_reason=reason))


def _book_exit(
    ledger: Ledger,
    broker: ClosingVenue,
    row: Mapping,
    reason: str,
    venue: VenueOrder,
    now: datetime,
) -> None:
    """The close as the paper account books an exit: the position CLOSED and an EXIT fill."""
    ts, price = venue.fill_ts or now, venue.fill_price
    pnl = venue.realized_pnl  # in the account's currency, as the venue reports it
    if pnl is None and price is not None and row["entry_price"] is not None:
        pnl = row["side"] * row["quantity"] * (price - row["entry_price"])  # gross, quote ccy
    values = {"status": CLOSED, "exit_ts": ts, "exit_price": price, "exit_reason": reason}
    where = (positions.c.id == row["id"]) & (positions.c.status == OPEN)
    common = {"account": broker.account_name, "order_id": row["order_id"], "kind": EXIT}
    common |= {"symbol": row["symbol"], "ts": ts, "side": -row["side"], "fee": 0.0}
    fill = common | {"quantity": row["quantity"], "price": price, "reason": reason}
    try:
        with ledger.engine.begin() as conn:
            conn.execute(positions.update().where(where).values(**values, realized_pnl=pnl))
            # A close whose price the venue no longer tells (Capital.com, after a lost answer)
            # has no fill row: a fill without a price would be a made-up one.
            if price is not None:
                conn.execute(fills.insert().values(**fill, realized_pnl=pnl, created_at=now))
    except IntegrityError:  # booked by a concurrent run
        logger.info("%s: the close of %s was recorded already", broker.name, row["order_id"])
        return
    logger.info("%s: position %s closed (%s) at %s", broker.name, row["order_id"], reason,
                "an unknown price" if price is None else f"{price:g}")  # fmt: skip
