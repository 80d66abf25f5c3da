"""What the real venues' execution adapters share: the venue's instrument rules an order is checked
and rounded against, the venue's answers (an order found by client id, an open position, the
account), dry run (the order is built, checked and logged, never sent), a resubmission recognised
rather than duplicated, transient failures retried, and the account's day-start and peak equity
kept between runs (the risk layer's daily-loss and drawdown limits need them; venues do not say).

A venue module is small: how it finds the rules, sends an order, looks one up by client id,
closes a position (looked up first: a close is never sent twice) and reads the account and its
positions. Reconciling the ledger with the venue is ``trading.reconcile``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from brokers.base import RetryBudget
from brokers.execution import (
    EXECUTION_METADATA,
    AccountSnapshot,
    BrokerOrder,
    OrderRejectedError,
    PositionSnapshot,
    paper_accounts,
)
from brokers.rest import RateLimitedError
from core.errors import BrokerError, UnknownSymbolError
from core.symbols import normalize_symbol

logger = logging.getLogger(__name__)
T = TypeVar("T")

# What a venue says became of an order.
FILLED, PARTIAL, WORKING, CANCELLED, REFUSED = (
    "FILLED",
    "PARTIAL",
    "WORKING",
    "CANCELLED",
    "REFUSED",
)


class DuplicateClientIdError(BrokerError):
    """The venue refused an order because it already holds one with this client id."""


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """The venue's rules for one instrument: the smallest size, the size step (0: any), the
    decimals of a price (None: unchecked), and whether it can be traded now."""

    symbol: str
    venue_symbol: str
    min_size: float
    size_step: float = 0.0
    price_decimals: int | None = None
    max_size: float | None = None
    tradeable: bool = True

    def size(self, quantity: float) -> float:
        """``quantity`` rounded down to the size step (never up: the risk layer sized it)."""
        if self.size_step <= 0:
            return quantity
        steps = math.floor(quantity / self.size_step + 1e-9)
        decimals = max(0, -math.floor(math.log10(self.size_step)) + 1)
        return round(steps * self.size_step, decimals)

    def price(self, value: float | None) -> float | None:
        if value is None or self.price_decimals is None:
            return value
        return round(value, self.price_decimals)


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue reports it, found by its client id (``order_id``). ``venue_id``:
    the venue's own id, stored in the ledger; ``status``: FILLED, PARTIAL, WORKING, CANCELLED or
    REFUSED; the fill's size, average price and time once filled."""

    order_id: str
    venue_id: str
    status: str
    filled_quantity: float = 0.0
    fill_price: float | None = None
    fill_ts: datetime | None = None
    reason: str = ""
    realized_pnl: float | None = None  # a close's, where the venue reports it


@dataclass(frozen=True, slots=True)
class PositionExit:
    """A ledger position to close at market: the entry's client id (``order_id``) and venue id,
    what it holds, and why (``STOP_LOSS``, ``TAKE_PROFIT``, ``TIMEOUT``). ``exit_id``: the close's
    own client id, derived from the entry's so that a re-run finds it instead of closing twice."""

    order_id: str
    venue_id: str | None
    symbol: str
    timeframe: str
    candle_ts: datetime
    side: int  # the position's; the close trades the other way
    quantity: float
    reason: str

    @property
    def exit_id(self) -> str:
        return f"{self.order_id}-x"

    def order(self) -> BrokerOrder:
        """The close as a market order of its own (for venues that close by a counter-order)."""
        return BrokerOrder(
            self.exit_id, self.symbol, self.timeframe, self.candle_ts, -self.side, self.quantity
        )


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """An open position at the venue. ``ids``: the client ids and venue ids it carries (empty
    where the venue keeps one position per instrument, e.g. Alpaca: matched by symbol)."""

    symbol: str
    side: int
    quantity: float
    entry_price: float
    unrealized_pnl: float = 0.0
    ids: tuple[str, ...] = ()
    opened_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VenueAccount:
    """The venue's account: its id, currency, balance (cash) and equity (with open PnL)."""

    account: str
    currency: str
    balance: float
    equity: float
    pending_orders: int = 0


