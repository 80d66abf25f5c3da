"""The strategy's exits at every venue adapter (the execution contract's rigs, no network): a
position whose time-out bar has closed is closed at the venue once — also when the run stopped
between the close and the ledger — with exit reason TIMEOUT; a position whose stop-loss /
take-profit the venue did not take is closed when a closed candle touches them (the stop first
when one candle touches both, as ``core.strategy.exit_for_candle`` says); dry run closes nothing.
Paper is not here: its exits are its own update's (``test_paper.py``)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from brokers.venue_execution import PositionExit, VenueOrder
from tests.brokers.exec_venues import CLOSE_PRICE
from tests.brokers.test_execution_contract import FILL_PRICE, T0, VENUES, H, Rig, _hourly, _rig
from trading.ledger import Ledger, OrderIntent
from trading.reconcile import reconcile
from trading.venue_exits import exit_due

TIMEOUT_BARS = 3
TIMED_OUT = T0 + (TIMEOUT_BARS + 1) * H  # the bar opening at timeout_at has closed


def _open(rig: Rig, ledger: Ledger, broker: Any, timeout_bars: int | None = None) -> str:
    """A position held at the venue (booked by the next run's reconciliation); its client id."""
    intent = OrderIntent(rig.symbol, "1h", T0, "1", 1, rig.quantity, rig.stop_loss,
                         rig.take_profit, timeout_bars=timeout_bars)  # fmt: skip
    row, _ = ledger.place_order_once(intent, broker)
    assert reconcile(ledger, broker, T0 + H).filled == (row.order_id,)
    return row.order_id


def _position(ledger: Ledger) -> dict[str, Any]:
    (position,) = ledger.positions().rows(named=True)
    return position


@pytest.fixture
def ledger(tmp_path: Any) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'live.db'}")


