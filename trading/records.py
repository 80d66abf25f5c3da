"""What the live ledger records: the signals, orders and risk-events tables with their status
vocabularies, and ``json_safe`` to make values storable as portable JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa

from core.db import UTCDateTime

SIGNAL_STATUSES = ("OK", "SPEC_MISMATCH", "STALE", "NO_MODEL", "ERROR")
# Stored order statuses (the submission); ``Ledger.orders()`` reports FILLED / CLOSED from
# the broker.
NEW, SUBMITTED, REJECTED = "NEW", "SUBMITTED", "REJECTED"
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


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON (portable to PostgreSQL): NaN/inf → None, numpy scalars → Python
    numbers, datetimes → ISO text, enums → their value, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
