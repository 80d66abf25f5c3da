"""Orders across runs: an order a stopped run left unsent (NEW) is sent again under its client
order id while young enough, expired with its reason past ``new_order_max_age_bars`` (unless the
broker holds it: then it is confirmed), and counted as exposure only until that age."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from brokers.execution import BrokerOrder, positions
from brokers.paper import PaperBroker
from core.config import CostSpec, CostsSettings
from core.settings_live import PaperSettings
from core.store import CandleStore
from models.risk import Position
from tests.trading.test_ledger import BARS, T0, Counting, Flaky, count, intent
from trading.ledger import Ledger
from trading.orders import age_in_bars, pending_positions, recover_orders

H = timedelta(hours=1)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'live' / 'live.db'}")


@pytest.fixture
def paper(ledger: Ledger) -> PaperBroker:
    free = CostsSettings(default=CostSpec(spread_bps=0, slippage_bps=0), by_asset_class={})
    return PaperBroker(ledger.engine, PaperSettings(), free)


class Down:
    """A broker that cannot be reached."""

    name, dry_run = "paper", False

    def submit(self, order: BrokerOrder) -> str:
        raise ConnectionError("venue unreachable")

    def known(self, order_id: str) -> bool:
        raise ConnectionError("venue unreachable")


def _strand(ledger: Ledger, paper: PaperBroker, when: str = "before", **kw: object) -> str:
    """An order left NEW by a run that stopped before (or after) the broker accepted it."""
    with pytest.raises(ConnectionError):
        ledger.place_order_once(intent(**kw), Flaky(paper, when))
    (row,) = ledger.orders(status="NEW").to_dicts()
    return row["order_id"]


def _recover(ledger: Ledger, broker: object, now_bars: float, max_age: int = 1):
    """Recover the EURUSD 1h orders ``now_bars`` bars after the signal candle closed."""
    now = T0 + H + now_bars * H
    return recover_orders(ledger, broker, ["EURUSD"], "1h", now, max_age)  # type: ignore[arg-type]


def test_age_in_bars_counts_from_the_signal_candles_close() -> None:
    assert age_in_bars(T0, "1h", T0 + H) == 0.0
    assert age_in_bars(T0, "1h", T0 + 3.5 * H) == 2.5
    assert age_in_bars(T0, "4h", T0 + 6 * H) == 0.5


@pytest.mark.parametrize("age", [0.1, 1.0])  # the limit itself is still young enough
def test_a_young_unsent_order_is_sent_again_once(
    ledger: Ledger, paper: PaperBroker, age: float
) -> None:
    order_id = _strand(ledger, paper)
    assert count(ledger, positions) == 0
    recovery = _recover(ledger, paper, age)
    assert (recovery.resubmitted, recovery.expired, recovery.failed) == ((order_id,), (), ())
    row = ledger.order(order_id)
    assert row is not None and row.status == "SUBMITTED"
    assert row.broker_order_id == f"paper:paper:{order_id}"
    assert count(ledger, positions) == 1
    assert _recover(ledger, paper, age).resubmitted == ()  # nothing left to recover
    assert count(ledger, positions) == 1


def test_an_old_unsent_order_is_expired_with_its_reason(ledger: Ledger, paper: PaperBroker) -> None:
    order_id = _strand(ledger, paper)
    recovery = _recover(ledger, paper, 1.5)
    assert (recovery.resubmitted, recovery.expired) == ((), (order_id,))
    row = ledger.order(order_id)
    assert row is not None and row.status == "EXPIRED" and count(ledger, positions) == 0
    assert row.reason is not None and "new_order_max_age_bars = 1" in row.reason
    assert "1.5 bars ago" in row.reason
    (event,) = ledger.risk_events().to_dicts()
    assert event["kind"] == "order_expired" and event["reason"] == row.reason
    assert event["symbol"] == "EURUSD" and event["ts"] == T0
    assert _recover(ledger, paper, 5).expired == ()  # expired once
    assert ledger.risk_events().height == 1
    # The candle's own key stays taken: the expired order is reported, never sent.
    broker = Counting(paper)
    again, created = ledger.place_order_once(intent(), broker)
    assert not created and again.status == "EXPIRED" and broker.calls == 0
    # A larger limit would have sent it.
    other = _strand(ledger, paper, model_version="9")
    assert _recover(ledger, paper, 1.5, max_age=2).resubmitted == (other,)


def test_an_old_order_the_broker_holds_is_confirmed_not_expired(
    ledger: Ledger, paper: PaperBroker
) -> None:
    order_id = _strand(ledger, paper, when="after")  # accepted, the acceptance not recorded
    assert count(ledger, positions) == 1
    recovery = _recover(ledger, paper, 10)
    assert recovery.resubmitted == (order_id,) and recovery.expired == ()
    row = ledger.order(order_id)
    assert row is not None and row.status == "SUBMITTED" and count(ledger, positions) == 1


def test_an_unreachable_broker_leaves_the_order_for_the_next_run(
    ledger: Ledger, paper: PaperBroker
) -> None:
    order_id = _strand(ledger, paper)
    assert _recover(ledger, Down(), 0.5).failed == (order_id,)
    assert _recover(ledger, Down(), 3).failed == (order_id,)  # not expired unseen either
    assert ledger.orders(status="NEW")["order_id"].to_list() == [order_id]
    assert _recover(ledger, paper, 0.5).resubmitted == (order_id,)


def test_a_run_recovers_only_its_own_orders(ledger: Ledger, paper: PaperBroker) -> None:
    four_hour = _strand(ledger, paper, timeframe="4h")
    assert _recover(ledger, paper, 0.5).resubmitted == ()
    assert recover_orders(ledger, paper, ["GBPUSD"], "4h", T0 + H, 1).resubmitted == ()
    assert recover_orders(ledger, paper, ["EURUSD"], "4h", T0 + H, 1).resubmitted == (four_hour,)


def test_an_unsent_order_counts_as_exposure_only_until_its_age(
    ledger: Ledger, paper: PaperBroker, tmp_path: Path
) -> None:
    store = CandleStore(tmp_path / "home")
    store.upsert("EURUSD", "1h", BARS)
    _strand(ledger, paper)  # 10 units at the signal candle's close, 99.2
    young, old = T0 + 1.5 * H, T0 + 2.5 * H
    assert pending_positions(ledger, store, young, 1) == (Position("EURUSD", 992.0, 1),)
    assert pending_positions(ledger, store, old, 1) == ()
    assert pending_positions(ledger, store, old, 2) == (Position("EURUSD", 992.0, 1),)


def test_a_pending_order_whose_candles_cannot_be_read_still_counts(
    ledger: Ledger, paper: PaperBroker, tmp_path: Path
) -> None:
    store = CandleStore(tmp_path / "home")
    store.upsert("EURUSD", "1h", BARS)
    ledger.place_order_once(intent(), paper)
    store.path("EURUSD", "1h").write_bytes(b"not parquet at all")
    assert pending_positions(ledger, store, T0 + 1.5 * H, 1) == (Position("EURUSD", 0.0, 1),)
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(positions)).scalar_one() == 1
