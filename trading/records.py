"""What the live ledger records: the signals, orders and risk-events tables with their status
vocabularies, the typed rows written to and read from them (``SignalRecord``, ``OrderRow``), and
``json_safe`` to make values storable as portable JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import TypeAlias, TypedDict

import sqlalchemy as sa

from core.db import UTCDateTime
from core.symbols import normalize_symbol
from core.timeframes import as_utc, parse_timeframe

# Plain JSON, as a JSON column stores it (portable to PostgreSQL).
Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"
# A value bound to a column.
Cell: TypeAlias = "Json | datetime | date"

SIGNAL_STATUSES = ("OK", "SPEC_MISMATCH", "STALE", "NO_MODEL", "ERROR")
# Stored order statuses (the submission); ``Ledger.orders()`` reports FILLED / CLOSED from
# the broker. EXPIRED: never confirmed by the broker and too old to send (``trading.orders``).
# DRY_RUN: a dry-run broker checked and logged it, never sent it (not exposure, never filled).
NEW, SUBMITTED, REJECTED, EXPIRED = "NEW", "SUBMITTED", "REJECTED", "EXPIRED"
DRY_RUN = "DRY_RUN"
FILLED = "FILLED"

LEDGER_METADATA = sa.MetaData()

signals = sa.Table(
    "signals",
    LEDGER_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),  # "" when there is no model
    sa.Column("shadow", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("action", sa.Integer),  # -1 sell, 0 flat, +1 buy
    sa.Column("probability", sa.Float),
    sa.Column("weight", sa.Float),
    sa.Column("tier", sa.String(16)),
    sa.Column("position_multiplier", sa.Float),
    sa.Column("components", sa.JSON),
    sa.Column("explanation", sa.JSON),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "symbol", "timeframe", "ts", "model_version", "shadow", name="uq_signals_key"
    ),
    sa.Index("ix_signals_ts", "ts"),
)
orders = sa.Table(
    "orders",
    LEDGER_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),  # the signal candle's open time
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("side", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Float, nullable=False),
    sa.Column("stop_loss", sa.Float),
    sa.Column("take_profit", sa.Float),
    sa.Column("timeout_at", UTCDateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("broker", sa.String(64), nullable=False),
    sa.Column("broker_order_id", sa.String(200)),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Whether the venue took the order's stop-loss / take-profit with it (False: the live run
    # closes the position when a candle touches them); None: paper, or no exits to attach.
    sa.Column("exits_at_venue", sa.Boolean),
    # At most one order per candle and model version, enforced by the database itself.
    sa.UniqueConstraint("symbol", "timeframe", "ts", "model_version", name="uq_orders_key"),
)
risk_events = sa.Table(
    "risk_events",
    LEDGER_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("symbol", sa.String(32)),  # None: the whole account
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", sa.JSON),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_risk_events_ts", "ts"),
)

# TradingView alerts received by the API's webhook (``trading.alerts``): stored once each (``key``:
# a hash of the alert's content), never executed.
alerts = sa.Table(
    "alerts",
    LEDGER_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),  # "tradingview"
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),  # the alert's time
    sa.Column("candle_ts", UTCDateTime, nullable=False),  # open time of the candle it fired in
    sa.Column("action", sa.String(8), nullable=False),  # buy | sell | flat
    sa.Column("side", sa.Integer, nullable=False),  # +1 buy, -1 sell, 0 flat
    sa.Column("price", sa.Float),
    sa.Column("strategy", sa.String(200), nullable=False),
    sa.Column("payload", sa.JSON),  # the alert as received, its passphrase left out
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("key", name="uq_alerts_key"),
    sa.Index("ix_alerts_symbol_ts", "symbol", "ts"),
)


def json_safe(value: object) -> Json:
    """``value`` as plain JSON (portable to PostgreSQL): NaN/inf → None, numpy scalars → Python
    numbers, datetimes → ISO text, enums → their value, tuples → lists; anything else that JSON
    cannot hold raises ``TypeError``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item):  # a numpy scalar
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be stored as JSON: {value!r}")


class Contribution(TypedDict):
    """One feature's part in a prediction, in log-odds."""

    feature: str
    value: float
    contribution: float


class Explanation(TypedDict):
    """The largest contributions to a live prediction (the signals' ``explanation`` column)."""

    method: str
    families: list[str]
    top: list[Contribution]


@dataclass(frozen=True)
class SignalRecord:
    """One row of the signals table: a model's decision (or a refusal) on a candle. Its key is
    (symbol, timeframe, ts, model_version, shadow); ``model_version`` is "" without a model."""

    symbol: str
    timeframe: str
    ts: datetime
    model_name: str
    model_version: str
    status: str
    shadow: bool = False
    action: int | None = None  # -1 sell, 0 flat, +1 buy
    probability: float | None = None
    weight: float | None = None
    tier: str | None = None
    position_multiplier: float | None = None
    components: Mapping[str, object] | None = None
    explanation: Explanation | None = None

    def __post_init__(self) -> None:
        if self.status not in SIGNAL_STATUSES:
            allowed = ", ".join(SIGNAL_STATUSES)
            raise ValueError(f"signal status {self.status!r}: allowed {allowed}")
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        object.__setattr__(self, "timeframe", parse_timeframe(self.timeframe).name)
        object.__setattr__(self, "ts", as_utc(self.ts))
        object.__setattr__(self, "model_version", str(self.model_version))

    def key(self) -> dict[str, Cell]:
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "ts": self.ts,
            "model_version": self.model_version,
            "shadow": bool(self.shadow),
        }

    def values(self) -> dict[str, Cell]:
        """The columns besides the key, as stored (JSON made portable)."""
        return {
            "model_name": self.model_name,
            "status": self.status,
            "action": None if self.action is None else int(self.action),
            "probability": json_safe(self.probability),
            "weight": json_safe(self.weight),
            "tier": None if self.tier is None else str(json_safe(self.tier)),
            "position_multiplier": json_safe(self.position_multiplier),
            "components": json_safe(self.components),
            "explanation": json_safe(self.explanation),
        }


@dataclass(frozen=True)
class OrderRow:
    """An order as the ledger reports it: its own columns, ``status`` as the broker reports it
    (FILLED / CLOSED once its position opened / closed; else the submission's) and the
    position's entry, exit and costs."""

    id: int
    order_id: str
    symbol: str
    timeframe: str
    ts: datetime  # the signal candle's open time
    model_version: str
    side: int
    quantity: float
    stop_loss: float | None
    take_profit: float | None
    timeout_at: datetime | None
    broker: str
    broker_order_id: str | None
    dry_run: bool
    reason: str | None
    created_at: datetime
    updated_at: datetime
    status: str
    submission_status: str
    entry_ts: datetime | None
    entry_price: float | None
    exit_ts: datetime | None
    exit_price: float | None
    exit_reason: str | None
    realized_pnl: float | None
    fees: float | None
    exits_at_venue: bool | None = None
