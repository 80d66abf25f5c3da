"""One execution contract run over the paper account and every venue adapter (OANDA, Alpaca,
Capital.com, ccxt), through the ledger as the live stage uses it, against the fake venues of
``exec_venues.py`` (no network): an order is submitted once under the ledger's client id, a
resubmission after a crash and a "duplicate" answer are recognised, a refusal is REJECTED with a
reason, an order left SUBMITTED gets its fill booked by the next run (a venue: reconciliation;
the paper account: its update from the candle after the signal), the account snapshot holds the
fill. Venues only: dry run checks and logs but sends nothing, sizes are rounded to the venue's
rules, partial fills, positions the ledger does not know are reported, a 401 is a clear error, a
429 is retried, a planted secret never shows.

Not for paper, and why: its ``dry_run`` is always False whatever ``live.dry_run`` says (it
never sends anywhere; a test pins that); it has no instrument rules (sizes as given), no
network (no 401/429) and no credentials (no secret); it fills the whole quantity at the next
open (no partial fill); it is the ledger's own book (no position it could hold unknown)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt
import httpx
import polars as pl
import pytest
import sqlalchemy as sa

from brokers.alpaca_execution import AlpacaExecution
from brokers.capital_execution import CapitalExecution
from brokers.ccxt_execution import CcxtExecution
from brokers.execution import (
    AccountSnapshot,
    BrokerOrder,
    OrderRejectedError,
    paper_accounts,
    positions,
)
from brokers.oanda_execution import OandaExecution
from brokers.paper import PaperBroker
from brokers.registry import broker_infos, create_execution_broker
from brokers.rest import BrokerAuthError
from brokers.venue_execution import VenueExecutionBroker
from core.config import CostSpec, CostsSettings, Settings
from core.settings_live import LiveSettings, PaperSettings
from tests.brokers.exec_venues import (
    OANDA_ACCOUNT,
    FakeAlpacaExec,
    FakeCapitalExec,
    FakeCcxtExchange,
    FakeOandaExec,
)
from tests.brokers.venues import SECRET
from trading.ledger import Ledger, OrderIntent
from trading.reconcile import reconcile

T0 = datetime(2024, 3, 4, 9, tzinfo=UTC)
H = timedelta(hours=1)
FILL_PRICE = 1.08512  # where every fake venue fills, and the paper fill candle's open
VENUES = ["oanda", "alpaca", "capital", "ccxt"]
ALL = [*VENUES, "paper"]
# The paper account without costs, so that it fills at the open exactly.
FREE = CostsSettings(default=CostSpec(fee_bps=0, spread_bps=0, slippage_bps=0), by_asset_class={})


def _hourly(*rows: tuple[float, float, float, float], start: datetime) -> pl.DataFrame:
    """Hourly candles from ``start``: one (open, high, low, close) per row."""
    return pl.DataFrame(
        {
            "ts": [start + i * H for i in range(len(rows))],
            **{k: [r[i] for r in rows] for i, k in enumerate(("open", "high", "low", "close"))},
            "volume": [1.0] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


class PaperMarket:
    """The paper account's side of the rig, shaped like a fake venue: the candles a live run
    feeds its update (``mode`` "work": only the signal candle T0 has closed, so an order waits;
    "fill": the next one too, at whose open the order fills) and the account's book."""

    def __init__(self) -> None:
        self.mode = "fill"
        self.engine: Any = None  # the live database, set when a broker is made

    def candles(self) -> pl.DataFrame:
        quiet = (FILL_PRICE, 1.086, 1.084, 1.0855)  # touches neither stop-loss nor take-profit
        return _hourly(*[quiet] * (1 if self.mode == "work" else 2), start=T0)

    def fill_working(self) -> None:
        self.mode = "fill"

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        """What the account booked (one position per accepted order), by client id."""
        where = positions.c.account == PaperSettings().account
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(positions).where(where).order_by(positions.c.id))
            return {r["order_id"]: dict(r) for r in rows.mappings()}

    def order_requests(self) -> list[dict[str, Any]]:
        return list(self.orders.values())

    def wipe_out(self, ledger: Ledger, broker: PaperBroker) -> None:
        """Bring the account's equity below zero: a huge long, and the candle before T0 crashes."""
        loser = OrderIntent("EURUSD", "1h", T0 - 2 * H, "loser", 1, 1e6)
        ledger.place_order_once(loser, broker)
        crash = (FILL_PRICE, FILL_PRICE, 0.5, 0.5)
        broker.update({"EURUSD": _hourly(crash, crash, start=T0 - 2 * H)}, "1h")
        assert broker.state().equity < 0


