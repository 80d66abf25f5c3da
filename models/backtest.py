"""Vectorised backtest of P(win) signals on triple-barrier labels, net of costs, reported next to
buy-and-hold over the same window. No look-ahead beyond what the labels define: a trade enters at
its bar's close and exits where the triple barrier says (``label_t1``, gross ``label_ret``).

Conventions (each chosen so the numbers cannot flatter the strategy):

* **Trades.** A row with ``proba ≥ threshold`` is a signal to go long at that bar's close. By
  default one position at a time: a signal while a trade is open is skipped, and the next trade is
  the first signal whose ``ts`` ≥ the open trade's exit ``label_t1`` (re-entering at the exit
  bar's close is allowed). With ``allow_overlap=True`` every signal is a trade of size
  ``1/horizon`` (``horizon`` given, else the largest ``label_bars`` in the frame, which is the
  label spec's horizon as soon as one trade timed out): a trade lasts at most ``horizon`` bars, so
  at most ``horizon`` are open at once and capital never exceeds 1.
* **Costs** (:class:`Costs`, basis points of price) are charged once per round trip, as a
  fraction of the entry notional: ``net = gross − (2·fee_bps + spread_bps + 2·slippage_bps)/1e4``.
  (Charging the exit side on the exit notional would differ by ``gross × exit-side cost``, under
  0.1 bp for a 1 % move at 10 bp.)
* **Window.** From the first row's UTC day to the UTC day of the later of the last row and the
  latest ``label_t1`` in the frame (so a trade exiting after the last row is still booked; the
  window does not depend on the threshold). Every calendar day of it is one observation.
* **Daily returns.** A trade's net return (× its size) is booked on its exit's UTC day; trades
  exiting the same day compound; days without an exit are 0. Sharpe (per day, ``ddof=1``), its
  annualisation by ``sqrt(periods_per_year)`` (the caller's choice: 365 for a 24/7 market; note the
  series holds every calendar day), PSR vs 0 and DSR (given ``n_trials`` and the variance of the
  trials' *daily* Sharpe ratios, else NaN) are all computed on this series.
* **Other metrics.** ``total_return`` compounds the daily series; ``max_drawdown`` is that of the
  equity marked at every trade exit (strategy) or every bar close (buy-and-hold), a positive
  fraction; ``exposure`` = Σ size × ``label_bars`` / bars in the window (bars after the first row's
  close up to the window end, counted in ``candles`` if given, else in the frame). With no trades
  Sharpe, PSR, DSR, win rate and profit factor are NaN (0/0: nothing was measured), trades,
  total return, drawdown and exposure are 0.
* **Buy-and-hold** buys at the close of the first row's bar and sells at the last close in the
  window, paying one round trip (booked on the last day, so its daily series compounds to
  ``last/first − 1 − cost``). Closes come from ``candles`` (``ts``, ``close``: the full candle
  series, needed when the frame is a filtered dataset without closes) or from the frame's own
  ``close`` column; one of them is required.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

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

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("ts", "label_t1", "label_ret", "label_bars")
US_PER_DAY = 86_400_000_000


class BacktestError(CandleflowError, ValueError):
    """A backtest was given inputs it cannot use (names the input and how to fix it)."""


@dataclass(frozen=True)
class Costs:
    """Trading costs in basis points of price: ``fee_bps`` and ``slippage_bps`` per side,
    ``spread_bps`` the full bid-ask spread (paid once per round trip: half in, half out)."""

    fee_bps: float = 0.0
    spread_bps: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise BacktestError(f"Costs.{name} must be a finite number ≥ 0, got {value}")

    @property
    def round_trip(self) -> float:
        """The cost of one round trip as a fraction of the entry notional."""
        return (2 * self.fee_bps + self.spread_bps + 2 * self.slippage_bps) / 10_000


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
    """``trades``: entry_ts, exit_ts, bars, size, gross, net (one row per trade taken).
    ``daily``: day (UTC date), exits, ret (strategy), bh_ret (buy-and-hold), every day of the
    window."""

    trades: pl.DataFrame
    daily: pl.DataFrame
    strategy: Report
    buy_and_hold: Report

    def to_dict(self) -> dict[str, float]:
        """Flat float metrics for MLflow: the strategy's unprefixed, buy-and-hold's as ``bh_…``."""
        return {
            **self.strategy.to_dict(),
            **self.buy_and_hold.to_dict("bh_"),
            "days": float(self.daily.height),
        }


@dataclass(frozen=True)
class _Rows:
    ts: np.ndarray  # int64 µs since the epoch (UTC); a naive datetime is taken as UTC
    t1: np.ndarray  # int64 µs; meaningless where not ``known``
    ret: np.ndarray
    bars: np.ndarray
    known: np.ndarray  # the row has a complete outcome


def _epoch_us(series: pl.Series, what: str) -> np.ndarray:
    if not isinstance(series.dtype, pl.Datetime):
        raise BacktestError(f"{what} must be a Datetime column, got {series.dtype}")
    return series.dt.epoch("us").fill_null(0).to_numpy().astype(np.int64)


def _sorted_ts(series: pl.Series, what: str) -> np.ndarray:
    if series.null_count():
        raise BacktestError(f"{what}: {series.null_count()} null timestamp(s)")
    ts = _epoch_us(series, what)
    if ts.size > 1 and not (np.diff(ts) > 0).all():
        raise BacktestError(f"{what}: ts must be strictly increasing (sort and deduplicate)")
    return ts


def _rows(frame: pl.DataFrame) -> _Rows:
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise BacktestError(
            f"backtest frame lacks {missing}; pass a dataset with its label columns"
        )
    if frame.is_empty():
        raise BacktestError("backtest frame is empty")
    ts = _sorted_ts(frame["ts"], "backtest frame")
    ret = frame["label_ret"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    bars = frame["label_bars"].fill_null(-1).to_numpy().astype(np.int64)
    known = frame["label_t1"].is_not_null().to_numpy() & np.isfinite(ret) & (bars >= 0)
    return _Rows(ts, _epoch_us(frame["label_t1"], "label_t1"), ret, bars, known)


def _signals(rows: _Rows, proba: Any, threshold: float) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != rows.ts.shape:
        raise BacktestError(f"proba has shape {p.shape}, the frame {rows.ts.size} rows")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise BacktestError("proba must be finite probabilities in [0, 1]")
    if not 0 <= threshold <= 1:
        raise BacktestError(f"threshold must lie in [0, 1], got {threshold}")
    signal = p >= threshold
    unknown = signal & ~rows.known
    if unknown.any():
        raise BacktestError(
            f"{int(unknown.sum())} signal(s) on rows without a complete label (first at row "
            f"{int(np.argmax(unknown))}); drop unlabeled rows before backtesting"
        )
    if (rows.t1[signal] <= rows.ts[signal]).any():
        raise BacktestError("label_t1 must be after ts on every signalled row")
    return signal


def non_overlapping(ts: np.ndarray, t1: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Indices of the trades taken one at a time: the first signal, then repeatedly the first
    signal whose ``ts`` ≥ the previous trade's exit ``t1``. ``ts`` strictly increasing and
    ``t1 > ts`` on signals. One searchsorted for all signals, then a loop over trades taken."""
    candidates = np.flatnonzero(signal)
    if candidates.size == 0:
        return candidates
    # For every signal at once: the first later signal allowed once it has exited.
    following = np.searchsorted(ts[candidates], t1[candidates], side="left")
    taken, k = [], 0
    while k < candidates.size:
        taken.append(k)
        k = max(int(following[k]), k + 1)  # t1 > ts makes this k + 1 at least; never stall
    return candidates[np.asarray(taken, dtype=np.int64)]


