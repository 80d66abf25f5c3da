"""A paper account implementing ``brokers.execution.ExecutionBroker``: balance, positions and
fills persisted in the live database, orders filled on later candles.

Fills, exits and costs are the strategy's (``core.strategy``, the same rules and the same
per-instrument cost model the backtest charges, from ``[costs]``): a market order for candle
``t`` fills at the open of the first candle after ``t`` closed; the position then closes on the
first candle (the entry candle included) that gaps beyond or touches its stop-loss or
take-profit (the stop first when both are touched), or opens at or after its ``timeout_at``.
The balance holds realised PnL net of fees (a margin account: notional is not debited); equity
adds the open positions marked to their symbol's last processed close.

Timeframes: one account may be fed candles of several timeframes (live runs of 1h and 4h). A
symbol's mark holds the *close time* of the last candle processed, and only candles opening at or
after it are processed next, so no stretch of time is processed twice (a coarse candle that
overlaps one already processed is skipped: the finer candles cover it). An order fills on the
first processed candle opening at or after its signal candle's close, whatever the timeframe of
the candles that come.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from brokers.execution import (
    CLOSED,
    ENTRY,
    EXECUTION_METADATA,
    EXIT,
    OPEN,
    PENDING,
    AccountSnapshot,
    BrokerOrder,
    OrderRejectedError,
    PositionSnapshot,
    fills,
    paper_accounts,
    paper_marks,
    positions,
)
from core.candles import PRICE_COLUMNS, conform
from core.config import CostsSettings
from core.db import make_engine
from core.settings_live import PaperSettings
from core.strategy import Candle, Costs, exit_for_candle
from core.symbols import normalize_symbol
from core.timeframes import as_utc, parse_timeframe

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """What one :meth:`PaperBroker.update` did."""

    candles: int
    entries: int
    exits: int


@dataclass
class _Account:
    """The paper account's row (``paper_accounts``), changed in place during an update."""

    account: str
    currency: str
    initial_balance: float
    balance: float
    day: date | None
    day_start_equity: float
    peak_equity: float
    updated_at: datetime


@dataclass
class _Position:
    """One row of the positions table, changed in place as it fills and exits."""

    id: int
    account: str
    order_id: str
    symbol: str
    timeframe: str
    candle_ts: datetime
    side: int
    quantity: float
    stop_loss: float | None
    take_profit: float | None
    timeout_at: datetime | None
    status: str
    entry_ts: datetime | None
    entry_price: float | None
    exit_ts: datetime | None
    exit_price: float | None
    exit_reason: str | None
    fees: float
    realized_pnl: float | None
    created_at: datetime

    @property
    def signal_close(self) -> datetime:
        """When the order's signal candle closed: the earliest a fill may open."""
        return self.candle_ts + parse_timeframe(self.timeframe).duration


@dataclass(frozen=True)
class _Fill:
    """An entry or exit of a position, as the fills table books it."""

    kind: str
    ts: datetime
    side: int
    price: float
    fee: float
    reason: str
    realized_pnl: float | None = None  # the exit's gross PnL


@dataclass
class _Book:
    """The mutable working copy of one account during an update (or for a snapshot)."""

    account: _Account
    marks: dict[str, tuple[datetime, float]]
    active: list[_Position]
    changed_marks: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, conn: Connection, account: str) -> _Book:
        row = conn.execute(sa.select(paper_accounts).where(paper_accounts.c.account == account))
        marks = conn.execute(sa.select(paper_marks).where(paper_marks.c.account == account))
        active = conn.execute(
            sa.select(positions)
            .where(positions.c.account == account, positions.c.status.in_([PENDING, OPEN]))
            .order_by(positions.c.id)
        )
        return cls(
            account=_Account(**row.mappings().one()),
            marks={m.symbol: (m.ts, m.close) for m in marks},
            active=[_Position(**p) for p in active.mappings()],
        )

    def price(self, position: _Position) -> float:
        mark = self.marks.get(position.symbol)
        return mark[1] if mark else position.entry_price

    def unrealized(self, position: _Position) -> float:
        return position.side * position.quantity * (self.price(position) - position.entry_price)

    def equity(self) -> float:
        opened = (p for p in self.active if p.status == OPEN)
        return self.account.balance + sum((self.unrealized(p) for p in opened), 0.0)

    def roll_day(self, ts: datetime) -> None:
        if self.account.day is None or ts.date() > self.account.day:
            self.account.day = ts.date()
            self.account.day_start_equity = self.equity()

    def mark(self, symbol: str, candle: Candle, until: datetime) -> None:
        """The symbol's price is ``candle``'s close, known at ``until`` (its close time)."""
        self.marks[symbol] = (until, candle.close)
        self.changed_marks.add(symbol)
        self.account.peak_equity = max(self.account.peak_equity, self.equity())

    def save(self, conn: Connection) -> None:
        a, name = self.account, self.account.account
        conn.execute(
            paper_accounts.update()
            .where(paper_accounts.c.account == name)
            .values(
                balance=a.balance,
                day=a.day,
                day_start_equity=a.day_start_equity,
                peak_equity=a.peak_equity,
                updated_at=datetime.now(UTC),
            )
        )
        for symbol in sorted(self.changed_marks):
            ts, close = self.marks[symbol]
            key = (paper_marks.c.account == name) & (paper_marks.c.symbol == symbol)
            done = conn.execute(paper_marks.update().where(key).values(ts=ts, close=close))
            if done.rowcount == 0:
                conn.execute(
                    paper_marks.insert().values(account=name, symbol=symbol, ts=ts, close=close)
                )

    def snapshot(self) -> AccountSnapshot:
        opened = [p for p in self.active if p.status == OPEN]
        states = tuple(_position_state(p, self.price(p), self.unrealized(p)) for p in opened)
        unrealized = sum((s.unrealized_pnl for s in states), 0.0)
        a = self.account
        return AccountSnapshot(
            account=a.account,
            currency=a.currency,
            initial_balance=a.initial_balance,
            balance=a.balance,
            equity=a.balance + unrealized,
            unrealized_pnl=unrealized,
            day=a.day,
            day_start_equity=a.day_start_equity,
            peak_equity=a.peak_equity,
            as_of=max((ts for ts, _ in self.marks.values()), default=None),
            positions=states,
            pending_orders=sum(p.status == PENDING for p in self.active),
        )


