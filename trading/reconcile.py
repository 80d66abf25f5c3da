"""The ledger reconciled with a real venue at the start of each live run: every order left SUBMITTED
is looked up at the venue by its client order id and its fill recorded (a position and an ENTRY
fill, as the paper account books them), a cancelled or refused one marked REJECTED with the
venue's reason; the strategy's exits the venue does not make itself are made
(``trading.venue_exits``: time-outs, and stops / take-profits the venue did not take); ledger
positions the venue no longer holds are closed (exit reason ``VENUE``: a stop-loss or take-profit
there); positions the venue holds that the ledger does not know are
reported — logged, recorded as a ``venue_position_unknown`` risk event and named in the run's
report — and never adopted (they still count as exposure: the account snapshot holds them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import polars as pl
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from brokers.execution import CLOSED, ENTRY, OPEN, BrokerOrder, fills, positions
from brokers.venue_execution import (
    CANCELLED,
    PARTIAL,
    REFUSED,
    WORKING,
    PositionExit,
    VenueOrder,
    VenuePosition,
)
from core.symbols import normalize_symbol
from trading.ledger import Ledger
from trading.records import DRY_RUN, REJECTED, SUBMITTED, orders
from trading.venue_exits import VenueFacts, close_due

logger = logging.getLogger(__name__)

VENUE_EXIT = "VENUE"


class Venue(Protocol):
    """What reconciliation asks of a venue's execution broker."""

    name: str
    account_name: str
    dry_run: bool

    def exits_attached(self, symbol: str) -> bool: ...

    def close(self, exit: PositionExit) -> VenueOrder | None: ...

    def order_status(
        self, order: BrokerOrder | str, venue_id: str | None = None
    ) -> VenueOrder | None: ...

    def positions(self) -> list[VenuePosition]: ...


@dataclass(frozen=True)
class Reconciliation:
    """What one run found at the venue (client order ids; ``unknown_positions``: one line each)."""

    broker: str
    filled: tuple[str, ...] = ()
    working: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # SUBMITTED in the ledger, unknown to the venue
    closed: tuple[str, ...] = ()  # closed at the venue since the last run
    unknown_positions: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # the venue did not answer: tried again next run
    exited: tuple[str, ...] = ()  # closed by this run: time-out, stop-loss, take-profit

    def warnings(self) -> list[str]:
        out = [
            f"{self.broker}: position unknown to the ledger: {p}" for p in self.unknown_positions
        ]
        out += [f"{self.broker}: order {o} is SUBMITTED but the venue has no such order"
                for o in self.missing]  # fmt: skip
        return out + [f"{self.broker}: could not reconcile: {f}" for f in self.failed]


def reconcile(
    ledger: Ledger,
    broker: Venue,
    now: datetime | None = None,
    candles: Mapping[str, pl.DataFrame] | None = None,
) -> Reconciliation:
    """Bring the ledger up to what ``broker``'s venue says (module docstring); ``candles``: each
    symbol's candles, judged for the stops and take-profits the venue did not take (without
    them only time-outs are closed)."""
    now = now or datetime.now(UTC)
    found: dict[str, list[str]] = {k: [] for k in ("filled", "working", "rejected", "missing")}
    failed: list[str] = []
    submitted = ledger.orders(status=SUBMITTED)
    for row in submitted.filter(submitted["broker"] == broker.name).iter_rows(named=True):
        try:
            order = _broker_order(row)
            venue = broker.order_status(order, row["broker_order_id"])
        except Exception as exc:  # the next run asks again; the run goes on
            logger.warning(
                "%s: order %s could not be looked up: %s", broker.name, row["order_id"], exc
            )
            failed.append(f"order {row['order_id']}: {exc}")
            continue
        found[_record(ledger, broker, row, venue, now)].append(row["order_id"])
    try:
        held = broker.positions()
    except Exception as exc:
        logger.warning("%s: positions could not be read: %s", broker.name, exc)
        failed.append(f"positions: {exc}")
        held = None
    closed = unknown = exited = ()
    if held is not None:
        venue_ids, attached = _venue_ids(ledger, broker)
        still = _still_held(ledger, broker, held, venue_ids)
        closed = _close_gone(ledger, broker, still, now)
        known = VenueFacts(still, venue_ids, attached)
        exited, not_closed = close_due(ledger, broker, known, candles, now)
        failed += not_closed
        unknown = _report_unknown(ledger, broker, held, now)
    return Reconciliation(
        broker.name,
        *(tuple(found[k]) for k in found),
        closed=closed,
        unknown_positions=unknown,
        failed=tuple(failed),
        exited=exited,
    )