def _entries(
    rows: _Rows, signal: np.ndarray, allow_overlap: bool, horizon: int | None
) -> tuple[np.ndarray, float]:
    """Row indices of the trades and their size."""
    if not allow_overlap:
        return non_overlapping(rows.ts, rows.t1, signal), 1.0
    index = np.flatnonzero(signal)
    longest = int(rows.bars[index].max()) if index.size else 0
    if horizon is None:
        horizon = max(int(rows.bars[rows.known].max(initial=1)), 1)
    if int(horizon) != horizon or horizon < max(longest, 1):
        raise BacktestError(
            f"horizon must be an integer ≥ the longest trade ({longest} bars), got {horizon}"
        )
    return index, 1.0 / horizon


def _closes(frame: pl.DataFrame, candles: pl.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    prices = frame if candles is None else candles
    if "close" not in prices.columns or "ts" not in prices.columns:
        raise BacktestError(
            "buy-and-hold needs closes: pass candles= (ts, close) or a frame with a close column"
        )
    ts = _sorted_ts(prices["ts"], "candles" if candles is not None else "backtest frame")
    close = prices["close"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if not (np.isfinite(close) & (close > 0)).all():
        raise BacktestError("closes must be finite and positive")
    return ts, close


def _strategy_daily(
    days: np.ndarray, exit_us: np.ndarray, growth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns (trades exiting the same day compound) and the number of exits per day."""
    day = exit_us // US_PER_DAY - days[0]
    compounded = np.ones(days.size)
    np.multiply.at(compounded, day, growth)
    return compounded - 1.0, np.bincount(day, minlength=days.size).astype(np.int64)


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


def _exposure(in_position: float, window_bars: int, n_trades: int) -> float:
    if n_trades == 0:
        return 0.0
    if window_bars == 0:
        return math.nan
    exposure = in_position / window_bars
    if exposure > 1 + 1e-9:
        logger.warning(
            "backtest: exposure %.3f > 1: the frame is not every bar; pass candles= to count bars",
            exposure,
        )
    return exposure


def _trades_table(
    frame: pl.DataFrame, rows: _Rows, index: np.ndarray, size: float, costs: Costs
) -> pl.DataFrame:
    gross = rows.ret[index]
    return pl.DataFrame(
        {
            "entry_ts": frame["ts"].gather(index),
            "exit_ts": frame["label_t1"].gather(index),
            "bars": rows.bars[index],
            "size": np.full(index.size, size),
            "gross": gross,
            "net": gross - costs.round_trip,
        }
    )


def backtest(
    frame: pl.DataFrame,
    proba: Any,
    threshold: float,
    costs: Costs,
    *,
    periods_per_year: float,
    allow_overlap: bool = False,
    horizon: int | None = None,
    candles: pl.DataFrame | None = None,
    n_trials: int | None = None,
    sr_variance: float | None = None,
) -> BacktestResult:
    """Backtest going long where ``proba ≥ threshold`` on ``frame`` (``ts`` sorted, ``label_t1``,
    ``label_ret``, ``label_bars``; ``proba`` one per row) against buy-and-hold; conventions in the
    module docstring. ``n_trials`` / ``sr_variance``: how many configurations were tried and the
    variance of their daily Sharpe ratios, for the DSR."""
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise BacktestError(f"periods_per_year must be positive, got {periods_per_year}")
    trials = _trials(n_trials, sr_variance)
    rows = _rows(frame)
    index, size = _entries(rows, _signals(rows, proba, threshold), allow_overlap, horizon)
    price_ts, close = _closes(frame, candles)
    trades = _trades_table(frame, rows, index, size, costs)

    start_us = int(rows.ts[0])
    end_us = max(int(rows.ts[-1]), int(rows.t1[rows.known].max(initial=rows.ts[-1])))
    days = np.arange(start_us // US_PER_DAY, end_us // US_PER_DAY + 1)
    net, exit_us = trades["net"].to_numpy(), rows.t1[index]
    strategy_daily, exits = _strategy_daily(days, exit_us, 1.0 + size * net)
    inside = (price_ts >= start_us) & (price_ts <= end_us)
    bh_daily, bh_net, bh_marks = _buy_and_hold(
        price_ts[inside], close[inside], start_us, days, costs.round_trip
    )
    window_bars = int(np.count_nonzero(inside & (price_ts > start_us)))
    exposure = _exposure(size * float(rows.bars[index].sum()), window_bars, index.size)
    marks = size * net[np.argsort(exit_us, kind="stable")]  # equity at each exit, in order
    strategy = _report(strategy_daily, net, marks, exposure, periods_per_year, trials)
    bh_exposure = 1.0 if window_bars else math.nan
    bh = _report(bh_daily, np.array([bh_net]), bh_marks, bh_exposure, periods_per_year, trials)
    daily = pl.DataFrame(
        {
            "day": pl.Series(days, dtype=pl.Int32).cast(pl.Date),
            "exits": exits,
            "ret": strategy_daily,
            "bh_ret": bh_daily,
        }
    )
    return BacktestResult(trades, daily, strategy, bh)
