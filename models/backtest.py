"""The backtest: the strategy (``models.strategy``: the vote, signal weight, sizing, caps,
fills, exits and costs live trades with) simulated over signal rows, reported next to
buy-and-hold over the same window.

Conventions (each chosen so the numbers cannot flatter the strategy):

* **Window.** From the first signal row's UTC day to the day of the last candle the simulation
  marked: the last signal row, or later while a position opened on the rows is still open
  (followed to its exit on the candles after the rows). Every calendar day of it is one
  observation.
* **Daily returns** of the simulated account's equity, marked to market at every candle close
  (a day without candles returns 0): the last mark of each UTC day against the one before.
  Sharpe (per day, ``ddof=1``), its annualisation by ``sqrt(periods_per_year)`` (365: the series
  holds every calendar day), PSR vs 0 and DSR (given ``n_trials`` and the variance of the
  trials' *daily* Sharpe ratios, else NaN) are all computed on this series.
* **Other metrics.** ``total_return`` of the equity; ``max_drawdown`` of the equity marks (a
  positive fraction); ``exposure`` the share of marked candles with an open position; win rate
  and profit factor over the closed trades' net PnL. With no trades Sharpe, PSR, DSR, win rate
  and profit factor are NaN (nothing was measured); trades, total return, drawdown and exposure
  are 0.
* **Buy-and-hold** buys at the close of the first row's bar and sells at the last close in the
  window, paying one round trip of the instrument's cost model (booked on the last day, so its
  daily series compounds to ``last/first − 1 − cost``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
import polars as pl

from core.errors import CandleflowError
from models.metrics import (
    annualised_sharpe,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    max_drawdown,
    probabilistic_sharpe_ratio,
    profit_factor,
    sharpe,
    win_rate,
)
from models.strategy import US_PER_DAY, Setup, Simulation, Voting, epoch_us, simulate

logger = logging.getLogger(__name__)

PERIODS_PER_YEAR = 365  # the daily series holds every calendar day


class BacktestError(CandleflowError, ValueError):
    """A backtest was given inputs it cannot use (names the input and how to fix it)."""


@dataclass(frozen=True)
class Report:
    """One strategy's metrics over the backtest window (see the module docstring)."""

    trades: int
    win_rate: float
    profit_factor: float
    total_return: float
    max_drawdown: float
    exposure: float
    sharpe: float
    sharpe_annual: float
    psr: float
    dsr: float

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class BacktestResult:
    """``trades``: the simulation's closed trades (``models.strategy.TRADE_SCHEMA``).
    ``daily``: day (UTC date), exits, equity (end of day), ret (strategy), bh_ret
    (buy-and-hold), every day of the window."""

    trades: pl.DataFrame
    daily: pl.DataFrame
    strategy: Report
    buy_and_hold: Report

    def deflated(self, n_trials: float, sr_variance: float) -> BacktestResult:
        """The same result with both DSRs for ``n_trials`` trials of daily Sharpe variance
        ``sr_variance``."""
        daily = self.daily
        return replace(
            self,
            strategy=replace(self.strategy, dsr=_dsr(daily["ret"], n_trials, sr_variance)),
            buy_and_hold=replace(
                self.buy_and_hold, dsr=_dsr(daily["bh_ret"], n_trials, sr_variance)
            ),
        )

    def to_dict(self) -> dict[str, float]:
        """Flat float metrics for MLflow: the strategy's unprefixed, buy-and-hold's as ``bh_…``."""
        return {
            **self.strategy.to_dict(),
            **self.buy_and_hold.to_dict("bh_"),
            "days": float(self.daily.height),
        }


def _dsr(returns: pl.Series, n_trials: float, sr_variance: float) -> float:
    expected_max_sharpe(n_trials, sr_variance)  # validates both
    return deflated_sharpe_ratio(returns.to_numpy(), n_trials, sr_variance)