class VenueExecutionBroker(ABC):
    """One real venue's execution side (module docstring). ``dry_run`` (the default) sends
    nothing; ``engine``: the live database, where the day-start and peak equity are kept."""

    name: ClassVar[str]
    venue: ClassVar[bool] = True  # reconciled each live run, not updated from candles
    # Whether ``positions()`` lists every open position (a spot exchange holds balances instead:
    # a ledger position it does not list is not closed for that).
    lists_positions: bool = True

    def __init__(
        self,
        *,
        dry_run: bool = True,
        engine: Engine | None = None,
        retries: int = 3,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.dry_run = dry_run
        self.engine = engine
        budget = RetryBudget(retries=retries, delay=1.0, max_delay=30.0)
        self.retry_budget = budget if sleep is None else replace(budget, sleep=sleep)
        self._rules: dict[str, InstrumentRules] = {}
        self._marks_ready = False

    # What a venue module provides -----------------------------------------------------------

    @abstractmethod
    def _fetch_rules(self, symbol: str) -> InstrumentRules:
        """The venue's rules for ``symbol`` (canonical)."""

    @abstractmethod
    def _send(self, order: BrokerOrder, rules: InstrumentRules) -> str:
        """Send the (checked, rounded) order; the venue's id. A refusal raises
        :class:`OrderRejectedError`, a client id already used :class:`DuplicateClientIdError`."""

    @abstractmethod
    def _find(self, order: BrokerOrder | str, venue_id: str | None) -> VenueOrder | None:
        """The venue's record of the order with this client id (``order``: the order itself
        where the venue needs more than its id to find it), or None if it has none."""

    @abstractmethod
    def _find_exit(self, exit: PositionExit) -> VenueOrder | None:
        """The venue's record of the close of this position (FILLED once closed), or None if
        the position has not been closed by candleflow."""

    @abstractmethod
    def _send_exit(self, exit: PositionExit) -> VenueOrder:
        """Close the position at market; the close as the venue reports it."""

    def exits_attached(self, symbol: str) -> bool:
        """Whether the venue takes the stop-loss / take-profit with an order of ``symbol``
        (otherwise the live run closes the position when a candle touches them)."""
        return True

    @abstractmethod
    def account(self) -> VenueAccount: ...

    @abstractmethod
    def positions(self) -> list[VenuePosition]: ...

    @property
    @abstractmethod
    def account_name(self) -> str:
        """The account's name in the live database (``<broker>:<venue account id>``)."""

    # Shared behaviour -------------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], T], *, sends: bool = False) -> T:
        """A venue request with the retry budget. A request that places an order is retried only
        on 429 (the venue did not process it); other failures go to the ledger, which sends it
        again on the next run under the same client id (recognised, not duplicated)."""
        if not sends:
            return self.retry_budget.runner(what)(request)
        attempts = self.retry_budget.retries
        while True:
            try:
                return request()
            except RateLimitedError as exc:
                wait = exc.retry_after or self.retry_budget.delay
                if attempts <= 0 or wait > self.retry_budget.max_delay:
                    raise
                attempts -= 1
                logger.warning("%s: %s; retrying in %.1f s", what, exc, wait)
                self.retry_budget.sleep(wait)

    def rules(self, symbol: str) -> InstrumentRules:
        canonical = normalize_symbol(symbol)
        if canonical not in self._rules:
            call = lambda: self._fetch_rules(canonical)  # noqa: E731
            self._rules[canonical] = self._call(f"{self.name} rules {canonical}", call)
        return self._rules[canonical]

    def prepare(self, order: BrokerOrder) -> tuple[BrokerOrder, InstrumentRules]:
        """The order checked against the venue's rules: size rounded down to the step, prices to
        the venue's decimals; :class:`OrderRejectedError` saying which rule it breaks."""
        if order.side not in (1, -1) or not order.quantity > 0:
            raise OrderRejectedError(
                f"order {order.order_id}: side must be +1 or -1 and quantity > 0, "
                f"got side={order.side}, quantity={order.quantity}"
            )
        try:
            rules = self.rules(order.symbol)
        except UnknownSymbolError as exc:  # sending it again will not make the venue list it
            raise OrderRejectedError(f"order {order.order_id}: {exc}") from None
        where = f"{self.name} {rules.venue_symbol}: order {order.order_id}"
        if not rules.tradeable:
            raise OrderRejectedError(f"{where}: the venue says the instrument is not tradeable")
        size = rules.size(order.quantity)
        if size < rules.min_size or size <= 0:
            raise OrderRejectedError(
                f"{where}: size {order.quantity:g} rounds to {size:g}, below the venue's minimum "
                f"{rules.min_size:g} (step {rules.size_step:g})"
            )
        if rules.max_size is not None and size > rules.max_size:
            raise OrderRejectedError(f"{where}: size {size:g} above the maximum {rules.max_size:g}")
        prepared = replace(
            order,
            symbol=normalize_symbol(order.symbol),
            quantity=size,
            stop_loss=rules.price(order.stop_loss),
            take_profit=rules.price(order.take_profit),
        )
        return prepared, rules

    def submit(self, order: BrokerOrder) -> str:
        """Check the order; in dry run log it and return ``dry-…``; else send it once: an order
        the venue already holds under this client id (a resubmission after a crash) is reported,
        not sent again."""
        prepared, rules = self.prepare(order)
        if self.dry_run:
            logger.info("%s DRY RUN (not sent): %s", self.name, describe(prepared, rules))
            return f"dry-{self.name}:{order.order_id}"
        found = self.order_status(prepared)
        if found is not None:
            logger.info("%s: order %s is at the venue already (%s, %s); not sent again",
                        self.name, order.order_id, found.venue_id, found.status)  # fmt: skip
            return found.venue_id
        logger.info("%s: sending %s", self.name, describe(prepared, rules))
        try:
            return self._call(
                f"{self.name} order {order.order_id}",
                lambda: self._send(prepared, rules),
                sends=True,
            )
        except DuplicateClientIdError as exc:
            found = self.order_status(prepared)
            if found is None:
                raise BrokerError(f"{exc}; yet no order of that client id can be found") from None
            logger.info("%s: order %s was at the venue already", self.name, order.order_id)
            return found.venue_id

    def close(self, exit: PositionExit) -> VenueOrder | None:
        """Close a position at market, once: in dry run log the close and return None; else a
        close the venue already made (a re-run after a crash) is reported, not sent again."""
        what = f"{self.name} close {exit.order_id}"
        side = "SELL" if exit.side > 0 else "BUY"
        text = f"{side} {exit.quantity:g} {exit.symbol} at market ({exit.reason})"
        text += f", closes {exit.order_id}"
        if self.dry_run:
            logger.info("%s DRY RUN (not sent): %s", self.name, text)
            return None
        found = self._call(what, lambda: self._find_exit(exit))
        if found is not None:
            logger.info("%s: the close of %s is at the venue already (%s); not sent again",
                        self.name, exit.order_id, found.status)  # fmt: skip
            return found
        logger.info("%s: sending %s, client id %s", self.name, text, exit.exit_id)
        return self._call(what, lambda: self._send_exit(exit), sends=True)

    def order_status(
        self, order: BrokerOrder | str, venue_id: str | None = None
    ) -> VenueOrder | None:
        """The venue's record of an order (by client id, else by its venue id), or None."""
        order_id = order if isinstance(order, str) else order.order_id
        return self._call(f"{self.name} order {order_id}", lambda: self._find(order, venue_id))

    def known(self, order_id: str) -> bool:
        return self.order_status(order_id) is not None

    def state(self, now: datetime | None = None) -> AccountSnapshot:
        """The venue's account and open positions, with the day-start and peak equity kept in
        the live database (a new UTC day starts from the equity first seen on it)."""
        now = now or datetime.now(UTC)
        account = self._call(f"{self.name} account", self.account)
        held = self._call(f"{self.name} positions", self.positions)
        day, day_start, peak, initial = self._marks(account, now)
        return AccountSnapshot(
            account=self.account_name,
            currency=account.currency,
            initial_balance=initial,
            balance=account.balance,
            equity=account.equity,
            unrealized_pnl=account.equity - account.balance,
            day=day,
            day_start_equity=day_start,
            peak_equity=peak,
            as_of=now,
            positions=tuple(_position_snapshot(p, now) for p in held),
            pending_orders=account.pending_orders,
        )

    def _marks(self, account: VenueAccount, now: datetime) -> tuple:
        """(day, day-start equity, peak equity, first equity seen), updated for ``now``."""
        equity, today = account.equity, now.date()
        if self.engine is None:
            return today, equity, equity, equity
        if not self._marks_ready:
            EXECUTION_METADATA.create_all(self.engine)
            self._marks_ready = True
        key = paper_accounts.c.account == self.account_name
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(paper_accounts).where(key)).mappings().first()
            if row is None:
                values = {"account": self.account_name, "currency": account.currency}
                values |= {"initial_balance": equity, "balance": account.balance, "day": today}
                values |= {"day_start_equity": equity, "peak_equity": equity, "updated_at": now}
                # Created meanwhile by another run: theirs stands.
                with contextlib.suppress(IntegrityError):
                    conn.execute(paper_accounts.insert().values(**values))
                return today, equity, equity, equity
            new_day = row["day"] is None or today > row["day"]
            day_start = equity if new_day else row["day_start_equity"]
            peak = max(row["peak_equity"], equity)
            conn.execute(
                paper_accounts.update()
                .where(key)
                .values(
                    balance=account.balance,
                    day=today if new_day else row["day"],
                    day_start_equity=day_start,
                    peak_equity=peak,
                    updated_at=now,
                )
            )
            return (today if new_day else row["day"]), day_start, peak, row["initial_balance"]


