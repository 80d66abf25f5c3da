"""The live ledger: signals upserted, orders placed at most once per key (also across a crash
between the insert and the broker), the unique key enforced by the database, queries as frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from brokers.execution import BrokerOrder, OrderRejectedError, fills, positions
from brokers.paper import PaperBroker
from core.config import CostSpec, CostsSettings
from core.settings_live import LiveSettings, PaperSettings
from trading.ledger import Ledger, OrderIntent
from trading.records import OrderRow, SignalRecord, orders, signals

T0 = datetime(2024, 1, 2, 20, tzinfo=UTC)
H = timedelta(hours=1)
BARS = pl.DataFrame(
    {
        "ts": [T0, T0 + H, T0 + 2 * H],
        "open": [99.0, 100.0, 100.5],
        "high": [99.5, 100.8, 102.5],
        "low": [98.8, 99.5, 100.2],
        "close": [99.2, 100.5, 102.2],
        "volume": [1.0, 1.0, 1.0],
    },
    schema_overrides={"ts": pl.Datetime("us", "UTC")},
)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'live' / 'live.db'}")
    ledger.create_all()
    return ledger


@pytest.fixture
def paper(ledger: Ledger) -> PaperBroker:
    broker = PaperBroker(
        ledger.engine,
        PaperSettings(),
        CostsSettings(default=CostSpec(spread_bps=0, slippage_bps=0), by_asset_class={}),
    )
    broker.create_all()
    return broker


def intent(**kw: object) -> OrderIntent:
    terms: dict = {"symbol": "eur/usd", "timeframe": "H1", "candle_ts": T0, "model_version": "3"}
    return OrderIntent(**(terms | {"side": 1, "quantity": 10.0} | kw))


class Flaky:
    """A broker that fails like a crash: before (``when='before'``) or after the real broker
    accepted the order; it counts the submissions that reached the real broker."""

    def __init__(self, inner: PaperBroker, when: str) -> None:
        self.inner, self.when, self.calls = inner, when, 0
        self.name, self.dry_run = inner.name, inner.dry_run

    def submit(self, order: BrokerOrder) -> str:
        if self.when == "before":
            raise ConnectionError("process killed before the broker heard of it")
        self.calls += 1
        self.inner.submit(order)
        raise ConnectionError("process killed before the ledger recorded the acceptance")


class Counting:
    def __init__(self, inner: PaperBroker | None = None, reject: bool = False) -> None:
        self.inner, self.reject, self.calls = inner, reject, 0
        self.name, self.dry_run = "counting", inner is None

    def submit(self, order: BrokerOrder) -> str:
        self.calls += 1
        if self.reject:
            raise OrderRejectedError("market closed")
        return self.inner.submit(order) if self.inner else f"dry-{order.order_id}"


def count(ledger: Ledger, table: sa.Table) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_create_all_is_idempotent_and_keeps_rows(ledger: Ledger) -> None:
    ledger.record_signal(SignalRecord("EURUSD", "1h", T0, "m", "1", "OK"))
    ledger.create_all()
    tables = set(sa.inspect(ledger.engine).get_table_names())
    assert {"signals", "orders", "fills", "positions", "risk_events"} <= tables
    assert count(ledger, signals) == 1


def test_record_signal_upserts_on_its_key(ledger: Ledger) -> None:
    key = {
        "symbol": "eurusd",
        "timeframe": "60m",
        "ts": T0,
        "model_name": "m",
        "model_version": "3",
    }
    first, created = ledger.record_signal(SignalRecord(**key, status="ERROR"))
    assert created
    comps = {"confidence": 0.5, "regime": float("nan"), "at": T0}
    again, created = ledger.record_signal(
        SignalRecord(**key, status="OK", action=1, probability=0.61, tier="BUY", components=comps)
    )
    assert (again, created) == (first, False)
    _, created = ledger.record_signal(SignalRecord(**key, status="OK", shadow=True))
    assert created
    frame = ledger.signals(shadow=False)
    assert frame.height == 1 and frame.schema["ts"] == pl.Datetime("us", "UTC")
    row = frame.row(0, named=True)
    assert (row["symbol"], row["timeframe"], row["status"], row["action"]) == (
        "EURUSD",
        "1h",
        "OK",
        1,
    )
    assert json.loads(row["components"]) == {
        "confidence": 0.5,
        "regime": None,
        "at": T0.isoformat(),
    }
    assert ledger.signals().height == 2
    assert ledger.signals(since=T0 + H).is_empty() and ledger.signals(symbol="GBPUSD").is_empty()
    with pytest.raises(ValueError, match="allowed"):
        ledger.record_signal(SignalRecord(**key, status="MAYBE"))


def test_same_key_twice_places_one_order(ledger: Ledger, paper: PaperBroker) -> None:
    broker = Counting(paper)
    row, created = ledger.place_order_once(intent(), broker)
    assert isinstance(row, OrderRow)
    assert created and row.status == "SUBMITTED" and row.symbol == "EURUSD"
    again, created = ledger.place_order_once(intent(quantity=99.0), broker)
    assert not created and again.order_id == row.order_id and again.quantity == 10.0
    assert broker.calls == 1 and count(ledger, orders) == 1 and count(ledger, positions) == 1
    _, created = ledger.place_order_once(intent(model_version="4"), broker)
    assert created and count(ledger, orders) == 2


def test_the_database_enforces_the_order_key(ledger: Ledger) -> None:
    row = {"symbol": "EURUSD", "timeframe": "1h", "ts": T0, "model_version": "3", "side": 1}
    row |= {"quantity": 1.0, "status": "NEW", "broker": "x", "dry_run": True}
    row |= {"created_at": T0, "updated_at": T0}
    with ledger.engine.begin() as conn:
        conn.execute(orders.insert().values(order_id="a", **row))
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(orders.insert().values(order_id="b", **row))
    assert count(ledger, orders) == 1


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_between_insert_and_submission(ledger: Ledger, paper: PaperBroker, when: str) -> None:
    with pytest.raises(ConnectionError):
        ledger.place_order_once(intent(stop_loss=99.0, take_profit=102.0), Flaky(paper, when))
    (stranded,) = ledger.orders().to_dicts()
    assert stranded["status"] == "NEW"
    assert count(ledger, positions) == (1 if when == "after" else 0)

    row, created = ledger.place_order_once(intent(stop_loss=99.0, take_profit=102.0), paper)
    assert not created and row.status == "SUBMITTED"
    assert row.broker_order_id == f"paper:paper:{row.order_id}"
    paper.update({"EURUSD": BARS.head(2)}, "1h")
    filled = ledger.order(row.order_id)
    assert filled is not None and filled.status == "FILLED" and filled.entry_price == 100.0
    assert filled.submission_status == "SUBMITTED" and ledger.order("no-such-order") is None
    paper.update({"EURUSD": BARS}, "1h")
    paper.update({"EURUSD": BARS}, "1h")
    ledger.place_order_once(intent(stop_loss=99.0, take_profit=102.0), paper)
    (final,) = ledger.orders().to_dicts()
    assert final["status"] == "CLOSED" and final["exit_reason"] == "TAKE_PROFIT"
    assert final["entry_price"] == 100.0 and final["realized_pnl"] == pytest.approx(20.0)
    assert count(ledger, orders) == 1 and count(ledger, positions) == 1
    assert ledger.fills()["kind"].to_list() == ["ENTRY", "EXIT"]
    assert count(ledger, fills) == 2


def test_rejected_order_is_recorded_and_not_resubmitted(ledger: Ledger) -> None:
    broker = Counting(reject=True)
    row, _ = ledger.place_order_once(intent(), broker)
    assert (row.status, row.reason) == ("REJECTED", "market closed")
    row, created = ledger.place_order_once(intent(), broker)
    assert not created and row.status == "REJECTED" and broker.calls == 1
    assert ledger.orders(status="REJECTED").height == 1
    assert ledger.orders(status="FILLED").is_empty()


def test_the_order_of_a_candle_is_its_first_not_rejected(
    ledger: Ledger, paper: PaperBroker
) -> None:
    assert ledger.candle_order("EURUSD", "1h", T0) is None
    ledger.place_order_once(intent(model_version="1"), Counting(reject=True))
    assert ledger.candle_order("EURUSD", "1h", T0) is None  # a rejected order does not count
    placed, _ = ledger.place_order_once(intent(model_version="2"), paper)
    ledger.place_order_once(intent(model_version="3"), paper)
    found = ledger.candle_order("eur/usd", "60m", T0)
    assert found is not None and (found.order_id, found.model_version) == (placed.order_id, "2")
    assert ledger.candle_order("EURUSD", "4h", T0) is None
    assert ledger.candle_order("EURUSD", "1h", T0 + H) is None


def test_dry_run_broker_is_recorded(ledger: Ledger) -> None:
    row, _ = ledger.place_order_once(intent(side=-1), Counting())
    assert row.dry_run is True and row.broker_order_id.startswith("dry-")
    assert row.status == "DRY_RUN" and row.side == -1  # checked and logged, never sent
    assert ledger.orders(status="SUBMITTED").is_empty()  # so never waiting for a fill


def test_queries_return_typed_frames(ledger: Ledger, paper: PaperBroker) -> None:
    assert ledger.orders().schema["ts"] == pl.Datetime("us", "UTC")
    assert ledger.open_positions().is_empty()
    ledger.place_order_once(intent(), paper)
    paper.update({"EURUSD": BARS.head(2)}, "1h")
    open_ = ledger.open_positions()
    assert open_.select("symbol", "side", "quantity", "entry_price").row(0) == (
        "EURUSD",
        1,
        10.0,
        100.0,
    )
    assert ledger.orders(since=T0 + H).is_empty() and ledger.orders(symbol="eurusd").height == 1
    assert ledger.fills(since=T0 + H).height == 1 and ledger.fills(symbol="GBPUSD").is_empty()


def test_risk_events(ledger: Ledger) -> None:
    ledger.record_risk_event("daily_loss", "loss 3.2% ≥ 3%", details={"value": 3.2, "x": None})
    ledger.record_risk_event("cap", "reduced", symbol="btc/usd", ts=T0, details={"v": float("inf")})
    events = ledger.risk_events()
    assert events["kind"].to_list() == ["cap", "daily_loss"]  # by ts
    assert ledger.risk_events(symbol="BTCUSD")["details"].to_list() == ['{"v": null}']
    assert ledger.risk_events(since=T0 + H)["symbol"].to_list() == [None]


def test_order_intent_validation_and_timeout() -> None:
    assert intent(timeout_bars=4).timeout_at == T0 + 4 * H
    assert intent(timeout_at=datetime(2024, 1, 3)).timeout_at == datetime(2024, 1, 3, tzinfo=UTC)
    assert intent().order_id == intent(symbol="EURUSD", timeframe="1h").order_id
    assert intent().order_id != intent(model_version="4").order_id
    for bad in (
        {"side": 0},
        {"quantity": -1.0},
        {"quantity": float("nan")},
        {"stop_loss": 102.0, "take_profit": 99.0},
        {"side": -1, "stop_loss": 99.0, "take_profit": 102.0},
        {"timeout_bars": 0},
        {"timeout_bars": 2, "timeout_at": T0},
    ):
        with pytest.raises(ValueError):
            intent(**bad)


def test_live_settings_default_database(tmp_path: Path) -> None:
    live = LiveSettings()
    url = live.resolved_database_url(tmp_path / "home")
    assert url == f"sqlite:///{(tmp_path / 'home' / 'live' / 'live.db').resolve()}"
    assert live.dry_run and live.execution_broker == "paper"
    ledger = Ledger.from_settings(live, tmp_path / "home")
    ledger.create_all()
    assert (tmp_path / "home" / "live" / "live.db").is_file()
    custom = LiveSettings(database_url="postgresql+psycopg://u@db/candleflow")
    assert custom.resolved_database_url(tmp_path) == "postgresql+psycopg://u@db/candleflow"
    with pytest.raises(ValidationError, match="SQLAlchemy"):
        LiveSettings(database_url="not a url")


def test_unsent_orders_resubmit_and_expire(ledger: Ledger, paper: PaperBroker) -> None:
    with pytest.raises(ConnectionError):
        ledger.place_order_once(intent(), Flaky(paper, "before"))
    ledger.place_order_once(intent(model_version="4"), paper)  # sent: not unsent
    (row,) = ledger.unsent_orders("paper", "60m", ["eur/usd"])
    assert row.status == "NEW" and row.model_version == "3"
    assert ledger.unsent_orders("other-broker", "1h", ["EURUSD"]) == []
    assert ledger.unsent_orders("paper", "1h", ["GBPUSD"]) == []
    assert ledger.expire(row, "too old", {"age_bars": 3.0})
    assert not ledger.expire(row, "again", {})  # only a NEW order expires, once
    expired = ledger.order(row.order_id)
    assert expired is not None and (expired.status, expired.reason) == ("EXPIRED", "too old")
    assert ledger.risk_events()["kind"].to_list() == ["order_expired"]
    assert ledger.unsent_orders("paper", "1h", ["EURUSD"]) == []
    broker = Counting(paper)
    assert ledger.resubmit(row, broker).status == "EXPIRED" and broker.calls == 0  # not sent
    assert count(ledger, positions) == 1  # version 4's only


def test_signal_by_key(ledger: Ledger) -> None:
    record = SignalRecord("EURUSD", "1h", T0, "m", "1", "OK", components={"reasons": ["r"]})
    ledger.record_signal(record)
    stored = ledger.signal(record.key())
    assert stored is not None and stored["components"] == {"reasons": ["r"]}
    assert stored["ts"] == T0 and stored["status"] == "OK"
    assert ledger.signal(record.key() | {"shadow": True}) is None