@dataclass
class Rig:
    """One venue's fake (or the paper market), a factory of its broker and an order that needs
    rounding at a venue."""

    name: str
    fake: Any
    make: Callable[..., Any]
    symbol: str
    quantity: float  # rounds down to ``sent_quantity`` (paper: no rules, sent as given)
    sent_quantity: float
    stop_loss: float
    take_profit: float
    sleeps: list[float]

    def sent(self) -> list[Any]:
        """The order requests the venue saw (paper: the orders its account booked)."""
        return self.fake.order_requests()

    @property
    def book(self) -> Any:
        """Where the venue keeps its orders and its ``mode`` (ccxt: behind the exchange)."""
        return self.fake.book if self.name == "ccxt" else self.fake

    def settle(self, ledger: Ledger, broker: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What a live run does first (``LiveRuntime.open_run``): a venue reconciled, the paper
        account updated from the candles closed since; (orders found filled, still waiting)."""
        if getattr(broker, "venue", False):
            done = reconcile(ledger, broker)
            return done.filled, done.working
        waiting = ledger.orders(status="SUBMITTED")["order_id"].to_list()
        broker.update({self.symbol: self.fake.candles()}, "1h")
        status = {o: ledger.order(o).status for o in waiting}
        return tuple(o for o in waiting if status[o] == "FILLED"), tuple(
            o for o in waiting if status[o] == "SUBMITTED"
        )

    def refuse_next(self, ledger: Ledger, broker: Any) -> None:
        """Make the next order refused: the venue says no; the paper account has lost it all."""
        if self.name == "paper":
            self.fake.wipe_out(ledger, broker)
        else:
            self.book.mode = "refuse"

    def intent(self, model_version: str = "1", candle: datetime = T0) -> OrderIntent:
        return OrderIntent(
            self.symbol,
            "1h",
            candle,
            model_version,
            1,
            self.quantity,
            self.stop_loss,
            self.take_profit,
        )


def _rig(name: str, secret: str = SECRET) -> Rig:
    sleeps: list[float] = []
    common = {"sleep": sleeps.append}
    if name == "paper":
        market = PaperMarket()

        def make_paper(dry_run: bool = False, engine: Any = None) -> PaperBroker:
            assert not dry_run, "the paper account has no dry run"
            market.engine = engine
            return PaperBroker(engine, PaperSettings(), FREE)

        return Rig(name, market, make_paper, "EURUSD", 1000.7, 1000.7, 1.080004, 1.090004, sleeps)
    if name == "oanda":
        fake: Any = FakeOandaExec()

        def make(dry_run: bool = False, engine: Any = None) -> VenueExecutionBroker:
            return OandaExecution(secret, OANDA_ACCOUNT, dry_run=dry_run, engine=engine,
                                  transport=fake.transport(), **common)  # fmt: skip

        return Rig(name, fake, make, "EURUSD", 1000.7, 1000, 1.080004, 1.090004, sleeps)
    if name == "alpaca":
        fake = FakeAlpacaExec()

        def make(dry_run: bool = False, engine: Any = None) -> VenueExecutionBroker:
            return AlpacaExecution(secret, secret, dry_run=dry_run, engine=engine,
                                   transport=fake.transport(), **common)  # fmt: skip

        return Rig(name, fake, make, "AAPL", 10.7, 10, 170.123, 180.0, sleeps)
    if name == "capital":
        fake = FakeCapitalExec()

        def make(dry_run: bool = False, engine: Any = None) -> VenueExecutionBroker:
            return CapitalExecution(
                secret,
                "me",
                secret,
                dry_run=dry_run,
                engine=engine,
                transport=fake.transport(),
                **common,
            )

        return Rig(name, fake, make, "EURUSD", 1050.0, 1000, 1.080004, 1.090004, sleeps)
    exchange = FakeCcxtExchange()
    if secret != SECRET:
        exchange.script.append(("load_markets", ccxt.AuthenticationError("fakex invalid key")))

    def make(dry_run: bool = False, engine: Any = None) -> VenueExecutionBroker:
        return CcxtExecution(exchange, dry_run=dry_run, engine=engine, **common)

    return Rig(name, exchange, make, "BTCUSDT", 0.01234, 0.0123, 60000.123, 70000.0, sleeps)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'live.db'}")


def _sent_body(rig: Rig, request: Any) -> dict[str, Any]:
    if rig.name == "ccxt":
        _, (symbol, type_, side, amount, _price, params), _ = request
        return {"symbol": symbol, "type": type_, "side": side, "amount": amount, **params}
    if rig.name == "paper":  # the position the account booked
        return request
    return json.loads(request.content)


@pytest.mark.parametrize("venue", VENUES)
def test_dry_run_checks_against_the_rules_logs_and_sends_nothing(
    venue: str, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    rig = _rig(venue)
    broker = rig.make(dry_run=True, engine=ledger.engine)
    caplog.set_level(logging.INFO)
    row, created = ledger.place_order_once(rig.intent(), broker)
    assert created and row.status == "DRY_RUN" and row.dry_run
    assert row.broker_order_id == f"dry-{venue}:{row.order_id}"
    assert rig.sent() == []  # the venue saw no order
    logged = [r.getMessage() for r in caplog.records if "DRY RUN" in r.getMessage()]
    assert len(logged) == 1 and f"{rig.sent_quantity:g}" in logged[0] and row.order_id in logged[0]
    assert ledger.orders(status="SUBMITTED").is_empty()  # nothing waits for a fill
    tiny = OrderIntent(rig.symbol, "1h", T0, "2", 1, rig.sent_quantity / 1e6)
    small, _ = ledger.place_order_once(tiny, broker)
    assert small.status == "REJECTED" and "minimum" in (small.reason or "")
    assert rig.sent() == []


def test_the_paper_account_has_no_dry_run_whatever_the_setting(
    ledger: Ledger, tmp_path: Path
) -> None:
    """``live.dry_run`` (on by default) holds back what a venue would receive; the paper account
    receives nothing from anywhere, so it books its simulated order even with the setting on."""
    live = LiveSettings(execution_broker="paper", dry_run=True)
    broker = create_execution_broker(Settings(home=tmp_path, live=live), ledger.engine)
    assert isinstance(broker, PaperBroker) and broker.dry_run is False
    (info,) = [i for i in broker_infos() if i.name == "paper"]
    assert info.execution and info.dry_run_default is False
    row, _ = ledger.place_order_once(_rig("paper").intent(), broker)
    assert row.status == "SUBMITTED" and not row.dry_run
    assert ledger.positions()["status"].to_list() == ["PENDING"]  # fills on the next candle


@pytest.mark.parametrize("venue", ALL)
def test_an_order_is_sent_once_with_the_client_id_and_filled_once(
    venue: str, ledger: Ledger
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    row, _ = ledger.place_order_once(rig.intent(), broker)
    assert row.status == "SUBMITTED" and not row.dry_run and row.broker_order_id
    (request,) = rig.sent()
    body = _sent_body(rig, request)
    text = json.dumps(body, default=str)
    if venue == "capital":  # no client id at Capital.com: the deal id is stored instead
        assert body["size"] == rig.sent_quantity and body["stopLevel"] == 1.08
    else:
        assert row.order_id in text
    assert f"{rig.sent_quantity:g}" in text.replace('"', "")  # rounded to the venue's rules
    again, created = ledger.place_order_once(rig.intent(), broker)
    assert not created and again.order_id == row.order_id and len(rig.sent()) == 1
    assert rig.settle(ledger, broker) == ((row.order_id,), ())
    filled = ledger.order(row.order_id)
    assert filled is not None and filled.status == "FILLED"
    assert filled.entry_price == FILL_PRICE  # the venue's fill price, the paper candle's open
    assert ledger.fills().height == 1
    assert rig.settle(ledger, broker) == ((), ())  # booked once
    assert ledger.fills().height == 1


class _CrashAfterSend:
    """The venue accepts the order, then the process dies before the ledger hears back."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dry_run = inner, inner.name, inner.dry_run

    def submit(self, order: BrokerOrder) -> str:
        self.inner.submit(order)
        raise ConnectionError("killed after the venue accepted the order")


@pytest.mark.parametrize("venue", ALL)
def test_a_resubmission_after_a_crash_is_recognised_not_duplicated(
    venue: str, ledger: Ledger
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    with pytest.raises(ConnectionError):
        ledger.place_order_once(rig.intent(), _CrashAfterSend(broker))
    (stranded,) = ledger.orders().to_dicts()
    assert stranded["status"] == "NEW" and len(rig.sent()) == 1
    row, created = ledger.place_order_once(rig.intent(), rig.make(engine=ledger.engine))
    assert not created and row.status == "SUBMITTED" and len(rig.sent()) == 1
    assert rig.settle(ledger, broker)[0] == (row.order_id,) and ledger.fills().height == 1


# Capital.com has no client ids. Paper: the lookup before booking lags behind a concurrent
# submit of the same id, whose booking the database then refuses (the unique client id).
@pytest.mark.parametrize("venue", ["oanda", "alpaca", "ccxt", "paper"])
def test_the_venues_duplicate_answer_is_recognised(
    venue: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    first = broker.submit(BrokerOrder("cf-dup", rig.symbol, "1h", T0, 1, rig.quantity))
    lookup = "_known" if venue == "paper" else "_find"  # by client id, before sending
    real, calls = getattr(broker, lookup), []

    def stale_once(*args: Any) -> Any:  # a lookup that lags behind the venue
        calls.append(args)
        return None if len(calls) == 1 else real(*args)

    monkeypatch.setattr(broker, lookup, stale_once)
    again = broker.submit(BrokerOrder("cf-dup", rig.symbol, "1h", T0, 1, rig.quantity))
    assert len(calls) == 2  # not found, refused as a duplicate, found
    assert again == first and len(rig.book.orders) == 1
    if venue != "paper":
        assert len(rig.sent()) == 2  # the venue saw the second request and refused it


@pytest.mark.parametrize("venue", ALL)
def test_an_order_left_submitted_gets_its_fill_booked_by_the_next_run(
    venue: str, ledger: Ledger
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    rig.book.mode = "fill" if venue == "capital" else "work"  # Capital.com fills on the spot
    row, _ = ledger.place_order_once(rig.intent(), broker)
    if venue != "capital":
        assert rig.settle(ledger, broker) == ((), (row.order_id,))
        assert ledger.order(row.order_id).status == "SUBMITTED"
        rig.book.fill_working()
    assert rig.settle(ledger, broker) == ((row.order_id,), ())
    order = ledger.order(row.order_id)
    assert order.status == "FILLED" and order.entry_price == FILL_PRICE
    (position,) = ledger.positions().rows(named=True)
    assert position["order_id"] == row.order_id and position["quantity"] == rig.sent_quantity


@pytest.mark.parametrize("venue", VENUES)  # paper fills the whole quantity at the next open
def test_reconciliation_records_a_partial_fill(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    rig.book.mode = "partial"
    half, _ = ledger.place_order_once(rig.intent(), broker)
    assert reconcile(ledger, broker).filled == (half.order_id,)
    assert ledger.order(half.order_id).status == "FILLED"
    (position,) = ledger.positions().rows(named=True)
    assert position["order_id"] == half.order_id
    assert position["quantity"] == pytest.approx(rig.sent_quantity / 2)  # what was filled


@pytest.mark.parametrize("venue", ALL)
def test_the_account_snapshot_holds_the_fill(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    row, _ = ledger.place_order_once(rig.intent(), broker)
    rig.settle(ledger, broker)
    snapshot = broker.state()
    assert isinstance(snapshot, AccountSnapshot) and snapshot.currency
    (booked,) = ledger.open_positions().rows(named=True)
    assert snapshot.account == booked["account"]  # the account the ledger books fills under
    (held,) = snapshot.positions
    assert (held.symbol, held.side, held.quantity) == (rig.symbol, 1, rig.sent_quantity)
    # The entry price as the venue lists it (the Alpaca fake lists its fixture's); the
    # ledger's fill price is checked above. Its id: the client id, the venue's id the
    # ledger stores, or none (Alpaca holds one position per symbol).
    ids = {row.order_id, ledger.order(row.order_id).broker_order_id, ""}
    assert held.entry_price > 0 and held.order_id in ids
    assert snapshot.equity == pytest.approx(snapshot.balance + snapshot.unrealized_pnl)
    assert snapshot.peak_equity >= snapshot.equity and snapshot.day is not None


@pytest.mark.parametrize("venue", VENUES)  # paper is the ledger's own book
def test_a_position_unknown_to_the_ledger_is_reported_never_adopted(
    venue: str, ledger: Ledger
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    mine, _ = ledger.place_order_once(rig.intent(), broker)
    assert reconcile(ledger, broker).unknown_positions == ()  # its own order's position
    symbol = {"oanda": "EUR_USD", "alpaca": "AAPL", "capital": "EURUSD", "ccxt": "BTC/USDT"}[venue]
    rig.book.hold_outside(symbol, rig.sent_quantity, side=-1)  # opened by hand at the venue
    done = reconcile(ledger, broker)
    assert len(done.unknown_positions) == 1 and "short" in done.unknown_positions[0]
    assert any("unknown to the ledger" in w for w in done.warnings())
    events = ledger.risk_events()
    assert events["kind"].to_list() == ["venue_position_unknown"]
    assert ledger.positions()["order_id"].to_list() == [mine.order_id]  # not adopted
    snapshot = broker.state()
    assert len(snapshot.positions) == 2  # both count as exposure


@pytest.mark.parametrize("venue", ALL)
def test_a_refusal_is_rejected_with_the_venues_reason(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    rig.refuse_next(ledger, broker)
    row, _ = ledger.place_order_once(rig.intent(), broker)
    assert row.status == "REJECTED" and row.reason
    said = {"oanda": "MARKET_HALTED", "alpaca": "buying power", "capital": "RISK_CHECK"}
    said |= {"ccxt": "InsufficientFunds", "paper": "equity"}
    assert said[venue] in row.reason
    with pytest.raises(OrderRejectedError):
        broker.submit(BrokerOrder("cf-other", rig.symbol, "1h", T0, 1, rig.quantity))
    rig.settle(ledger, broker)
    assert ledger.order(row.order_id).status == "REJECTED"  # the next run does not fill it


@pytest.mark.parametrize("venue", VENUES)
def test_refused_credentials_are_a_clear_error_not_retried(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue, secret="wrong-key")
    broker = rig.make(engine=ledger.engine)
    with pytest.raises(BrokerAuthError, match=f"CANDLEFLOW_{venue.upper()}__") as info:
        broker.submit(BrokerOrder("cf-1", rig.symbol, "1h", T0, 1, rig.quantity))
    assert "wrong-key" not in str(info.value) and rig.sleeps == []  # not retried


@pytest.mark.parametrize("venue", VENUES)
def test_a_429_is_retried_after_the_wait_it_asks(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    if venue == "ccxt":
        rig.fake.script += [("create_order", ccxt.RateLimitExceeded("fakex 429"))]
        rig.fake.script += [("load_markets", ccxt.RateLimitExceeded("fakex 429"))]
    else:
        order_path = {"oanda": "/orders", "alpaca": "/v2/orders", "capital": "/api/v1/positions"}
        too_many = httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "slow down"})
        rig.fake.script += [(order_path[venue], too_many)]
    row, _ = ledger.place_order_once(rig.intent(), broker)
    assert (
        row.status == "SUBMITTED"
        and len(rig.fake.orders if venue != "ccxt" else rig.fake.book.orders) == 1
    )
    assert rig.sleeps and (venue == "ccxt" or max(rig.sleeps) >= 2)


@pytest.mark.parametrize("venue", VENUES)
def test_a_planted_secret_never_shows(
    venue: str, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in log records (DEBUG included), ledger rows, reprs or error messages."""
    caplog.set_level(logging.DEBUG)
    rig = _rig(venue)
    shown: list[str] = []
    for dry_run in (True, False):
        broker = rig.make(dry_run=dry_run, engine=ledger.engine)
        shown += [repr(broker)]
        ledger.place_order_once(rig.intent(str(dry_run)), broker)
        reconcile(ledger, broker)
        broker.state()
    (rig.fake.book if venue == "ccxt" else rig.fake).mode = "refuse"
    ledger.place_order_once(rig.intent("refused"), broker)
    bad = _rig(venue, secret=SECRET + "x")
    with pytest.raises(BrokerAuthError) as info:
        bad.make().submit(BrokerOrder("cf-1", bad.symbol, "1h", T0, 1, bad.quantity))
    shown += [str(info.value), repr(info.value), caplog.text]
    shown += [r.getMessage() for r in caplog.records]
    for frame in (ledger.orders(), ledger.fills(), ledger.positions(), ledger.risk_events()):
        shown.append(frame.write_csv())
    with ledger.engine.connect() as conn:
        shown.append(str(conn.execute(sa.select(paper_accounts)).all()))
    assert len(shown) > 10 and all(SECRET not in text for text in shown)
