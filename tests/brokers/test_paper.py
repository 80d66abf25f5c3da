"""The paper account: fills at the next open with slippage and fees, stop-loss / take-profit /
time-out exits (same-candle and gap cases), idempotent submit and update (concurrent updates
too), account numbers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from brokers import paper as paper_module
from brokers.execution import (
    BrokerOrder,
    ExecutionBroker,
    OrderRejectedError,
    fills,
    positions,
)
from brokers.paper import PaperBroker
from core.config import CostSpec, CostsSettings
from core.settings_live import PaperSettings

T0 = datetime(2024, 1, 2, 20, tzinfo=UTC)
H = timedelta(hours=1)
SLIP = 0.001  # 10 bps
FEE = 0.0005  # 5 bps
# The instrument cost model of [costs]: what the backtest charges too.
COSTS = CostsSettings(default=CostSpec(fee_bps=5, spread_bps=0, slippage_bps=10), by_asset_class={})
FREE = CostsSettings(default=CostSpec(fee_bps=0, spread_bps=0, slippage_bps=0), by_asset_class={})
QTY = 10.0


def candles(*rows: tuple[float, float, float, float], start: datetime = T0) -> pl.DataFrame:
    """Hourly candles from ``start``: one (open, high, low, close) per row."""
    return pl.DataFrame(
        {
            "ts": [start + i * H for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'live' / 'live.db'}"


@pytest.fixture
def paper(url: str) -> PaperBroker:
    broker = PaperBroker(url, PaperSettings(initial_balance=10_000, currency="usd"), COSTS)
    broker.create_all()
    return broker


def order(side: int = 1, **kw: object) -> BrokerOrder:
    terms: dict = {"order_id": "o1", "symbol": "EURUSD", "timeframe": "1h", "candle_ts": T0}
    return BrokerOrder(**(terms | {"side": side, "quantity": QTY} | kw))


def exit_fill(paper: PaperBroker) -> dict:
    with paper.engine.connect() as conn:
        rows = conn.execute(sa.select(fills).where(fills.c.kind == "EXIT")).mappings().all()
    assert len(rows) == 1
    return dict(rows[0])


# The signal candle T0, then the entry candle (opens at 100, touches neither barrier).
SIGNAL = (99.0, 99.5, 98.8, 99.2)
ENTRY = (100.0, 100.8, 99.5, 100.5)
LONG_ENTRY = 100.0 * (1 + SLIP)  # 100.1
SHORT_ENTRY = 100.0 * (1 - SLIP)  # 99.9


def test_paper_implements_the_execution_protocol(paper: PaperBroker) -> None:
    assert isinstance(paper, ExecutionBroker)
    assert paper.dry_run is False and paper.name == "paper"
    assert paper.state().currency == "USD"


def test_market_order_fills_at_next_open_with_slippage_and_fee(paper: PaperBroker) -> None:
    paper.submit(order())
    report = paper.update({"EURUSD": candles(SIGNAL)}, "1h")
    assert (report.candles, report.entries) == (1, 0)  # its own candle does not fill it
    assert paper.state().pending_orders == 1
    report = paper.update({"eur/usd": candles(SIGNAL, ENTRY)}, "1h")
    assert (report.candles, report.entries, report.exits) == (1, 1, 0)
    with paper.engine.connect() as conn:
        (fill,) = conn.execute(sa.select(fills)).mappings().all()
    assert fill["ts"] == T0 + H and fill["side"] == 1
    assert fill["price"] == pytest.approx(100.1)
    assert fill["fee"] == pytest.approx(100.1 * 10 * 0.0005)  # 0.5005
    state = paper.state()
    assert state.balance == pytest.approx(10_000 - 0.5005)
    (pos,) = state.positions
    assert (pos.symbol, pos.side, pos.quantity) == ("EURUSD", 1, QTY)
    assert pos.entry_price == pytest.approx(100.1) and pos.last_price == 100.5
    assert pos.notional == pytest.approx(1005.0)
    assert pos.unrealized_pnl == pytest.approx(4.0)  # 10 × (100.5 − 100.1)
    assert state.equity == pytest.approx(10_003.4995)
    assert state.pending_orders == 0


def test_short_fills_lower(paper: PaperBroker) -> None:
    paper.submit(order(side=-1))
    paper.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h")
    (pos,) = paper.state().positions
    assert pos.entry_price == pytest.approx(99.9)
    assert pos.unrealized_pnl == pytest.approx(-6.0)  # −10 × (100.5 − 99.9)


@pytest.mark.parametrize(
    ("side", "bar", "price", "reason"),
    [
        # long, stop 99, take 102
        (1, (100.5, 101.0, 98.5, 99.2), 99 * (1 - SLIP), "STOP_LOSS"),
        (1, (100.5, 102.5, 100.2, 102.2), 102.0, "TAKE_PROFIT"),
        (1, (100.5, 102.5, 98.5, 101.0), 99 * (1 - SLIP), "STOP_LOSS"),  # both: stop first
        (1, (98.0, 98.4, 97.5, 98.2), 98 * (1 - SLIP), "STOP_LOSS"),  # gap through the stop
        (1, (103.0, 103.5, 102.8, 103.2), 103.0, "TAKE_PROFIT"),  # gap through the take
        # short, stop 101, take 98
        (-1, (100.0, 101.5, 99.5, 100.2), 101 * (1 + SLIP), "STOP_LOSS"),
        (-1, (99.5, 99.8, 97.5, 97.9), 98.0, "TAKE_PROFIT"),
        (-1, (100.0, 101.5, 97.5, 99.0), 101 * (1 + SLIP), "STOP_LOSS"),  # both: stop first
        (-1, (102.0, 102.5, 101.8, 102.2), 102 * (1 + SLIP), "STOP_LOSS"),  # gap
    ],
)
def test_barrier_exits(
    paper: PaperBroker, side: int, bar: tuple, price: float, reason: str
) -> None:
    stop, take = (99.0, 102.0) if side == 1 else (101.0, 98.0)
    paper.submit(order(side=side, stop_loss=stop, take_profit=take))
    report = paper.update({"EURUSD": candles(SIGNAL, ENTRY, bar)}, "1h")
    assert (report.entries, report.exits) == (1, 1)
    fill = exit_fill(paper)
    entry = LONG_ENTRY if side == 1 else SHORT_ENTRY
    gross = side * QTY * (price - entry)
    assert (fill["reason"], fill["ts"], fill["side"]) == (reason, T0 + 2 * H, -side)
    assert fill["price"] == pytest.approx(price)
    assert fill["realized_pnl"] == pytest.approx(gross)
    fees = entry * QTY * FEE + price * QTY * FEE
    state = paper.state()
    assert state.positions == ()
    assert state.balance == pytest.approx(10_000 + gross - fees)
    assert state.equity == pytest.approx(state.balance)
    with paper.engine.connect() as conn:
        row = conn.execute(sa.select(positions)).mappings().one()
    assert (row["status"], row["exit_reason"]) == ("CLOSED", reason)
    assert row["realized_pnl"] == pytest.approx(gross - fees)


def test_stop_hit_on_the_entry_candle(paper: PaperBroker) -> None:
    paper.submit(order(stop_loss=99.6))
    paper.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h")  # ENTRY's low 99.5 ≤ 99.6
    fill = exit_fill(paper)
    assert fill["ts"] == T0 + H and fill["price"] == pytest.approx(99.6 * (1 - SLIP))


def test_timeout_closes_at_the_timeout_candle_close(paper: PaperBroker) -> None:
    paper.submit(order(stop_loss=90.0, take_profit=110.0, timeout_at=T0 + 3 * H))
    bars = [SIGNAL, ENTRY, (100.5, 101.0, 100.0, 100.8), (100.8, 101.2, 100.4, 100.7)]
    report = paper.update({"EURUSD": candles(*bars[:3])}, "1h")
    assert report.exits == 0 and len(paper.state().positions) == 1
    report = paper.update({"EURUSD": candles(*bars)}, "1h")
    assert (report.candles, report.exits) == (1, 1)
    fill = exit_fill(paper)
    assert (fill["reason"], fill["ts"]) == ("TIMEOUT", T0 + 3 * H)
    assert fill["price"] == pytest.approx(100.7 * (1 - SLIP))  # 100.5993


def test_update_is_idempotent_and_incremental_equals_batch(paper: PaperBroker, url: str) -> None:
    bars = candles(SIGNAL, ENTRY, (100.5, 101.0, 100.0, 100.8), (100.8, 102.5, 100.4, 102.3))
    paper.submit(order(stop_loss=99.0, take_profit=102.0))
    paper.update({"EURUSD": bars.head(2)}, "1h")
    paper.update({"EURUSD": bars}, "1h")
    first = paper.state()
    again = paper.update({"EURUSD": bars}, "1h")
    assert (again.candles, again.entries, again.exits) == (0, 0, 0)
    assert paper.state() == first
    with paper.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(fills)).scalar_one() == 2

    other = PaperBroker(f"{url}.batch", paper.settings, paper.costs)
    other.create_all()
    other.submit(order(stop_loss=99.0, take_profit=102.0))
    other.update({"EURUSD": bars}, "1h")
    assert other.state().balance == pytest.approx(first.balance)
    assert first.balance == pytest.approx(10_000 + 10 * (102 - 100.1) - 0.5005 - 102 * 10 * FEE)


def test_submit_is_idempotent(paper: PaperBroker) -> None:
    first = paper.submit(order())
    assert paper.submit(order()) == first
    paper.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h")
    assert paper.submit(order()) == first  # even once filled
    with paper.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(positions)).scalar_one() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(fills)).scalar_one() == 1


def test_double_fill_is_refused_by_the_database(paper: PaperBroker) -> None:
    paper.submit(order())
    paper.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h")
    row = {"account": "paper", "order_id": "o1", "kind": "ENTRY", "symbol": "EURUSD", "ts": T0}
    row |= {"side": 1, "quantity": 1.0, "price": 1.0, "fee": 0.0, "reason": "ENTRY"}
    with pytest.raises(sa.exc.IntegrityError), paper.engine.begin() as conn:
        conn.execute(fills.insert().values(**row, created_at=T0))


def test_day_start_and_peak_equity(paper: PaperBroker) -> None:
    # Candles at 20:00 … 23:00 on Jan 2, then 00:00 and 01:00 on Jan 3.
    paper.submit(order())
    day1 = [SIGNAL, ENTRY, (100.5, 101.6, 100.4, 101.5), (101.5, 101.6, 100.9, 101.0)]
    day2 = [(101.0, 101.1, 99.8, 100.0), (100.0, 100.9, 99.9, 100.6)]
    paper.update({"EURUSD": candles(*day1)}, "1h")
    state = paper.state()
    assert state.day == date(2024, 1, 2) and state.day_start_equity == 10_000
    balance = 10_000 - 0.5005
    assert state.peak_equity == pytest.approx(balance + 10 * (101.5 - 100.1))  # the 22:00 close
    assert state.equity == pytest.approx(balance + 10 * (101.0 - 100.1))
    paper.update({"EURUSD": candles(*day1, *day2)}, "1h")
    state = paper.state()
    assert state.day == date(2024, 1, 3) and state.as_of == T0 + 6 * H  # 01:00 candle closed
    assert state.day_start_equity == pytest.approx(balance + 10 * (101.0 - 100.1))
    assert state.peak_equity == pytest.approx(balance + 10 * (101.5 - 100.1))
    assert state.equity == pytest.approx(balance + 10 * (100.6 - 100.1))
    assert state.daily_pnl == pytest.approx(10 * (100.6 - 101.0))
    assert state.drawdown == pytest.approx(1 - state.equity / state.peak_equity)


def test_state_survives_a_new_broker_on_the_same_database(paper: PaperBroker, url: str) -> None:
    paper.submit(order())
    paper.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h")
    again = PaperBroker(url, PaperSettings(initial_balance=5))  # balance: set at creation only
    assert again.state() == paper.state()
    assert again.update({"EURUSD": candles(SIGNAL, ENTRY)}, "1h").candles == 0


def test_rejections(url: str) -> None:
    broker = PaperBroker(url, PaperSettings(initial_balance=1_000), FREE)
    broker.create_all()
    with pytest.raises(OrderRejectedError, match="quantity"):
        broker.submit(order(quantity=0.0))
    broker.submit(BrokerOrder("big", "EURUSD", "1h", T0, 1, 100.0))
    broker.update({"EURUSD": candles(SIGNAL, (100.0, 100.0, 80.0, 80.0))}, "1h")
    assert broker.state().equity == pytest.approx(1_000 - 2_000)
    with pytest.raises(OrderRejectedError, match="equity"):
        broker.submit(order(order_id="next"))


def test_paper_settings() -> None:
    s = PaperSettings()
    assert (s.initial_balance, s.currency) == (100_000, "USD")
    with pytest.raises(ValidationError, match=r"moved to \[costs\]"):
        PaperSettings(fee_bps=1.0)  # one cost model: the backtest's
    with pytest.raises(ValidationError):
        PaperSettings(initial_balance=0)
    with pytest.raises(ValidationError):
        PaperSettings(currency="US-DOLLARS")
    with pytest.raises(ValidationError):
        PaperSettings(fee=1.0)


def test_in_memory_database_without_explicit_create_all() -> None:
    broker = PaperBroker("sqlite://", PaperSettings(), FREE)
    broker.submit(order(take_profit=100.6))
    report = broker.update({"EURUSD": candles(SIGNAL, ENTRY, (100.5, 100.7, 100.4, 100.6))}, "1h")
    assert (report.entries, report.exits) == (1, 1)
    assert broker.state().balance == pytest.approx(100_000 + 10 * 0.6)


def test_an_order_fills_after_its_signal_candle_closes_whatever_candles_come(
    paper: PaperBroker,
) -> None:
    """A 4h signal at T0 closes at T0 + 4h: hourly candles inside it must not fill it."""
    paper.submit(order(timeframe="4h"))
    hours = [SIGNAL, SIGNAL, SIGNAL, SIGNAL, ENTRY, ENTRY]
    report = paper.update({"EURUSD": candles(*hours)}, "1h")
    assert report.entries == 1
    with paper.engine.connect() as conn:
        entry_ts = conn.execute(sa.select(positions.c.entry_ts)).scalar_one()
    assert entry_ts == T0 + 4 * H


def test_timeframes_sharing_an_account_never_process_a_stretch_twice(paper: PaperBroker) -> None:
    four_hours = candles(SIGNAL, start=T0)  # T0 … T0 + 4h
    assert paper.update({"EURUSD": four_hours}, "4h").candles == 1
    hourly = candles(*[ENTRY] * 6, start=T0)  # T0 … T0 + 6h: the first four are inside it
    assert paper.update({"EURUSD": hourly}, "1h").candles == 2
    assert paper.state().as_of == T0 + 6 * H
    # The other way round: hours processed up to T0 + 6h, a 4h candle from T0 + 4h overlaps.
    assert paper.update({"EURUSD": candles(ENTRY, start=T0 + 4 * H)}, "4h").candles == 0
    assert paper.update({"EURUSD": candles(ENTRY, start=T0 + 8 * H)}, "4h").candles == 1
    assert paper.state().as_of == T0 + 12 * H


def test_known_says_whether_an_order_was_accepted(paper: PaperBroker) -> None:
    assert not paper.known("o1")
    paper.submit(order())
    assert paper.known("o1") and not paper.known("o2")


def test_concurrent_updates_of_one_account_book_once(
    paper: PaperBroker, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs updating the account at once (threads here, processes alike): the second waits
    for the first and finds nothing left to book, instead of failing on a fill booked twice."""
    paper.submit(order())
    other = PaperBroker(url, paper.settings, paper.costs)
    other.state()
    load = paper_module._Book.load

    def slow_load(conn, account):  # both would read the account before either wrote
        book = load(conn, account)
        time.sleep(0.3)
        return book

    monkeypatch.setattr(paper_module._Book, "load", slow_load)
    bars = {"EURUSD": candles(SIGNAL, ENTRY)}
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda broker: broker.update(bars, "1h"), [paper, other]))
    assert sorted(r.entries for r in reports) == [0, 1]
    assert sorted(r.candles for r in reports) == [0, 2]
    with paper.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(fills)).scalar_one() == 1
    assert paper.state().balance == pytest.approx(10_000 - 100.1 * QTY * FEE)