@pytest.mark.parametrize("venue", VENUES)
def test_a_timed_out_position_is_closed_once_at_the_venue(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    order_id = _open(rig, ledger, broker, TIMEOUT_BARS)
    # The time-out bar opened at T0 + 3h; until it has closed the position stays.
    assert reconcile(ledger, broker, TIMED_OUT - timedelta(seconds=1)).exited == ()
    assert rig.fake.close_requests() == [] and _position(ledger)["status"] == "OPEN"
    done = reconcile(ledger, broker, TIMED_OUT)
    assert done.exited == (order_id,) and done.failed == () and done.closed == ()
    assert len(rig.fake.close_requests()) == 1
    position = _position(ledger)
    assert (position["status"], position["exit_reason"]) == ("CLOSED", "TIMEOUT")
    assert position["exit_price"] == CLOSE_PRICE  # the venue's price, not the bar's close
    if venue in ("oanda", "capital"):  # reported by the venue, in the account's currency
        assert position["realized_pnl"] == pytest.approx(1.88)
    else:
        gross = position["quantity"] * (CLOSE_PRICE - FILL_PRICE)
        assert position["realized_pnl"] == pytest.approx(gross)
    exit_fill = ledger.fills().filter(ledger.fills()["kind"] == "EXIT").row(0, named=True)
    assert (exit_fill["side"], exit_fill["price"], exit_fill["reason"]) == (-1, CLOSE_PRICE,
                                                                           "TIMEOUT")  # fmt: skip
    assert ledger.order(order_id).status == "CLOSED"
    again = reconcile(ledger, broker, TIMED_OUT + H)
    assert again.exited == () and again.closed == () and len(rig.fake.close_requests()) == 1
    if venue == "alpaca":  # the bracket's legs held the shares: cancelled before the close
        deletes = [r for r in rig.fake.requests if r.method == "DELETE"]
        assert len(deletes) == 2 and rig.fake.requests.index(deletes[-1]) < rig.fake.requests.index(
            rig.fake.close_requests()[0]
        )


class _CrashAfterClose:
    """The venue closes the position, then the process dies before the ledger hears back."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self, exit: PositionExit) -> VenueOrder | None:
        self.inner.close(exit)
        raise ConnectionError("killed after the venue closed the position")


@pytest.mark.parametrize("venue", VENUES)
def test_a_crash_after_the_close_is_sent_does_not_close_twice(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    order_id = _open(rig, ledger, broker, TIMEOUT_BARS)
    crashed = reconcile(ledger, _CrashAfterClose(broker), TIMED_OUT)
    assert crashed.exited == () and "killed" in crashed.failed[0]
    position = _position(ledger)  # the exit was written down before the venue heard of it
    assert (position["status"], position["exit_reason"]) == ("OPEN", "TIMEOUT")
    assert len(rig.fake.close_requests()) == 1
    rerun = reconcile(ledger, rig.make(engine=ledger.engine), TIMED_OUT + H)
    assert rerun.exited == (order_id,) and rerun.closed == ()  # not taken for a venue exit
    assert len(rig.fake.close_requests()) == 1
    position = _position(ledger)
    assert (position["status"], position["exit_reason"]) == ("CLOSED", "TIMEOUT")
    # Capital.com confirms a close only under the close's reference, lost with the crash.
    assert position["exit_price"] == (None if venue == "capital" else CLOSE_PRICE)


def _candles(rig: Rig, touch: str) -> Any:
    """Hourly candles from T0 that stay between the stop and the take-profit, but for the one
    opening at T0 + 8h, which touches the stop, the take-profit or both."""
    mid = (rig.stop_loss + rig.take_profit) / 2
    quiet = (mid, mid * 1.0001, mid * 0.9999, mid)
    high = rig.take_profit * 1.001 if touch in ("take", "both") else mid * 1.0001
    low = rig.stop_loss * 0.999 if touch in ("stop", "both") else mid * 0.9999
    return _hourly(*[quiet] * 8, (mid, high, low, mid), quiet, start=T0)


@pytest.mark.parametrize("venue", VENUES)
def test_without_exits_at_the_venue_a_touched_stop_closes_first(
    venue: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    monkeypatch.setattr(broker, "exits_attached", lambda symbol: False)
    order_id = _open(rig, ledger, broker)
    assert ledger.orders()["exits_at_venue"].to_list() == [False]
    candles = {rig.symbol: _candles(rig, "both")}
    # The touching candle (T0 + 8h) has not closed yet.
    assert reconcile(ledger, broker, T0 + 8 * H, candles).exited == ()
    done = reconcile(ledger, broker, T0 + 9 * H, candles)
    assert done.exited == (order_id,) and len(rig.fake.close_requests()) == 1
    position = _position(ledger)
    assert (position["status"], position["exit_reason"]) == ("CLOSED", "STOP_LOSS")
    assert reconcile(ledger, broker, T0 + 10 * H, candles).exited == ()
    assert len(rig.fake.close_requests()) == 1


def test_an_exchange_taking_no_exits_gets_a_take_profit_closed(ledger: Ledger) -> None:
    rig = _rig("ccxt")
    rig.fake.has = {**rig.fake.has, "createOrderWithTakeProfitAndStopLoss": False}
    broker = rig.make(engine=ledger.engine)
    order_id = _open(rig, ledger, broker)
    (sent,) = rig.sent()
    assert "stopLoss" not in sent[1][5] and "takeProfit" not in sent[1][5]  # not taken
    assert ledger.orders()["exits_at_venue"].to_list() == [False]
    done = reconcile(ledger, broker, T0 + 9 * H, {rig.symbol: _candles(rig, "take")})
    assert done.exited == (order_id,)
    assert _position(ledger)["exit_reason"] == "TAKE_PROFIT"
    (close,) = rig.fake.close_requests()
    assert close[1][2] == "sell" and close[1][5] == {"clientOrderId": f"{order_id}-x"}


@pytest.mark.parametrize("venue", ["oanda", "alpaca"])
def test_exits_the_venue_took_are_left_to_the_venue(venue: str, ledger: Ledger) -> None:
    rig = _rig(venue)
    broker = rig.make(engine=ledger.engine)
    _open(rig, ledger, broker)
    assert ledger.orders()["exits_at_venue"].to_list() == [True]
    done = reconcile(ledger, broker, T0 + 9 * H, {rig.symbol: _candles(rig, "stop")})
    assert done.exited == () and rig.fake.close_requests() == []
    assert _position(ledger)["status"] == "OPEN"


@pytest.mark.parametrize("venue", VENUES)
def test_dry_run_closes_nothing_at_the_venue(
    venue: str, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    rig = _rig(venue)
    order_id = _open(rig, ledger, rig.make(engine=ledger.engine), TIMEOUT_BARS)
    dry = rig.make(dry_run=True, engine=ledger.engine)  # live.dry_run switched back on
    late = OrderIntent(rig.symbol, "1h", T0 - H, "dry", 1, rig.quantity, timeout_bars=1)
    assert ledger.place_order_once(late, dry)[0].status == "DRY_RUN"  # timed out, never held
    caplog.set_level(logging.INFO)
    caplog.clear()  # the entry's own DRY RUN line, logged above when an earlier test left INFO on
    done = reconcile(ledger, dry, TIMED_OUT)
    assert done.exited == () and rig.fake.close_requests() == []
    position = _position(ledger)
    assert (position["order_id"], position["status"]) == (order_id, "OPEN")
    assert position["exit_reason"] is None  # no exit asked for: a live run decides afresh
    events = ledger.risk_events()
    assert events["kind"].to_list() == ["venue_exit_dry_run"]
    logged = [r.getMessage() for r in caplog.records if "DRY RUN (not sent)" in r.getMessage()]
    assert len(logged) == 1 and order_id in logged[0] and "TIMEOUT" in logged[0]


def test_the_exit_rule_is_the_strategys() -> None:
    """A time-out bar not yet closed leaves the position; the backtest exits at its close."""
    row = {"timeframe": "1h", "entry_ts": T0 + H, "side": 1, "stop_loss": 1.0,
           "take_profit": 2.0, "timeout_at": T0 + 3 * H}  # fmt: skip
    assert exit_due(row, None, T0 + 4 * H - timedelta(microseconds=1), True) is None
    assert exit_due(row, None, T0 + 4 * H, True) == "TIMEOUT"
    both = _hourly((1.5, 2.5, 0.5, 1.5), start=T0 + H)
    assert exit_due(row, both, T0 + 2 * H, False) == "STOP_LOSS"
    assert exit_due(row, both, T0 + 2 * H, True) is None
