"""The live stage's records in one database (SQLite in the state directory, or any SQLAlchemy URL):
signals, orders (placed at most once per candle and model version) and risk events. Their tables
are in ``trading.records``; fills and positions are the execution broker's own tables
(``brokers.execution``), which the ledger reads. Opening the ledger brings the schema of both to
the newest revision (``trading.migrations``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from brokers.execution import (
    CLOSED,
    OPEN,
    BrokerOrder,
    ExecutionBroker,
    OrderRejectedError,
    fills,
    positions,
)
from core.db import UTCDateTime, make_engine
from core.settings_live import LiveSettings
from core.symbols import normalize_symbol
from core.timeframes import as_utc, parse_timeframe
from trading import migrations
from trading.records import (
    DRY_RUN,
    EXPIRED,
    FILLED,
    NEW,
    REJECTED,
    SUBMITTED,
    Cell,
    OrderRow,
    SignalRecord,
    json_safe,
    orders,
    risk_events,
    signals,
)

logger = logging.getLogger(__name__)

_ORDER_KEY = ("symbol", "timeframe", "ts", "model_version")
_ORDER_TERMS = ("side", "quantity", "stop_loss", "take_profit", "timeout_at")


@dataclass(frozen=True)
class OrderIntent:
    """A market order for the bar that opened at ``candle_ts``, from ``model_version``. The
    time-out is ``timeout_at`` or ``candle_ts + timeout_bars`` bars (the position closes at the
    close of the bar opening then); give one of them or neither."""

    symbol: str
    timeframe: str
    candle_ts: datetime
    model_version: str
    side: int
    quantity: float
    stop_loss: float | None = None
    take_profit: float | None = None
    timeout_bars: int | None = None
    timeout_at: datetime | None = None

    def __post_init__(self) -> None:
        tf = parse_timeframe(self.timeframe)
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        object.__setattr__(self, "timeframe", tf.name)
        object.__setattr__(self, "candle_ts", as_utc(self.candle_ts))
        object.__setattr__(self, "model_version", str(self.model_version))
        if self.side not in (1, -1):
            raise ValueError(f"order side must be +1 or -1, got {self.side}")
        if not (math.isfinite(self.quantity) and self.quantity > 0):
            raise ValueError(f"order quantity must be a finite number > 0, got {self.quantity}")
        self._check_exits()
        if self.timeout_bars is not None:
            if self.timeout_at is not None or self.timeout_bars < 1:
                raise ValueError("give timeout_bars (≥ 1) or timeout_at, not both")
            timeout_at = self.candle_ts + self.timeout_bars * tf.duration
            object.__setattr__(self, "timeout_at", timeout_at)
        elif self.timeout_at is not None:
            object.__setattr__(self, "timeout_at", as_utc(self.timeout_at))

    def _check_exits(self) -> None:
        stop, take = self.stop_loss, self.take_profit
        for name, value in (("stop_loss", stop), ("take_profit", take)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite price > 0, got {value}")
        if stop is not None and take is not None and self.side * (take - stop) <= 0:
            where = "below" if self.side > 0 else "above"
            raise ValueError(f"the stop-loss {stop} must be {where} the take-profit {take}")

    @property
    def key(self) -> tuple[str, str, datetime, str]:
        return self.symbol, self.timeframe, self.candle_ts, self.model_version

    @property
    def order_id(self) -> str:
        """The client order id, derived from the key: a broker that deduplicates client ids
        cannot open twice even if the ledger were lost."""
        text = "|".join(
            [self.symbol, self.timeframe, self.candle_ts.isoformat(), self.model_version]
        )
        return "cf-" + hashlib.sha256(text.encode()).hexdigest()[:29]


def _dtype(sa_type: sa.types.TypeEngine[object]) -> pl.DataType:
    if isinstance(sa_type, UTCDateTime):
        return pl.Datetime("us", "UTC")
    for base, dtype in (
        (sa.Boolean, pl.Boolean()),
        (sa.Integer, pl.Int64()),
        (sa.Float, pl.Float64()),
        (sa.Date, pl.Date()),
    ):
        if isinstance(sa_type, base):
            return dtype
    return pl.String()  # text, and JSON as JSON text


def _now() -> datetime:
    return datetime.now(UTC)


def _risk_event(
    kind: str,
    reason: str,
    symbol: str | None,
    details: Mapping[str, object] | None,
    ts: datetime | None,
) -> sa.Insert:
    now = _now()
    return risk_events.insert().values(
        ts=as_utc(ts) if ts else now,
        symbol=normalize_symbol(symbol) if symbol else None,
        kind=kind,
        reason=reason,
        details=json_safe(details),
        created_at=now,
    )


class Ledger:
    """The live database, brought to the newest schema when opened (``trading.migrations``:
    its tables and the execution broker's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrations.upgrade(self.engine)

    @classmethod
    def from_settings(cls, live: LiveSettings, home: Path) -> Ledger:
        return cls(live.resolved_database_url(home))

    def create_all(self) -> None:
        """Bring the schema to the newest revision (done on opening already). Rows are kept."""
        migrations.upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def record_signal(self, record: SignalRecord) -> tuple[int, bool]:
        """Insert the signal, or update the row with the same (symbol, timeframe, ts,
        model_version, shadow); returns (row id, created)."""
        key, values = record.key(), record.values() | {"updated_at": _now()}
        try:
            with self.engine.begin() as conn:
                row = signals.insert().values(**key, **values, created_at=values["updated_at"])
                return conn.execute(row).inserted_primary_key[0], True
        except IntegrityError:
            where = sa.and_(*(signals.c[k] == v for k, v in key.items()))
            with self.engine.begin() as conn:
                if conn.execute(signals.update().where(where).values(**values)).rowcount == 0:
                    raise  # not a duplicate key: a real integrity problem
                return conn.execute(sa.select(signals.c.id).where(where)).scalar_one(), False

    def place_order_once(
        self, intent: OrderIntent, broker: ExecutionBroker
    ) -> tuple[OrderRow, bool]:
        """The order for ``intent.key``, placed at most once; returns (order row, created).

        The row is committed (status NEW) before the broker hears of it; an order still NEW
        (an earlier run stopped in between) is submitted again under the same client order id,
        which the broker deduplicates. A refusal is stored as REJECTED; any other failure
        leaves the order NEW for the next run (``trading.orders.recover_orders``)."""
        created = self._insert_order(intent, broker)
        row = self._order_for_key(intent)
        if row.status == NEW:
            self._submit(row, broker)
            row = self._order_for_key(intent)
        elif not created:
            logger.info(
                "order %s for %s already %s: not placed again", row.order_id, intent.key, row.status
            )
        if not created and (row.side, row.quantity) != (intent.side, intent.quantity):
            logger.warning(
                "order %s exists with side %s quantity %s; the new intent (%s, %s) was ignored",
                row.order_id,
                row.side,
                row.quantity,
                intent.side,
                intent.quantity,
            )
        return row, created

    def _insert_order(self, intent: OrderIntent, broker: ExecutionBroker) -> bool:
        now = _now()
        values: dict[str, Cell] = dict(zip(_ORDER_KEY, intent.key, strict=True))
        values |= {k: getattr(intent, k) for k in _ORDER_TERMS} | {"order_id": intent.order_id}
        values |= {"broker": broker.name, "dry_run": broker.dry_run, "status": NEW}
        try:
            with self.engine.begin() as conn:
                conn.execute(orders.insert().values(**values, created_at=now, updated_at=now))
        except IntegrityError:
            return False
        return True

    def _submit(self, row: OrderRow, broker: ExecutionBroker) -> None:
        terms = {k: getattr(row, k) for k in ("order_id", "symbol", "timeframe", *_ORDER_TERMS)}
        order = BrokerOrder(candle_ts=row.ts, **terms)
        values: dict[str, Cell] = {"broker": broker.name, "dry_run": broker.dry_run}
        try:
            sent = broker.submit(order)
            values |= {"status": DRY_RUN if broker.dry_run else SUBMITTED, "broker_order_id": sent}
        except OrderRejectedError as exc:
            logger.warning("order %s rejected by %s: %s", order.order_id, broker.name, exc)
            values |= {"status": REJECTED, "reason": str(exc)}
        where = (orders.c.order_id == order.order_id) & (orders.c.status == NEW)
        with self.engine.begin() as conn:
            done = conn.execute(orders.update().where(where).values(**values, updated_at=_now()))
        if done.rowcount == 0:  # expired meanwhile: cannot happen within the order's age limit
            logger.warning("order %s was no longer NEW when %s answered", row.order_id, broker.name)

    def unsent_orders(self, broker: str, timeframe: str, symbols: list[str]) -> list[OrderRow]:
        """Orders of ``broker`` it never confirmed (stored NEW) of these symbols, oldest first."""
        stmt = self._orders_select().where(
            orders.c.status == NEW,
            orders.c.broker == broker,
            orders.c.timeframe == parse_timeframe(timeframe).name,
            orders.c.symbol.in_([normalize_symbol(s) for s in symbols]),
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(orders.c.ts, orders.c.id)).mappings().all()
        return [OrderRow(**row) for row in rows]

    def resubmit(self, row: OrderRow, broker: ExecutionBroker) -> OrderRow:
        """Send an unsent order again under its client order id, unless it is no longer NEW
        (sent or expired meanwhile); the order as now stored."""
        current = self.order(row.order_id)
        if current is not None and current.submission_status == NEW:
            self._submit(current, broker)
            current = self.order(row.order_id)
        if current is None:
            raise LookupError(f"no order {row.order_id}")
        return current

    def expire(self, row: OrderRow, reason: str, details: Mapping[str, object]) -> bool:
        """Mark an unsent order EXPIRED with ``reason`` and an ``order_expired`` risk event."""
        where = (orders.c.order_id == row.order_id) & (orders.c.status == NEW)
        values = {"status": EXPIRED, "reason": reason, "updated_at": _now()}
        with self.engine.begin() as conn:
            done = conn.execute(orders.update().where(where).values(**values)).rowcount
            if done:
                conn.execute(_risk_event("order_expired", reason, row.symbol, details, row.ts))
        return bool(done)

    def record_risk_event(
        self,
        kind: str,
        reason: str,
        *,
        symbol: str | None = None,
        details: Mapping[str, object] | None = None,
        ts: datetime | None = None,
    ) -> int:
        """Store one halt, refusal or reduction; returns its row id."""
        with self.engine.begin() as conn:
            row = _risk_event(kind, reason, symbol, details, ts)
            return conn.execute(row).inserted_primary_key[0]

    # Queries ------------------------------------------------------------------------------

    def _orders_select(self) -> sa.Select:
        status = sa.case(
            (positions.c.status == OPEN, FILLED),
            (positions.c.status == CLOSED, CLOSED),
            else_=orders.c.status,
        )
        own = [c for c in orders.c if c.name != "status"]
        extra = ["entry_ts", "entry_price", "exit_ts", "exit_price", "exit_reason", "realized_pnl"]
        return sa.select(
            *own,
            status.label("status"),
            orders.c.status.label("submission_status"),
            *(positions.c[c] for c in extra),
            positions.c.fees.label("fees"),
        ).select_from(orders.outerjoin(positions, positions.c.order_id == orders.c.order_id))

    def _order_for_key(self, intent: OrderIntent) -> OrderRow:
        where = sa.and_(*(orders.c[k] == v for k, v in zip(_ORDER_KEY, intent.key, strict=True)))
        order = self._first_order(self._orders_select().where(where))
        if order is None:
            raise LookupError(f"no order for {intent.key}")  # it was inserted just before
        return order

    def _first_order(self, stmt: sa.Select) -> OrderRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else OrderRow(**row)

    def order(self, order_id: str) -> OrderRow | None:
        """One order with its reported status, or None."""
        return self._first_order(self._orders_select().where(orders.c.order_id == order_id))

    def candle_order(self, symbol: str, timeframe: str, ts: datetime) -> OrderRow | None:
        """The first order (not rejected) of this candle, whichever model version placed it."""
        stmt = self._orders_select().where(
            orders.c.symbol == normalize_symbol(symbol),
            orders.c.timeframe == parse_timeframe(timeframe).name,
            orders.c.ts == as_utc(ts),
        )
        stmt = stmt.where(stmt.selected_columns.status != REJECTED)
        return self._first_order(stmt.order_by(orders.c.id))

    def signal(self, key: Mapping[str, Cell]) -> dict[str, Cell] | None:
        """The stored signal of ``key`` (``SignalRecord.key()``), JSON columns decoded, or None."""
        where = sa.and_(*(signals.c[k] == v for k, v in key.items()))
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(signals).where(where)).mappings().first()
        return None if row is None else dict(row)

    def orders(
        self, since: datetime | None = None, symbol: str | None = None, status: str | None = None
    ) -> pl.DataFrame:
        """Orders (candle ``ts`` ≥ ``since``), with the status reported by the broker."""
        stmt = self._filtered(self._orders_select(), orders, since, symbol)
        if status is not None:
            stmt = stmt.where(stmt.selected_columns.status == status)
        return self._frame(stmt.order_by(orders.c.ts, orders.c.id))

    def signals(
        self, since: datetime | None = None, symbol: str | None = None, shadow: bool | None = None
    ) -> pl.DataFrame:
        """Signals (candle ``ts`` ≥ ``since``); JSON columns as JSON text."""
        stmt = self._filtered(sa.select(signals), signals, since, symbol)
        if shadow is not None:
            stmt = stmt.where(signals.c.shadow == shadow)
        return self._frame(stmt.order_by(signals.c.ts, signals.c.id))

    def fills(self, since: datetime | None = None, symbol: str | None = None) -> pl.DataFrame:
        stmt = self._filtered(sa.select(fills), fills, since, symbol)
        return self._frame(stmt.order_by(fills.c.ts, fills.c.id))

    def positions(self, status: str | None = None, account: str | None = None) -> pl.DataFrame:
        """The broker's positions (PENDING, OPEN, CLOSED), optionally of one status/account."""
        stmt = sa.select(positions)
        if status is not None:
            stmt = stmt.where(positions.c.status == status)
        if account is not None:
            stmt = stmt.where(positions.c.account == account)
        return self._frame(stmt.order_by(positions.c.id))

    def open_positions(self, account: str | None = None) -> pl.DataFrame:
        return self.positions(OPEN, account)

    def risk_events(self, since: datetime | None = None, symbol: str | None = None) -> pl.DataFrame:
        stmt = self._filtered(sa.select(risk_events), risk_events, since, symbol)
        return self._frame(stmt.order_by(risk_events.c.ts, risk_events.c.id))

    @staticmethod
    def _filtered(
        stmt: sa.Select, table: sa.Table, since: datetime | None, symbol: str | None
    ) -> sa.Select:
        if since is not None:
            stmt = stmt.where(table.c.ts >= as_utc(since))
        if symbol is not None:
            stmt = stmt.where(table.c.symbol == normalize_symbol(symbol))
        return stmt

    def _frame(self, stmt: sa.Select) -> pl.DataFrame:
        columns = list(stmt.selected_columns)
        schema = {c.name: _dtype(c.type) for c in columns}
        json_columns = [c.name for c in columns if isinstance(c.type, sa.JSON)]
        with self.engine.connect() as conn:
            rows: list[dict[str, Cell]] = [dict(r) for r in conn.execute(stmt).mappings()]
        for row in rows:
            for name in json_columns:
                if row[name] is not None:
                    row[name] = json.dumps(row[name], sort_keys=True)
        return pl.DataFrame(rows, schema=schema)