def _position_state(p: _Position, price: float, unrealized: float) -> PositionSnapshot:
    names = {f.name for f in fields(PositionSnapshot)} & {f.name for f in fields(_Position)}
    own = {k: getattr(p, k) for k in names}
    return PositionSnapshot(
        **own, last_price=price, notional=p.quantity * price, unrealized_pnl=unrealized
    )


def _new_candles(
    candles_by_symbol: Mapping[str, pl.DataFrame], marks: Mapping[str, tuple[datetime, float]]
) -> list[tuple[str, Candle]]:
    """Candles opening at or after each symbol's mark (the close of the last one processed),
    across symbols in time order."""
    out: list[tuple[str, Candle]] = []
    for key, frame in candles_by_symbol.items():
        symbol = normalize_symbol(key)
        frame = conform(frame).drop_nulls(["ts", *PRICE_COLUMNS])
        frame = frame.unique("ts", keep="last").sort("ts")
        if symbol in marks:
            frame = frame.filter(pl.col("ts") >= marks[symbol][0])
        for ts, o, h, lo, c in frame.select("ts", *PRICE_COLUMNS).iter_rows():
            out.append((symbol, Candle(as_utc(ts), o, h, lo, c)))
    out.sort(key=lambda item: (item[1].ts, item[0]))
    return out


