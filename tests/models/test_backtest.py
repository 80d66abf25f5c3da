"""Backtest: hand-built frames whose trades, costs, daily series and metrics are worked out here;
the vectorised one-at-a-time selection equals a per-bar loop on random data; buy-and-hold by hand;
zero trades; bad input rejected with a clear error."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.backtest import BacktestError, Costs, backtest, non_overlapping
from models.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
NO_COSTS = Costs()


def make_frame(
    exits: list[int | None],
    rets: list[float] | None = None,
    closes: list[float] | None = None,
    step: timedelta = HOUR,
) -> pl.DataFrame:
    """Row i enters at ts[i] and exits at row ``exits[i]`` (None: no complete label)."""
    n = len(exits)
    ts = [T0 + i * step for i in range(n)]
    rets = [0.0] * n if rets is None else rets
    frame = pl.DataFrame(
        {
            "ts": ts,
            "label_t1": [None if e is None else ts[e] for e in exits],
            "label_ret": [None if e is None else r for e, r in zip(exits, rets, strict=True)],
            "label_bars": [None if e is None else e - i for i, e in enumerate(exits)],
        },
        schema_overrides={"label_t1": pl.Datetime("us", "UTC"), "label_bars": pl.Int32},
    )
    closes = [100.0] * n if closes is None else closes
    return frame.with_columns(close=pl.Series(closes, dtype=pl.Float64))


def entries(result) -> list[datetime]:
    return result.trades["entry_ts"].to_list()


def test_signals_during_a_trade_are_skipped_and_reentry_at_the_exit_bar_is_allowed() -> None:
    frame = make_frame([3, 2, 4, 5, 6, 7, 7, 8, None])
    proba = [0.9, 0.9, 0.1, 0.9, 0.9, 0.8, 0.1, 0.9, 0.0]
    result = backtest(frame, proba, 0.8, NO_COSTS, periods_per_year=365)
    # 0 → exits at row 3; 1 skipped (open); 3 enters at the exit bar → exits at 5; 4 skipped;
    # 5 (proba = threshold counts) → exits at 7; 7 enters at that exit → exits at 8.
    ts = frame["ts"].to_list()
    assert entries(result) == [ts[0], ts[3], ts[5], ts[7]]
    assert result.trades["exit_ts"].to_list() == [ts[3], ts[5], ts[7], ts[8]]
    assert result.trades["bars"].to_list() == [3, 2, 2, 1]
    # in position 3 + 2 + 2 + 1 bars of the 8 after the first close: always
    assert result.strategy.exposure == pytest.approx(1.0)

    overlapping = backtest(frame, proba, 0.8, NO_COSTS, periods_per_year=365, allow_overlap=True)
    assert len(entries(overlapping)) == 6  # every signal


def test_costs_are_subtracted_exactly() -> None:
    costs = Costs(fee_bps=10, spread_bps=4, slippage_bps=3)
    # (2 × 10 fee + 4 spread + 2 × 3 slippage) bp = 30 bp per round trip
    assert costs.round_trip == pytest.approx(0.003, abs=1e-15)
    gross = [0.012, -0.004, 0.0, 0.025, 0.0]
    frame = make_frame([1, 2, 3, 4, None], rets=gross)
    result = backtest(frame, [1.0, 1.0, 1.0, 1.0, 0.0], 0.5, costs, periods_per_year=365)
    assert result.trades["gross"].to_list() == gross[:4]
    assert result.trades["net"].to_list() == pytest.approx(
        [0.009, -0.007, -0.003, 0.022], abs=1e-15
    )
    assert result.strategy.win_rate == pytest.approx(0.5)  # the 0.0 gross trade loses the costs
    # one day: every trade exits on 2024-01-01 and compounds
    assert result.daily["ret"].to_list() == pytest.approx([1.009 * 0.993 * 0.997 * 1.022 - 1])


def test_trade_statistics_by_hand() -> None:
    frame = make_frame(
        [2, 2, 4, 4, 5, 6, 7, 7, None], rets=[0.02, 0, -0.01, 0, -0.03, 0.05, 0, 0, 0]
    )
    proba = [1, 0, 1, 0, 1, 1, 0, 0, 0]
    result = backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365)
    report = result.strategy
    assert report.trades == 4
    assert report.win_rate == pytest.approx(2 / 4)
    assert report.profit_factor == pytest.approx((0.02 + 0.05) / (0.01 + 0.03))  # 1.75
    # equity at each exit: 1.02, 1.0098, 0.979506, 1.0284813
    assert report.total_return == pytest.approx(1.02 * 0.99 * 0.97 * 1.05 - 1)
    assert report.max_drawdown == pytest.approx(1 - 1.02 * 0.99 * 0.97 / 1.02)  # 3.97 %
    # bars in position 2 + 2 + 1 + 1 = 6 of the 8 bars up to the window end (row 8)
    assert report.exposure == pytest.approx(6 / 8)


def test_daily_series_books_each_trade_on_its_exit_day() -> None:
    step = timedelta(hours=6)  # four rows a day, days 0-3
    exits: list[int | None] = [min(i + 1, 15) for i in range(15)] + [None]
    exits[0], exits[2], exits[9] = 2, 3, 14
    rets = [0.0] * 16
    rets[0], rets[2], rets[9] = 0.03, -0.01, 0.02
    frame = make_frame(exits, rets=rets, step=step)
    proba = np.zeros(16)
    proba[[0, 2, 9]] = 1.0
    costs = Costs(fee_bps=5)  # 10 bp a round trip
    result = backtest(frame, proba, 0.5, costs, periods_per_year=365)

    # Trades exit day 0 12:00 (0.029), day 0 18:00 (−0.011) and day 3 12:00 (0.019).
    daily = [1.029 * 0.989 - 1, 0.0, 0.0, 0.019]
    assert result.daily["day"].to_list() == [date(2024, 1, d) for d in (1, 2, 3, 4)]
    assert result.daily["exits"].to_list() == [2, 0, 0, 1]
    assert result.daily["ret"].to_list() == pytest.approx(daily, abs=1e-15)
    sr = statistics.mean(daily) / statistics.stdev(daily)
    assert result.strategy.sharpe == pytest.approx(sr)
    assert result.strategy.sharpe_annual == pytest.approx(sr * math.sqrt(365))
    assert result.strategy.psr == pytest.approx(probabilistic_sharpe_ratio(daily))
    assert math.isnan(result.strategy.dsr)  # no trials given: nothing to deflate with

    deflated = backtest(
        frame, proba, 0.5, costs, periods_per_year=365, n_trials=20, sr_variance=0.05
    )
    assert deflated.strategy.dsr == pytest.approx(deflated_sharpe_ratio(daily, 20, 0.05))
    assert deflated.strategy.dsr < deflated.strategy.psr


def test_a_trade_exiting_after_the_last_row_extends_the_window() -> None:
    frame = make_frame([1, None])
    # the dataset's last labelled row exits two days later (e.g. rows after it were filtered)
    frame = frame.with_columns(label_t1=pl.Series([T0 + timedelta(days=2), None]))
    frame = frame.with_columns(label_ret=pl.Series([0.04, None]))
    result = backtest(frame, [1.0, 0.0], 0.5, NO_COSTS, periods_per_year=365)
    assert result.daily["ret"].to_list() == pytest.approx([0.0, 0.0, 0.04])
    assert result.strategy.total_return == pytest.approx(0.04)


def test_overlapping_trades_are_sized_one_over_horizon() -> None:
    rets = [0.04, -0.02, 0.08, 0.0, 0.0, 0.0]
    frame = make_frame([2, 3, 5, 4, 5, None], rets=rets)
    proba = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    result = backtest(
        frame, proba, 0.5, NO_COSTS, periods_per_year=365, allow_overlap=True, horizon=4
    )
    assert result.trades["size"].to_list() == [0.25] * 3
    assert result.strategy.total_return == pytest.approx(1.01 * 0.995 * 1.02 - 1)
    assert result.strategy.exposure == pytest.approx(0.25 * (2 + 2 + 3) / 5)
    assert result.strategy.win_rate == pytest.approx(2 / 3)  # size does not change the sign

    inferred = backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365, allow_overlap=True)
    assert inferred.trades["size"].to_list() == [1 / 3] * 3  # the longest label: 3 bars
    with pytest.raises(BacktestError, match="horizon"):
        backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365, allow_overlap=True, horizon=2)


def test_buy_and_hold_by_hand() -> None:
    # Two bars a day on days 0, 1 and 3; day 2 has no candle (market closed).
    ts = [T0 + timedelta(hours=h) for h in (0, 12, 24, 36, 72, 84)]
    closes = [100.0, 102.0, 101.0, 99.0, 103.0, 104.0]
    frame = pl.DataFrame(
        {
            "ts": ts,
            "close": closes,
            "label_t1": [*ts[1:], None],
            "label_ret": [0.0] * 5 + [None],
            "label_bars": [1] * 5 + [None],
        }
    )
    cost = Costs(fee_bps=10).round_trip  # 20 bp
    result = backtest(frame, np.zeros(6), 0.5, Costs(fee_bps=10), periods_per_year=252)
    bh = result.buy_and_hold
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


def test_candles_give_bars_and_closes_for_a_filtered_dataset() -> None:
    candle_ts = [T0 + h * HOUR for h in range(12)]
    closes = [100.0 + h for h in range(12)]
    candles = pl.DataFrame({"ts": candle_ts, "close": closes})
    # A filtered dataset (rows at hours 0, 3, 6), no close column.
    frame = pl.DataFrame(
        {
            "ts": [candle_ts[0], candle_ts[3], candle_ts[6]],
            "label_t1": [candle_ts[2], candle_ts[5], candle_ts[9]],
            "label_ret": [0.02, 0.02, 0.03],
            "label_bars": [2, 2, 3],
        }
    )
    with pytest.raises(BacktestError, match="candles="):
        backtest(frame, [1.0, 1.0, 1.0], 0.5, NO_COSTS, periods_per_year=365)
    result = backtest(frame, [1.0, 1.0, 1.0], 0.5, NO_COSTS, periods_per_year=365, candles=candles)
    # window: after the close at hour 0 up to the latest exit (hour 9) = 9 bars, 7 in position
    assert result.strategy.exposure == pytest.approx(7 / 9)
    assert result.buy_and_hold.total_return == pytest.approx(109 / 100 - 1)  # sold at hour 9

    late = candles.filter(pl.col("ts") > T0)
    with pytest.raises(BacktestError, match="cover the start"):
        backtest(frame, [1.0, 1.0, 1.0], 0.5, NO_COSTS, periods_per_year=365, candles=late)


def test_zero_trades_has_every_metric_defined_as_documented() -> None:
    frame = make_frame([1, 2, 3, None], closes=[100.0, 101.0, 99.0, 100.0])
    result = backtest(frame, [0.2, 0.3, 0.1, 0.0], 0.5, Costs(fee_bps=5), periods_per_year=365)
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
    assert all(isinstance(v, float) for v in metrics.values())
    assert result.trades.height == 0
    assert result.daily["ret"].to_list() == [0.0]
    assert (metrics["trades"], metrics["total_return"], metrics["max_drawdown"]) == (0, 0, 0)
    assert metrics["exposure"] == 0.0
    for undefined in ("win_rate", "profit_factor", "sharpe", "sharpe_annual", "psr", "dsr"):
        assert math.isnan(metrics[undefined]), undefined
    assert metrics["bh_trades"] == 1.0 and metrics["bh_total_return"] == pytest.approx(-0.001)


@pytest.mark.parametrize(
    ("mutate", "proba", "match"),
    [
        (lambda f: f.drop("label_ret"), None, "label_ret"),
        (lambda f: f.reverse(), None, "strictly increasing"),
        (lambda f: f, [0.9, 0.9], "shape"),
        (lambda f: f, [0.9, np.nan, 0.1, 0.1], "finite"),
        (lambda f: f, [0.9, 0.1, 0.1, 0.9], "without a complete label"),
        (lambda f: f.with_columns(ts=pl.col("ts").dt.date()), None, "Datetime"),
    ],
)
def test_bad_input_is_rejected(mutate, proba, match) -> None:
    frame = mutate(make_frame([1, 2, 3, None]))
    proba = [0.9, 0.1, 0.1, 0.1] if proba is None else proba
    with pytest.raises(BacktestError, match=match):
        backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365)


def test_bad_settings_are_rejected() -> None:
    frame = make_frame([1, 2, None])
    proba = [0.9, 0.1, 0.1]
    with pytest.raises(BacktestError, match="slippage_bps"):
        Costs(slippage_bps=-1)
    with pytest.raises(BacktestError, match="periods_per_year"):
        backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=0)
    with pytest.raises(BacktestError, match="both"):
        backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365, n_trials=10)
    with pytest.raises(ValueError, match="n_trials"):
        backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365, n_trials=0, sr_variance=0.1)


# --- the vectorised selection equals a per-bar loop ------------------------------------------


def one_at_a_time_loop(ts: list, t1: list, signal: list[bool]) -> list[int]:
    """The specification, bar by bar: skip bars while a trade is open, else take a signal."""
    taken: list[int] = []
    open_until = None
    for i in range(len(ts)):
        if open_until is not None and ts[i] < open_until:
            continue
        if signal[i]:
            taken.append(i)
            open_until = t1[i]
    return taken


@st.composite
def signalled_rows(draw):
    """Hours with gaps, exits 1-8 hours later (often exactly on a later row), random signals."""
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    hours = np.cumsum(gaps)
    holds = np.asarray(draw(st.lists(st.integers(1, 8), min_size=n, max_size=n)))
    signal = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    rets = draw(st.lists(st.floats(-0.1, 0.1), min_size=n, max_size=n))
    return hours, hours + holds, signal, rets


@settings(max_examples=300, deadline=None)
@given(data=signalled_rows())
def test_vectorised_selection_equals_the_per_bar_loop(data) -> None:
    hours, exit_hours, signal, rets = data
    expected = one_at_a_time_loop(hours.tolist(), exit_hours.tolist(), signal)
    assert non_overlapping(hours, exit_hours, np.asarray(signal)).tolist() == expected

    ts = [T0 + int(h) * HOUR for h in hours]
    frame = pl.DataFrame(
        {
            "ts": ts,
            "label_t1": [T0 + int(h) * HOUR for h in exit_hours],
            "label_ret": rets,
            "label_bars": (exit_hours - hours).astype(np.int32),
            "close": np.full(len(ts), 100.0),
        }
    )
    proba = np.where(signal, 0.7, 0.3)
    result = backtest(frame, proba, 0.5, Costs(fee_bps=1), periods_per_year=365)
    assert entries(result) == [ts[i] for i in expected]
    growth = [1 + rets[i] - 0.0002 for i in expected]
    assert result.strategy.total_return == pytest.approx(float(np.prod(growth)) - 1, abs=1e-12)
    overlapping = backtest(frame, proba, 0.5, NO_COSTS, periods_per_year=365, allow_overlap=True)
    assert overlapping.strategy.trades == sum(signal)
