"""The execution side of a broker: the ``ExecutionBroker`` protocol, the order it receives, the
account snapshots it reports, and the execution tables (positions, fills, paper accounts) in
the live database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, runtime_checkable

import sqlalchemy as sa

from core.db import UTCDateTime
from core.errors import BrokerError

PENDING, OPEN, CLOSED = "PENDING", "OPEN", "CLOSED"
ENTRY, EXIT = "ENTRY", "EXIT"


class OrderRejectedError(BrokerError):
    """The broker refused the order for a reason that resubmitting will not fix."""


EXECUTION_METADATA = sa.MetaData()

paper_accounts = sa.Table(
    "paper_accounts",
    EXECUTION_METADATA,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("initial_balance", sa.Float, nullable=False),
    sa.Column("balance", sa.Float, nullable=False),
    sa.Column("day", sa.Date),
    sa.Column("day_start_equity", sa.Float, nullable=False),
    sa.Column("peak_equity", sa.Float, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
# The last processed candle per symbol: the update cursor and the mark for equity.
paper_marks = sa.Table(
    "paper_marks",
    EXECUTION_METADATA,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("close", sa.Float, nullable=False),
)
# One position per order: PENDING (accepted, not filled), OPEN, CLOSED.
positions = sa.Table(
    "positions",
    EXECUTION_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("candle_ts", UTCDateTime, nullable=False),
    sa.Column("side", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Float, nullable=False),
    sa.Column("stop_loss", sa.Float),
    sa.Column("take_profit", sa.Float),
    sa.Column("timeout_at", UTCDateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("entry_ts", UTCDateTime),
    sa.Column("entry_price", sa.Float),
    sa.Column("exit_ts", UTCDateTime),
    sa.Column("exit_price", sa.Float),
    sa.Column("exit_reason", sa.String(16)),
    sa.Column("fees", sa.Float, nullable=False, default=0.0),
    sa.Column("realized_pnl", sa.Float),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_positions_account_status", "account", "status"),
)
# ``side`` is the fill's direction (+1 buy, -1 sell); ``realized_pnl`` the exit's gross PnL.
fills = sa.Table(
    "fills",
    EXECUTION_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("side", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Float, nullable=False),
    sa.Column("price", sa.Float, nullable=False),
    sa.Column("fee", sa.Float, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("realized_pnl", sa.Float),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # An order is entered once and exited once, whatever runs twice.
    sa.UniqueConstraint("order_id", "kind", name="uq_fills_order_kind"),
)


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """What a broker receives: a market order for the candle ``candle_ts`` (filled after it),
    with optional protective exits. ``order_id`` is the client order id: submitting the same id
    twice must not open twice."""

    order_id: str
    symbol: str
    timeframe: str
    candle_ts: datetime
    side: int
    quantity: float
    stop_loss: float | None = None
    take_profit: float | None = None
    timeout_at: datetime | None = None


@runtime_checkable
class ExecutionBroker(Protocol):
    """Where orders go. ``submit`` is idempotent per ``order_id`` and returns the broker's order
    id; it raises :class:`OrderRejectedError` for a refusal, anything else for a failure worth
    resubmitting. ``known`` says whether the broker holds an order of that client id (accepted
    earlier, whatever became of it): a venue answers it from its order lookup by client id. A
    ``dry_run`` broker sends nothing (real adapters default to it)."""

    @property
    def name(self) -> str: ...

    @property
    def dry_run(self) -> bool: ...

    def submit(self, order: BrokerOrder) -> str: ...

    def known(self, order_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """An open position marked to its symbol's last close."""

    order_id: str
    symbol: str
    timeframe: str
    side: int
    quantity: float
    entry_ts: datetime
    entry_price: float
    last_price: float
    notional: float
    unrealized_pnl: float
    stop_loss: float | None
    take_profit: float | None
    timeout_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """A snapshot of the account for the risk layer. ``balance``: initial balance plus realised
    PnL net of fees; ``equity``: balance plus unrealised PnL; ``day``: the UTC day of the last
    processed candle, ``day_start_equity`` the equity when it began; ``as_of``: the close time of
    the newest candle processed."""

    account: str
    currency: str
    initial_balance: float
    balance: float
    equity: float
    unrealized_pnl: float
    day: date | None
    day_start_equity: float
    peak_equity: float
    as_of: datetime | None
    positions: tuple[PositionSnapshot, ...]
    pending_orders: int

    @property
    def realized_pnl(self) -> float:
        return self.balance - self.initial_balance

    @property
    def daily_pnl(self) -> float:
        return self.equity - self.day_start_equity

    @property
    def drawdown(self) -> float:
        """Fraction below the peak equity (0 at a new high)."""
        return 0.0 if self.peak_equity <= 0 else max(0.0, 1.0 - self.equity / self.peak_equity)