def describe(order: BrokerOrder, rules: InstrumentRules) -> str:
    """One line for the log and ``broker check``: what would be (or is) sent."""
    side = "BUY" if order.side > 0 else "SELL"
    exits = f" SL {order.stop_loss} TP {order.take_profit}" if order.stop_loss else ""
    return (
        f"{side} {order.quantity:g} {rules.venue_symbol} ({order.symbol}) at market{exits}, "
        f"client id {order.order_id}"
    )


def _position_snapshot(p: VenuePosition, now: datetime) -> PositionSnapshot:
    mark = p.entry_price + (p.unrealized_pnl / (p.side * p.quantity) if p.quantity else 0.0)
    return PositionSnapshot(
        order_id=p.ids[0] if p.ids else "",
        symbol=p.symbol,
        timeframe="",
        side=p.side,
        quantity=p.quantity,
        entry_ts=p.opened_at or now,
        entry_price=p.entry_price,
        last_price=mark,
        notional=p.quantity * mark,
        unrealized_pnl=p.unrealized_pnl,
        stop_loss=None,
        take_profit=None,
        timeout_at=None,
    )


def rejected(venue: str, order_id: str, said: str) -> OrderRejectedError:
    return OrderRejectedError(f"{venue}: order {order_id} refused by the venue: {said}")
