"""Backtest of the strategy: a hand-made path whose trade, costs, marked equity and daily series
are worked out here; buy-and-hold by hand; zero trades; the DSR; bad input rejected with a
clear error. (The trades themselves are the paper account's: tests/models/test_strategy.py.)"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.feature_spec import LabelSpec
from core.settings_trading import RiskSettings, SignalSettings
from core.strategy import Costs
from models.backtest import BacktestError, backtest
from models.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio
from models.strategy import Setup, SimulationError, SingleFamily, Strategy

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
LABELS = LabelSpec(pt=1.0, sl=1.0, horizon=4, vol_window=2)
ONE = SingleFamily("m", 0.5)
# Fixed units, no caps in the way, every signal an order: the arithmetic stays readable.
RISK = RiskSettings(sizing="fixed_units", fixed_units=10.0, max_leverage=100.0)
SIGNALS = SignalSettings(
    buy_weight=0.0,
    avoid_regime_below=0.0,
    avoid_risk_below=0.0,
    min_multiplier=1.0,
    max_multiplier=1.0,
)


def candles(rows: list[tuple[float, float, float, float]], step: timedelta = HOUR) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0 + i * step for i in range(len(rows))],
            "open": [float(r[0]) for r in rows],
            "high": [float(r[1]) for r in rows],
            "low": [float(r[2]) for r in rows],
            "close": [float(r[3]) for r in rows],
            "volume": [1.0] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


NO_COSTS = Costs()


def setup(market: pl.DataFrame, costs: Costs = NO_COSTS) -> Setup:
    return Setup(Strategy(SIGNALS, RISK, costs, 10_000.0), market, LABELS, "BTCUSD", "1h")


# σ is the EWM std of log returns (span 2): wiggles first, then a signal at row 6.
WIGGLE = [(100, 101, 99, 101), (101, 102, 99, 99), (99, 101, 98, 100), (100, 101, 99, 101)]
PATH = [
    *WIGGLE,
    (101, 102, 100, 100),
    (100, 101, 99, 101),
    (101, 101.5, 100.5, 101),  # row 6: the signal bar (close 101)
    (101.2, 101.6, 100.9, 101.4),  # row 7: filled at this open
    (101.4, 250.0, 101.0, 200.0),  # row 8: the take-profit is touched
    (200.0, 201.0, 199.0, 200.0),
]


def _signal_at(market: pl.DataFrame, row: int) -> tuple[pl.Series, dict[str, np.ndarray]]:
    rows = market["ts"][row:]
    p = np.zeros(rows.len())
    p[0] = 0.9
    return rows, {"m": p}


def test_one_trade_by_hand() -> None:
    market = candles(PATH)
    costs = Costs(fee_bps=10.0, spread_bps=4.0, slippage_bps=1.0)
    rows, probas = _signal_at(market, 6)
    result = backtest(setup(market, costs), ONE, rows, probas, periods_per_year=365)
    trade = result.trades.row(0, named=True)
    sigma = float(
        pl.Series(np.diff(np.log(market["close"].to_numpy())))
        .ewm_std(span=2, adjust=False, min_samples=2)
        .to_list()[5]
    )
    take = 101 * math.exp(sigma)
    entry = 101.2 * (1 + 3 / 1e4)  # half spread + slippage against the buy
    exit_ = take * (1 - 2 / 1e4)  # a limit: half spread, no slippage
    fees = (entry + exit_) * 10 * 10 / 1e4
    assert (trade["entry_ts"], trade["exit_ts"], trade["reason"]) == (
        T0 + 7 * HOUR,
        T0 + 8 * HOUR,
        "TAKE_PROFIT",
    )
    assert trade["entry_price"] == pytest.approx(entry)
    assert trade["exit_price"] == pytest.approx(exit_)
    assert trade["pnl"] == pytest.approx(10 * (exit_ - entry) - fees)
    assert trade["ret"] == pytest.approx(trade["pnl"] / 10_000)
    # Marked at every close on one day: the day's equity is the balance after the trade.
    assert result.daily["equity"].to_list() == pytest.approx([10_000 + trade["pnl"]])
    assert result.strategy.total_return == pytest.approx(trade["pnl"] / 10_000)
    assert result.strategy.trades == 1 and result.strategy.win_rate == 1.0
    # Marked at the closes of the rows 6–9: in position at row 7's (entered, still open) only.
    assert result.strategy.exposure == pytest.approx(1 / 4)


def test_daily_series_is_the_marked_equity_over_calendar_days() -> None:
    # Bars 4 h apart: six a day; positions marked to market at every close.
    rows = [*PATH[:6], (101, 101.5, 100.5, 101), (101.2, 101.6, 100.9, 101.4)]
    rows += [(101.4 - k / 10, 101.5 - k / 10, 100.9 - k / 10, 101.3 - k / 10) for k in range(20)]
    market = candles(rows, step=timedelta(hours=4))
    s = Setup(Strategy(SIGNALS, RISK, Costs(), 10_000.0), market, LABELS, "BTCUSD", "4h")
    result = backtest(s, ONE, *_signal_at(market, 6), periods_per_year=365)
    equity = result.daily["equity"].to_numpy()
    daily = result.daily["ret"].to_numpy()
    assert daily == pytest.approx(equity / np.r_[10_000, equity[:-1]] - 1)
    assert result.daily["day"].to_list() == sorted(set(result.daily["day"].to_list()))
    assert result.strategy.sharpe == pytest.approx(statistics.mean(daily) / statistics.stdev(daily))


def test_buy_and_hold_by_hand() -> None:
    # Two bars a day on days 0, 1 and 3; day 2 has no candle (market closed).
    ts = [T0 + timedelta(hours=h) for h in (0, 12, 24, 36, 72, 84)]
    closes = [100.0, 102.0, 101.0, 99.0, 103.0, 104.0]
    market = pl.DataFrame(
        {"ts": ts, "open": closes, "high": closes, "low": closes, "close": closes},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    costs = Costs(fee_bps=10)
    result = backtest(
        setup(market, costs), ONE, market["ts"], {"m": np.zeros(6)}, periods_per_year=252
    )
    bh, cost = result.buy_and_hold, costs.round_trip  # 20 bp
    # Day closes 102, 99, (99), 104 from the entry close 100; the round trip on the last day,
    # scaled to that day's equity (0.99) so the series compounds to 104/100 − 1 − cost.
    daily = [102 / 100 - 1, 99 / 102 - 1, 0.0, 104 / 99 - 1 - cost * 100 / 99]
    assert result.daily["bh_ret"].to_list() == pytest.approx(daily, abs=1e-15)
    assert bh.total_return == pytest.approx(0.04 - 0.002, abs=1e-15)
    assert (bh.trades, bh.win_rate, bh.profit_factor, bh.exposure) == (1, 1.0, math.inf, 1.0)
    assert bh.max_drawdown == pytest.approx(1 - 99 / 102)  # marked at every close
    sr = statistics.mean(daily) / statistics.stdev(daily)
    assert bh.sharpe == pytest.approx(sr)
    assert bh.sharpe_annual == pytest.approx(sr * math.sqrt(252))
    assert bh.psr == pytest.approx(probabilistic_sharpe_ratio(daily))


def test_zero_trades_has_every_metric_defined_as_documented() -> None:
    market = candles(PATH)
    result = backtest(setup(market, Costs(fee_bps=5)), ONE, market["ts"], {"m": np.zeros(10)})
    metrics = result.to_dict()
    fields = [
        "trades",
        "win_rate",
        "profit_factor",
        "total_return",
        "max_drawdown",
        "exposure",
        "sharpe",
        "sharpe_annual",
        "psr",
        "dsr",
    ]
    assert set(metrics) == {*fields, *(f"bh_{f}" for f in fields), "days"}
    assert result.trades.height == 0 and result.daily["ret"].to_list() == [0.0]
    assert (metrics["trades"], metrics["total_return"], metrics["max_drawdown"]) == (0, 0, 0)
    assert metrics["exposure"] == 0.0
    for undefined in ("win_rate", "profit_factor", "sharpe", "sharpe_annual", "psr", "dsr"):
        assert math.isnan(metrics[undefined]), undefined


def test_deflation_is_the_dsr_of_the_daily_series() -> None:
    rng = np.random.default_rng(0)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 24 * 40)))
    market = candles([(c, c * 1.004, c * 0.996, c) for c in closes])
    rows = market["ts"][10:]
    result = backtest(setup(market), ONE, rows, {"m": rng.uniform(0, 1, rows.len())})
    assert math.isnan(result.strategy.dsr)
    deflated = result.deflated(20, 0.002)
    expected = deflated_sharpe_ratio(result.daily["ret"].to_numpy(), 20, 0.002)
    assert deflated.strategy.dsr == pytest.approx(expected)
    assert deflated.strategy.sharpe == result.strategy.sharpe
    with pytest.raises(BacktestError, match="both"):
        backtest(setup(market), ONE, rows, {"m": np.zeros(rows.len())}, n_trials=3)


@pytest.mark.parametrize(
    ("rows", "probas", "match"),
    [
        (lambda m: m["ts"][3:].reverse(), None, "sorted"),
        (lambda m: m["ts"][3:] + timedelta(minutes=1), None, "same ts"),
        (lambda m: m["ts"][3:], [0.9, 0.2], "one per row"),
        (lambda m: m["ts"][3:], [np.nan] * 7, "finite"),
        (lambda m: m["ts"][:0], [], "no signal rows"),
    ],
)
def test_bad_input_is_rejected(rows, probas, match) -> None:
    market = candles(PATH)
    r = rows(market)
    p = np.full(r.len(), 0.1) if probas is None else np.asarray(probas, dtype=float)
    with pytest.raises(SimulationError, match=match):
        backtest(setup(market), ONE, r, {"m": p})
    with pytest.raises(BacktestError, match="periods_per_year"):
        backtest(setup(market), ONE, market["ts"], {"m": np.zeros(10)}, periods_per_year=0)