def _broker_order(row: dict) -> BrokerOrder:
    return BrokerOrder(
        order_id=row["order_id"],
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        candle_ts=row["ts"],
        side=row["side"],
        quantity=row["quantity"],
        stop_loss=row["stop_loss"],
        take_profit=row["take_profit"],
        timeout_at=row["timeout_at"],
    )


def _record(
    ledger: Ledger, broker: Venue, row: dict, venue: VenueOrder | None, now: datetime
) -> str:
    """Store what the venue says of one SUBMITTED order; which list of the report it joins."""
    order_id = row["order_id"]
    if venue is None:
        logger.warning("%s: order %s is SUBMITTED, but the venue has none", broker.name, order_id)
        return "missing"
    if venue.status in (CANCELLED, REFUSED) and venue.filled_quantity <= 0:
        reason = venue.reason or f"{venue.status.lower()} at {broker.name}"
        where = (orders.c.order_id == order_id) & (orders.c.status == SUBMITTED)
        with ledger.engine.begin() as conn:
            values = {"status": REJECTED, "reason": reason, "updated_at": now}
            conn.execute(orders.update().where(where).values(**values))
        logger.warning("%s: order %s was not filled: %s", broker.name, order_id, reason)
        return "rejected"
    if venue.status == WORKING or venue.filled_quantity <= 0 or venue.fill_price is None:
        return "working"
    if venue.status == PARTIAL:
        logger.warning("%s: order %s filled %g of %g", broker.name, order_id,
                       venue.filled_quantity, row["quantity"])  # fmt: skip
    _book_fill(ledger, broker, row, venue, now)
    return "filled"


def _book_fill(ledger: Ledger, broker: Venue, row: dict, venue: VenueOrder, now: datetime) -> None:
    """The fill as the paper account books one: an OPEN position and its ENTRY fill."""
    ts = venue.fill_ts or now
    common = {"account": broker.account_name, "order_id": row["order_id"], "symbol": row["symbol"]}
    common |= {"side": row["side"], "quantity": venue.filled_quantity, "created_at": now}
    position = common | {
        "timeframe": row["timeframe"],
        "candle_ts": row["ts"],
        "stop_loss": row["stop_loss"],
        "take_profit": row["take_profit"],
        "timeout_at": row["timeout_at"],
        "status": OPEN,
        "entry_ts": ts,
        "entry_price": venue.fill_price,
        "fees": 0.0,  # the venue's costs are in its balance, not itemised here
    }
    fill = common | {"kind": ENTRY, "ts": ts, "price": venue.fill_price, "fee": 0.0}
    try:
        with ledger.engine.begin() as conn:
            conn.execute(positions.insert().values(**position))
            conn.execute(fills.insert().values(**fill, reason=ENTRY))
            order = {"exits_at_venue": _exits_at_venue(broker, row)}
            if venue.venue_id and venue.venue_id != row["broker_order_id"]:
                order["broker_order_id"] = venue.venue_id
            conn.execute(
                orders.update().where(orders.c.order_id == row["order_id"]).values(**order)
            )
    except IntegrityError:  # booked by a concurrent run: what we wanted
        logger.info("%s: the fill of %s was recorded already", broker.name, row["order_id"])


def _exits_at_venue(broker: Venue, row: dict) -> bool | None:
    """Whether the venue took the order's stop-loss / take-profit (the same answer its order
    body was built from); None without exits."""
    if row["stop_loss"] is None and row["take_profit"] is None:
        return None
    return broker.exits_attached(row["symbol"])