class PaperBroker:
    """A paper account in the live database, implementing :class:`ExecutionBroker` (the fill
    model is in the module docstring). Concurrent ``update`` calls of one account run one after
    the other (the first claims the account's row); the unique constraints would refuse a
    second booking anyway."""

    name = "paper"
    dry_run = False  # paper trading books simulated fills; it never reaches a market

    def __init__(
        self,
        engine: Engine | str,
        settings: PaperSettings | None = None,
        costs: CostsSettings | None = None,
    ) -> None:
        self.engine = make_engine(engine) if isinstance(engine, str) else engine
        self.settings = settings or PaperSettings()
        self.costs = costs or CostsSettings()  # ``[costs]``: what the backtest charges too
        self.account = self.settings.account
        self._ready = False

    def _costs(self, symbol: str) -> Costs:
        return self.costs.of(symbol)

    def create_all(self) -> None:
        """Create the execution tables and this account (idempotent; every method does it on
        first use)."""
        self._ready = False
        self._ensure_account()

    def _ensure_account(self) -> None:
        if self._ready:
            return
        EXECUTION_METADATA.create_all(self.engine)
        s = self.settings
        row = {"account": self.account, "currency": s.currency, "day": None}
        row |= {k: s.initial_balance for k in ("initial_balance", "balance")}
        row |= {k: s.initial_balance for k in ("day_start_equity", "peak_equity")}
        try:
            with self.engine.begin() as conn:
                where = paper_accounts.c.account == self.account
                if conn.execute(sa.select(paper_accounts.c.account).where(where)).first() is None:
                    conn.execute(
                        paper_accounts.insert().values(**row, updated_at=datetime.now(UTC))
                    )
        except IntegrityError:
            pass  # created meanwhile by another process: what we wanted
        self._ready = True

    def submit(self, order: BrokerOrder) -> str:
        """Accept ``order`` (it fills on the next processed candle after ``candle_ts``); the
        same ``order_id`` again returns the same id without booking a second position."""
        if order.side not in (1, -1) or not order.quantity > 0:
            raise OrderRejectedError(
                f"order {order.order_id}: side must be +1 or -1 and quantity > 0, "
                f"got side={order.side}, quantity={order.quantity}"
            )
        self._ensure_account()
        broker_id = f"{self.name}:{self.account}:{order.order_id}"
        try:
            with self.engine.begin() as conn:
                if self._known(conn, order.order_id):
                    logger.info(
                        "paper: order %s already accepted; not booked twice", order.order_id
                    )
                    return broker_id
                equity = _Book.load(conn, self.account).equity()
                if equity <= 0:
                    raise OrderRejectedError(
                        f"paper account {self.account!r}: equity {equity:.2f} ≤ 0; order "
                        f"{order.order_id} refused"
                    )
                conn.execute(positions.insert().values(**self._position_row(order)))
        except IntegrityError:
            with self.engine.connect() as conn:
                if not self._known(conn, order.order_id):
                    raise
        return broker_id

    def known(self, order_id: str) -> bool:
        """Whether an order of this client id was accepted (booked as a position)."""
        self._ensure_account()
        with self.engine.connect() as conn:
            return self._known(conn, order_id)

    @staticmethod
    def _known(conn: Connection, order_id: str) -> bool:
        where = positions.c.order_id == order_id
        return conn.execute(sa.select(positions.c.id).where(where)).first() is not None

    def _position_row(self, order: BrokerOrder) -> dict[str, object]:
        return asdict(order) | {
            "account": self.account,
            "symbol": normalize_symbol(order.symbol),
            "status": PENDING,
            "fees": 0.0,
            "created_at": datetime.now(UTC),
        }

    def update(self, candles_by_symbol: Mapping[str, pl.DataFrame], timeframe: str) -> UpdateReport:
        """Process the closed ``timeframe`` candles not processed yet (per symbol: from the close
        of the last one processed, module docstring): fill pending orders, close positions, mark
        equity. All of it commits together or not at all, so running it twice on the same
        candles changes nothing."""
        duration = parse_timeframe(timeframe).duration
        self._ensure_account()
        entries = exits = 0
        with self.engine.begin() as conn:
            self._claim(conn)
            book = _Book.load(conn, self.account)
            new = _new_candles(candles_by_symbol, book.marks)
            for symbol, candle in new:
                book.roll_day(candle.ts)
                for position in self._positions_of(book, symbol):
                    if position.status == PENDING and candle.ts >= position.signal_close:
                        self._enter(conn, book, position, candle)
                        entries += 1
                    if position.status == OPEN and self._maybe_exit(conn, book, position, candle):
                        exits += 1
                book.mark(symbol, candle, candle.ts + duration)
            book.save(conn)
        return UpdateReport(candles=len(new), entries=entries, exits=exits)

    def _claim(self, conn: Connection) -> None:
        """Write the account's row before reading anything: a concurrent update (another run,
        thread or process) waits here for this one to commit, then reads what it booked."""
        where = paper_accounts.c.account == self.account
        conn.execute(paper_accounts.update().where(where).values(updated_at=datetime.now(UTC)))

    @staticmethod
    def _positions_of(book: _Book, symbol: str) -> Iterator[_Position]:
        return (p for p in book.active if p.symbol == symbol and p.status != CLOSED)

    def _enter(self, conn: Connection, book: _Book, p: _Position, candle: Candle) -> None:
        costs = self._costs(p.symbol)
        price = costs.fill_price(candle.open, p.side)
        fee = costs.fee(price, p.quantity)
        self._fill(conn, p, _Fill(ENTRY, candle.ts, p.side, price, fee, reason=ENTRY))
        p.status, p.entry_ts, p.entry_price, p.fees = OPEN, candle.ts, price, p.fees + fee
        book.account.balance -= fee
        self._save_position(conn, p, "status", "entry_ts", "entry_price", "fees")

    def _maybe_exit(self, conn: Connection, book: _Book, p: _Position, candle: Candle) -> bool:
        costs = self._costs(p.symbol)
        hit = exit_for_candle(p.side, p.stop_loss, p.take_profit, p.timeout_at, candle, costs)
        if hit is None:
            return False
        price, reason = hit
        fee = costs.fee(price, p.quantity)
        gross = p.side * p.quantity * (price - p.entry_price)
        self._fill(conn, p, _Fill(EXIT, candle.ts, -p.side, price, fee, reason, gross))
        p.status, p.exit_ts, p.exit_price, p.exit_reason = CLOSED, candle.ts, price, reason
        p.fees += fee
        p.realized_pnl = gross - p.fees
        book.account.balance += gross - fee
        self._save_position(
            conn, p, "status", "exit_ts", "exit_price", "exit_reason", "fees", "realized_pnl"
        )
        return True

    def _fill(self, conn: Connection, p: _Position, fill: _Fill) -> None:
        conn.execute(
            fills.insert().values(
                account=self.account,
                order_id=p.order_id,
                symbol=p.symbol,
                quantity=p.quantity,
                created_at=datetime.now(UTC),
                **asdict(fill),
            )
        )

    @staticmethod
    def _save_position(conn: Connection, p: _Position, *columns: str) -> None:
        values = {c: getattr(p, c) for c in columns}
        conn.execute(positions.update().where(positions.c.id == p.id).values(**values))

    def state(self) -> AccountSnapshot:
        """The account now: balance, equity marked to the last closes, open positions."""
        self._ensure_account()
        with self.engine.connect() as conn:
            return _Book.load(conn, self.account).snapshot()
