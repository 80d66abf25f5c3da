"""One strategy: the backtest's simulation trades exactly what the paper account, driven bar by
bar by the live decision functions, trades — same orders, fills, exits, costs and PnL — and the
labels' exits are the strategy's exit rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from brokers.execution import BrokerOrder, positions
from brokers.paper import PaperBroker
from brokers.simulated import SimulatedBroker
from core.config import CostSpec, CostsSettings
from core.feature_spec import LabelSpec
from core.settings_live import PaperSettings
from core.settings_trading import RiskSettings, SignalSettings
from core.strategy import Candle, Costs, exit_for_candle
from features.labels import triple_barrier, volatility
from models.backtest import backtest
from models.risk import AccountState, Position, bars_per_year, decide, risk_state
from models.signal import regime_from_sigma, score_signal, vote
from models.strategy import Setup, SingleFamily, Strategy, simulate

END = datetime(2026, 3, 2, tzinfo=UTC)
LABELS = LabelSpec(horizon=12, vol_window=24)
COSTS = CostSpec(fee_bps=4.0, spread_bps=3.0, slippage_bps=2.0)


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return SimulatedBroker(seed=3, edge=0.3).fetch_candles(
        "BTCUSD", "1h", END - timedelta(days=40), END
    )


def _probas(market: pl.DataFrame, start: int) -> tuple[pl.Series, dict[str, np.ndarray]]:
    rows = market["ts"][start:]
    rng = np.random.default_rng(11)
    return rows, {"a": rng.uniform(0.3, 0.8, rows.len()), "b": rng.uniform(0.3, 0.8, rows.len())}


def _strategy(**risk: float) -> Strategy:
    return Strategy(
        SignalSettings(), RiskSettings(**risk), COSTS.to_costs(), initial_balance=50_000.0
    )


class _Voting:
    weights: ClassVar[dict[str, float]] = {"a": 0.6, "b": 0.4}
    method = "weighted"
    threshold = 0.55
    min_agree = 1


def _sim(strategy: Strategy, market: pl.DataFrame, rows: pl.Series, probas: dict):
    return simulate(Setup(strategy, market, LABELS, "BTCUSD", "1h"), _Voting, rows, probas)


def _drive_paper(
    market: pl.DataFrame, rows: pl.Series, probas: dict, strategy: Strategy
) -> PaperBroker:
    """The paper account fed one candle at a time; at each signal bar, the live decision
    functions (vote, signal weight with the account's risk state, risk layer) on its state."""
    broker = PaperBroker(
        "sqlite://",
        PaperSettings(initial_balance=strategy.initial_balance),
        CostsSettings(default=COSTS, by_asset_class={}),
    )
    broker.create_all()
    sigma = volatility(market, LABELS)
    first = market["ts"].to_list().index(rows[0])
    ts, close = market["ts"].to_list(), market["close"].to_numpy()
    for j in range(first, market.height):
        broker.update({"BTCUSD": market[j : j + 1]}, "1h")
        k = j - first
        p = {f: float(v[k]) for f, v in probas.items()}
        v = vote(p, _Voting.weights, "weighted", _Voting.threshold, _Voting.min_agree)
        state = _account(broker, close[j])
        regime = regime_from_sigma(sigma[: j + 1], strategy.signals)
        signal = score_signal(v, strategy.signals, risk_state(state, strategy.risk), regime=regime)
        request = signal.order("BTCUSD", float(close[j]), float(sigma[j]))
        if request is None:
            continue
        decision = decide(
            request,
            state,
            strategy.risk,
            LABELS,
            periods_per_year=bars_per_year("1h", "BTCUSD"),
        )
        if decision.approved:
            broker.submit(
                BrokerOrder(
                    f"o{j}",
                    "BTCUSD",
                    "1h",
                    ts[j],
                    decision.side,
                    decision.quantity,
                    decision.stop_loss,
                    decision.take_profit,
                    ts[j] + decision.timeout_bars * timedelta(hours=1),
                )
            )
    return broker


def _account(broker: PaperBroker, close: float) -> AccountState:
    """What live builds — held positions at the mark, pending orders at their signal close — with
    the account's loss limits read healthy, as the per-model evidence reads them (they belong to
    the whole account: models/strategy.py)."""
    snap = broker.state()
    held = [Position(p.symbol, p.notional, p.side) for p in snap.positions]
    with broker.engine.connect() as conn:
        pending = conn.execute(
            sa.select(positions.c.quantity, positions.c.side).where(positions.c.status == "PENDING")
        ).all()
    held += [Position("BTCUSD", q * close, s) for q, s in pending]
    return AccountState(snap.equity, snap.equity, snap.equity, tuple(held), snap.balance)


def _paper_trades(broker: PaperBroker) -> pl.DataFrame:
    with broker.engine.connect() as conn:
        rows = conn.execute(
            sa.select(positions).where(positions.c.status == "CLOSED").order_by(positions.c.id)
        ).mappings()
        return pl.DataFrame([dict(r) for r in rows])


@pytest.mark.parametrize("risk", [{}, {"sizing": "volatility_target", "quantity_step": 0.001}])
def test_paper_account_trades_what_the_backtest_simulates(market: pl.DataFrame, risk) -> None:
    strategy = _strategy(**risk)
    rows, probas = _probas(market, start=200)
    sim = _sim(strategy, market, rows, probas)
    paper = _paper_trades(_drive_paper(market, rows, probas, strategy))
    assert sim.trades.height >= 10  # enough trades for the comparison to mean something
    assert paper.height == sim.trades.height
    assert paper["entry_ts"].to_list() == sim.trades["entry_ts"].to_list()
    assert paper["exit_ts"].to_list() == sim.trades["exit_ts"].to_list()
    assert paper["exit_reason"].to_list() == sim.trades["reason"].to_list()
    for column, theirs in (
        ("quantity", "quantity"),
        ("entry_price", "entry_price"),
        ("exit_price", "exit_price"),
        ("fees", "fees"),
        ("realized_pnl", "pnl"),
    ):
        np.testing.assert_allclose(paper[column], sim.trades[theirs], rtol=1e-9, err_msg=column)
    assert set(sim.trades["reason"]) >= {"STOP_LOSS", "TAKE_PROFIT"}


def test_one_position_at_a_time_by_default(market: pl.DataFrame) -> None:
    rows, probas = _probas(market, start=200)
    one = _sim(_strategy(), market, rows, probas).trades
    entries, exits = one["entry_ts"].to_list(), one["exit_ts"].to_list()
    assert all(e >= x for e, x in zip(entries[1:], exits[:-1], strict=True))
    three = simulate(
        Setup(_strategy(max_positions_per_symbol=3), market, LABELS, "BTCUSD", "1h"),
        _Voting,
        rows,
        probas,
    ).trades
    overlapping = three.sort("entry_ts")
    later, earlier = overlapping["entry_ts"][1:], overlapping["exit_ts"][:-1]
    assert (later < earlier).any()  # positions stack once configured


def test_costs_are_defined_once(market: pl.DataFrame) -> None:
    """The paper account's fills cost what the backtest charges: the instrument's model."""
    costs = COSTS.to_costs()
    rows, probas = _probas(market, start=200)
    trades = simulate(
        Setup(_strategy(), market, LABELS, "BTCUSD", "1h"), _Voting, rows, probas
    ).trades
    first = trades.row(0, named=True)
    entry_open = market.filter(pl.col("ts") == first["entry_ts"])["open"][0]
    assert first["entry_price"] == pytest.approx(entry_open * (1 + (1.5 + 2.0) / 1e4))
    fees = (first["entry_price"] + first["exit_price"]) * first["quantity"] * 4.0 / 1e4
    assert first["fees"] == pytest.approx(fees)
    assert costs.round_trip == pytest.approx((2 * 4 + 3 + 2 * 2) / 1e4)
    free = Strategy(SignalSettings(), RiskSettings(), Costs(), 50_000.0)
    gross = _sim(free, market, rows, probas).trades
    assert gross["pnl"].sum() > trades["pnl"].sum()


def test_labels_exit_where_the_strategy_exits(market: pl.DataFrame) -> None:
    """For every bar: the labels' exit bar, barrier and return equal the exit rule's, entering
    at the bar's close without costs (the labels' convention)."""
    labels = triple_barrier(market, LABELS).drop_nulls("label")
    index = {t: i for i, t in enumerate(market["ts"].to_list())}
    o, h, lo, c = (market[k].to_numpy() for k in ("open", "high", "low", "close"))
    ts, free = market["ts"].to_list(), Costs()
    checked = 0
    for row in labels.iter_rows(named=True):
        i = index[row["ts"]]
        stop = c[i] * math.exp(-LABELS.sl * row["sigma"])
        take = c[i] * math.exp(LABELS.pt * row["sigma"])
        timeout = ts[i] + LABELS.horizon * timedelta(hours=1)
        for j in range(i + 1, i + LABELS.horizon + 1):
            hit = exit_for_candle(
                1, stop, take, timeout, Candle(ts[j], o[j], h[j], lo[j], c[j]), free
            )
            if hit is not None:
                break
        price, reason = hit
        assert (ts[j], reason) == (
            row["t1"],
            {"tp": "TAKE_PROFIT", "sl": "STOP_LOSS", "time": "TIMEOUT"}[row["barrier"]],
        )
        assert price / c[i] - 1 == pytest.approx(row["ret"], rel=1e-12, abs=1e-15)
        checked += 1
    assert checked > 500


def test_backtest_reports_the_simulated_account(market: pl.DataFrame) -> None:
    rows, probas = _probas(market, start=200)
    rows, probas = rows[:-40], {f: p[:-40] for f, p in probas.items()}  # all closed by the end
    setup = Setup(_strategy(), market, LABELS, "BTCUSD", "1h")
    result = backtest(setup, _Voting, rows, probas)
    equity = result.daily["equity"].to_numpy()
    assert result.strategy.total_return == pytest.approx(equity[-1] / 50_000.0 - 1)
    pnl = result.trades["pnl"].sum()
    # Marked to market: the last day's equity holds every closed trade (and no open one here).
    assert equity[-1] == pytest.approx(50_000.0 + pnl)
    single = backtest(setup, SingleFamily("a", 0.55), rows, {"a": probas["a"]})
    assert single.trades.height != result.trades.height