def _ledger_ids(ledger: Ledger, broker: Venue) -> tuple[set[str], set[tuple[str, int]]]:
    """The ids (client and venue) of this broker's orders that reached it, and the (symbol,
    side) they hold or wait for: what a venue position may be matched against."""
    frame = ledger.orders()
    frame = frame.filter((frame["broker"] == broker.name) & ~frame["dry_run"])
    ids, sides = set(), set()
    for row in frame.iter_rows(named=True):
        if row["submission_status"] in (SUBMITTED,) and row["status"] != CLOSED:
            sides.add((row["symbol"], row["side"]))
        ids |= {row["order_id"], row["broker_order_id"] or row["order_id"]}
    return ids, sides


def _known(p: VenuePosition, ids: set[str], sides: set[tuple[str, int]]) -> bool:
    if p.ids:
        return any(i in ids for i in p.ids)
    return (normalize_symbol(p.symbol), p.side) in sides  # one position per symbol at the venue


def _report_unknown(
    ledger: Ledger, broker: Venue, held: list[VenuePosition], now: datetime
) -> tuple[str, ...]:
    ids, sides = _ledger_ids(ledger, broker)
    out = []
    for p in held:
        if _known(p, ids, sides):
            continue
        side = "long" if p.side > 0 else "short"
        ids = ", ".join(p.ids) or "-"
        text = f"{p.symbol} {side} {p.quantity:g} @ {p.entry_price:g} (venue ids {ids})"
        message = (
            f"{broker.name} holds a position the ledger does not know: {text}; not adopted "
            "(close it at the venue or leave it: it counts as exposure)"
        )
        logger.warning(message)
        details = {
            "ids": list(p.ids),
            "side": p.side,
            "quantity": p.quantity,
            "price": p.entry_price,
        }
        ledger.record_risk_event(
            "venue_position_unknown", message, symbol=p.symbol, details=details, ts=now
        )
        out.append(text)
    return tuple(out)


def _still_held(
    ledger: Ledger, broker: Venue, held: list[VenuePosition], venue_ids: dict[str, str]
) -> set[str]:
    """The entry ids of this venue account's OPEN ledger positions that the venue still holds
    (all of them where the venue does not list positions: a spot exchange's balances)."""
    frame = ledger.open_positions(account=broker.account_name)
    if not getattr(broker, "lists_positions", True):
        return set(frame["order_id"].to_list())
    held_ids = {i for p in held for i in p.ids}
    held_sides = {(normalize_symbol(p.symbol), p.side) for p in held if not p.ids}
    out = set()
    for row in frame.iter_rows(named=True):
        mine = {row["order_id"], venue_ids.get(row["order_id"], row["order_id"])}
        if mine & held_ids or (row["symbol"], row["side"]) in held_sides:
            out.add(row["order_id"])
    return out


def _close_gone(ledger: Ledger, broker: Venue, still: set[str], now: datetime) -> tuple[str, ...]:
    """Ledger positions of this venue account that the venue no longer holds, and for which no
    exit was asked (that is ``close_due``'s to confirm): CLOSED there."""
    frame = ledger.open_positions(account=broker.account_name)
    closed = []
    for row in frame.iter_rows(named=True):
        if row["order_id"] in still or row["exit_reason"] is not None:
            continue
        where = (positions.c.id == row["id"]) & (positions.c.status == OPEN)
        with ledger.engine.begin() as conn:
            conn.execute(
                positions.update()
                .where(where)
                .values(status=CLOSED, exit_ts=now, exit_reason=VENUE_EXIT)
            )
        logger.info("%s: position of %s closed at the venue", broker.name, row["order_id"])
        closed.append(row["order_id"])
    return tuple(closed)


def _venue_ids(ledger: Ledger, broker: Venue) -> tuple[dict[str, str], dict[str, bool | None]]:
    """Of this broker's orders that reached it: their venue ids, and whether the venue took
    their stop-loss / take-profit."""
    columns = (orders.c.order_id, orders.c.broker_order_id, orders.c.exits_at_venue)
    stmt = sa.select(*columns).where(orders.c.broker == broker.name, orders.c.status != DRY_RUN)
    with ledger.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    ids = {r.order_id: r.broker_order_id for r in rows if r.broker_order_id}
    return ids, {r.order_id: r.exits_at_venue for r in rows}