def _buy_and_hold(
    w_ts: np.ndarray, w_close: np.ndarray, start_us: int, days: np.ndarray, cost: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """From the closes inside the window: daily returns (round trip booked on the last day), the
    trade's net return and the bar-close returns of its equity (the cost as a last step)."""
    if w_ts.size == 0 or w_ts[0] != start_us:
        raise BacktestError(
            "the closes do not cover the start of the backtest window (no candle at the first "
            "row's ts); pass candles= spanning the frame"
        )
    entry = w_close[0]
    eod = w_close[np.searchsorted(w_ts // US_PER_DAY, days, side="right") - 1]
    previous = np.r_[entry, eod[:-1]]
    daily = eod / previous - 1.0
    daily[-1] -= cost * entry / previous[-1]  # compounds to last/entry − 1 − cost exactly
    equity = np.r_[w_close / entry, w_close[-1] / entry - cost]
    return daily, float(w_close[-1] / entry - 1.0 - cost), equity[1:] / equity[:-1] - 1.0


def _report(
    daily: np.ndarray,
    net: np.ndarray,
    marks: np.ndarray,
    exposure: float,
    periods_per_year: float,
    trials: tuple[int, float] | None,
) -> Report:
    return Report(
        trades=int(net.size),
        win_rate=win_rate(net),
        profit_factor=profit_factor(net),
        total_return=float(np.prod(1.0 + daily) - 1.0),
        max_drawdown=max_drawdown(marks),
        exposure=exposure,
        sharpe=sharpe(daily),
        sharpe_annual=annualised_sharpe(daily, periods_per_year),
        psr=probabilistic_sharpe_ratio(daily),
        dsr=math.nan if trials is None else deflated_sharpe_ratio(daily, *trials),
    )


def _trials(n_trials: int | None, sr_variance: float | None) -> tuple[int, float] | None:
    if (n_trials is None) != (sr_variance is None):
        raise BacktestError("give both n_trials and sr_variance for the DSR, or neither")
    if n_trials is None or sr_variance is None:
        return None
    expected_max_sharpe(n_trials, sr_variance)  # validates both now, not after the work
    return n_trials, sr_variance


def _closes(candles: pl.DataFrame, start_us: int, end_us: int) -> tuple[np.ndarray, np.ndarray]:
    ts = epoch_us(candles["ts"], "candles")
    close = candles["close"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    inside = (ts >= start_us) & (ts <= end_us)
    if not (np.isfinite(close[inside]) & (close[inside] > 0)).all():
        raise BacktestError("closes must be finite and positive")
    return ts[inside], close[inside]


def _daily_equity(sim: Simulation, days: np.ndarray) -> np.ndarray:
    """The last equity mark of each day (carried over days without candles)."""
    last = np.searchsorted(sim.ts // US_PER_DAY, days, side="right") - 1
    return sim.equity[last]  # the first day always holds the first mark


def backtest(
    setup: Setup,
    voting: Voting,
    rows_ts: pl.Series,
    probas: Mapping[str, np.ndarray],
    *,
    periods_per_year: float = PERIODS_PER_YEAR,
    n_trials: int | None = None,
    sr_variance: float | None = None,
) -> BacktestResult:
    """Trade the signal rows ``rows_ts`` (families' probabilities ``probas``, one per row) with
    the strategy and report it against buy-and-hold (module docstring). ``n_trials`` /
    ``sr_variance``: how many configurations were tried and the variance of their daily Sharpe
    ratios, for the DSR."""
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise BacktestError(f"periods_per_year must be positive, got {periods_per_year}")
    trials = _trials(n_trials, sr_variance)
    sim = simulate(setup, voting, rows_ts, probas)
    start_us, end_us = int(sim.ts[0]), int(sim.ts[-1])
    days = np.arange(start_us // US_PER_DAY, end_us // US_PER_DAY + 1)
    eod = _daily_equity(sim, days)
    daily = eod / np.r_[sim.initial_balance, eod[:-1]] - 1.0
    price_ts, close = _closes(setup.candles, start_us, end_us)
    bh_daily, bh_net, bh_marks = _buy_and_hold(
        price_ts, close, start_us, days, setup.strategy.costs.round_trip
    )
    net = sim.trades["ret"].to_numpy()
    marks = sim.equity / np.r_[sim.initial_balance, sim.equity[:-1]] - 1.0
    exposure = float(sim.in_position.mean()) if net.size else 0.0
    strategy = _report(daily, net, marks, exposure, periods_per_year, trials)
    bh = _report(bh_daily, np.array([bh_net]), bh_marks, 1.0, periods_per_year, trials)
    exit_day = epoch_us(sim.trades["exit_ts"], "trades") // US_PER_DAY - days[0]
    frame = pl.DataFrame(
        {
            "day": pl.Series(days, dtype=pl.Int32).cast(pl.Date),
            "exits": np.bincount(exit_day, minlength=days.size).astype(np.int64),
            "equity": eod,
            "ret": daily,
            "bh_ret": bh_daily,
        }
    )
    return BacktestResult(sim.trades, frame, strategy, bh)
