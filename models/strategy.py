"""The traded strategy, simulated candle by candle exactly as live trades it: the evidence the
gate reads is the evidence of what will be traded.

One definition, shared with live and the paper account:

* **entry**: the ensemble's vote (``models.signal.vote``), the signal weight, tier and position
  multiplier (``models.signal.score_signal``, with the simulated account's risk state and the
  volatility regime; the higher timeframe's confirmation and the TradingView alert are missing
  here, and so they are in live unless ``signals.weights.higher_tf`` / ``tradingview`` is set);
  an order only on an order tier;
* **sizing and caps**: ``models.risk.decide`` on the simulated account (balance, equity, peak, day
  start), at most ``risk.max_positions_per_symbol`` open positions per symbol (one by default);
* **fills, exits and costs**: ``core.strategy`` (next candle's open, barriers from the labels' σ
  multiples, stop first on a double touch, time-out, the instrument's cost model).

The account is marked at every candle close as the paper account marks it. What belongs to the
whole account — every symbol — is not evidence of one model and stays out: the loss limits (the
daily-loss circuit breaker, the drawdown kill switch and the risk component of the signal weight
read a healthy account here; in a stressed account live only ever trades less) and the caps
across symbols (``max_open_positions``, other symbols' exposure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl

from core.errors import CandleflowError
from core.feature_spec import LabelSpec
from core.settings_trading import RiskSettings, SignalSettings
from core.strategy import Candle, Costs, exit_for_candle
from core.timeframes import parse_timeframe
from features.labels import volatility
from models.ensemble import Method, combine
from models.risk import AccountState, Position, bars_per_year, decide, risk_state
from models.signal import regime_from_sigma, score_signal, vote

if TYPE_CHECKING:
    from core.config import Settings

US_PER_DAY = 86_400_000_000


class SimulationError(CandleflowError, ValueError):
    """The simulation was given inputs it cannot use (names them and how to fix it)."""


class Voting(Protocol):
    """How the families' probabilities become a vote (an ``Ensemble`` is one)."""

    weights: dict[str, float]
    method: Method
    threshold: float
    min_agree: int


@dataclass(frozen=True)
class SingleFamily:
    """One family voting alone (a tuning trial's strategy)."""

    family: str
    threshold: float
    method: Method = "weighted"
    min_agree: int = 1

    @property
    def weights(self) -> dict[str, float]:
        return {self.family: 1.0}


@dataclass(frozen=True)
class Strategy:
    """Everything besides the model that decides what is traded (see the module docstring)."""

    signals: SignalSettings
    risk: RiskSettings
    costs: Costs
    initial_balance: float = 100_000.0

    @classmethod
    def from_settings(cls, settings: Settings, symbol: str) -> Strategy:
        return cls(
            settings.signals,
            settings.risk,
            settings.costs.of(symbol),
            settings.paper.initial_balance,
        )


@dataclass
class _Position:
    signal_i: int
    side: int
    quantity: float
    stop: float
    take: float
    timeout_at: datetime
    ready_at: datetime  # the signal candle's close: the earliest a fill may open
    reference: float  # the signal close: pending exposure is priced at it, as live does
    entry_i: int = -1
    entry_price: float = 0.0
    fees: float = 0.0
    equity_at_signal: float = 0.0


@dataclass(frozen=True)
class Simulation:
    """``trades``: one row per closed trade. ``ts`` / ``equity``: the account marked at every
    candle close from the first signal bar on; ``in_position``: a position was open then."""

    trades: pl.DataFrame
    ts: np.ndarray  # int64 µs
    equity: np.ndarray
    in_position: np.ndarray
    initial_balance: float


TRADE_SCHEMA = {
    "signal_ts": pl.Datetime("us", "UTC"),
    "entry_ts": pl.Datetime("us", "UTC"),
    "exit_ts": pl.Datetime("us", "UTC"),
    "side": pl.Int8,
    "quantity": pl.Float64,
    "entry_price": pl.Float64,
    "exit_price": pl.Float64,
    "reason": pl.String,
    "bars": pl.Int32,
    "fees": pl.Float64,
    "pnl": pl.Float64,
    "ret": pl.Float64,
}


def epoch_us(series: pl.Series, what: str) -> np.ndarray:
    if not isinstance(series.dtype, pl.Datetime) or series.null_count():
        raise SimulationError(f"{what}: ts must be a Datetime column without nulls")
    return series.dt.epoch("us").to_numpy().astype(np.int64)


def _row_candles(rows_ts: pl.Series, candle_us: np.ndarray) -> np.ndarray:
    rows_us = epoch_us(rows_ts, "signal rows")
    at = np.searchsorted(candle_us, rows_us)
    if rows_us.size and (at.max() >= candle_us.size or (candle_us[at] != rows_us).any()):
        raise SimulationError("signal rows must be candles of the series given (same ts)")
    if rows_us.size > 1 and not (np.diff(rows_us) > 0).all():
        raise SimulationError("signal rows must be sorted by ts without duplicates")
    return at


def _check_probas(probas: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    out = {f: np.asarray(p, dtype=np.float64) for f, p in probas.items()}
    for family, p in out.items():
        if p.shape != (n,) or not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
            raise SimulationError(
                f"{family}: probabilities must be {n} finite values in [0, 1], one per row"
            )
    return out


class _Account:
    """The simulated account: the paper account's bookkeeping, in memory."""

    def __init__(self, balance: float) -> None:
        self.balance = balance
        self.positions: list[_Position] = []
        self.mark = 0.0

    def equity(self) -> float:
        held = (p for p in self.positions if p.entry_i >= 0)
        return self.balance + sum(p.side * p.quantity * (self.mark - p.entry_price) for p in held)

    def state(self, symbol: str) -> AccountState:
        """As live sees it — held positions at the mark, pending orders at their signal close —
        in a healthy account: the loss limits are the whole account's (module docstring)."""
        positions = tuple(
            Position(symbol, p.quantity * (self.mark if p.entry_i >= 0 else p.reference), p.side)
            for p in self.positions
        )
        equity = self.equity()
        return AccountState(equity, equity, equity, positions, self.balance)


@dataclass(frozen=True)
class Setup:
    """What a backtest trades on besides the model: the strategy, the instrument's candles
    (the whole stored series: positions are followed past the signal rows) and the labels' spec
    (σ, barriers, horizon) the model was trained with."""

    strategy: Strategy
    candles: pl.DataFrame
    labels: LabelSpec
    symbol: str
    timeframe: str


def simulate(
    setup: Setup, voting: Voting, rows_ts: pl.Series, probas: Mapping[str, np.ndarray]
) -> Simulation:
    """Trade the signal rows ``rows_ts`` (each a candle of ``setup.candles``, with its families'
    probabilities) through the strategy; positions opened on them are followed to their exit on
    the later candles."""
    if rows_ts.is_empty():
        raise SimulationError("no signal rows to simulate")
    candle_us = epoch_us(setup.candles["ts"], "candles")
    rows_at = _row_candles(rows_ts, candle_us)
    probas = _check_probas(probas, rows_at.size)
    _, long = combine(probas, voting.weights, voting.method, voting.threshold, voting.min_agree)
    signal_row = {int(rows_at[k]): k for k in np.flatnonzero(long)}
    loop = _Loop(setup, voting, probas)
    return loop.run(candle_us, int(rows_at[0]), int(rows_at[-1]), signal_row)


class _Loop:
    """One pass over the candles (kept as an object so each step is a short method)."""

    def __init__(self, setup: Setup, voting: Voting, probas: dict[str, np.ndarray]) -> None:
        self.s, self.voting, self.probas = setup.strategy, voting, probas
        candles = setup.candles
        self.o, self.h, self.lo, self.c = (
            candles[k].cast(pl.Float64).to_numpy() for k in ("open", "high", "low", "close")
        )
        self.ts = candles["ts"]
        self.sigma = volatility(candles, setup.labels)
        self.labels, self.symbol = setup.labels, setup.symbol
        self.tf = parse_timeframe(setup.timeframe)
        self.periods = bars_per_year(self.tf.name, setup.symbol)
        self.account = _Account(setup.strategy.initial_balance)
        self.trades: list[tuple] = []

    def run(self, candle_us: np.ndarray, first: int, last: int, signals: dict) -> Simulation:
        account, stamps = self.account, self.ts.to_list()
        equity, held = [], []
        for j in range(first, candle_us.size):
            if j > last and not account.positions:
                break
            if account.positions:
                self._step(j, stamps[j])
            account.mark = float(self.c[j])
            equity.append(account.equity())
            held.append(any(p.entry_i >= 0 for p in account.positions))
            if j in signals:
                self._decide(j, signals[j], stamps[j])
        end = first + len(equity)
        return Simulation(
            self._trades(self.ts),
            candle_us[first:end],
            np.asarray(equity, dtype=np.float64),
            np.asarray(held, dtype=bool),
            self.s.initial_balance,
        )

    def _trades(self, ts: pl.Series) -> pl.DataFrame:
        names = ("signal_i", "entry_i", "exit_i", "side", "quantity", "entry_price")
        names += ("exit_price", "reason", "fees", "pnl", "ret")
        raw = pl.DataFrame(self.trades, schema=names, orient="row")
        if raw.is_empty():
            return pl.DataFrame(schema=TRADE_SCHEMA)
        index = {k: raw[k].cast(pl.Int64) for k in ("signal_i", "entry_i", "exit_i")}
        return pl.DataFrame(
            {
                "signal_ts": ts.gather(index["signal_i"]),
                "entry_ts": ts.gather(index["entry_i"]),
                "exit_ts": ts.gather(index["exit_i"]),
                **{k: raw[k] for k in names[3:8]},
                "bars": index["exit_i"] - index["signal_i"],
                **{k: raw[k] for k in names[8:]},
            }
        ).cast(TRADE_SCHEMA)

    def _step(self, j: int, ts: datetime) -> None:
        """Fill pending orders at this candle's open and close what it exits, in order."""
        account, costs = self.account, self.s.costs
        candle = Candle(ts, float(self.o[j]), float(self.h[j]), float(self.lo[j]), float(self.c[j]))
        for p in list(account.positions):
            if p.entry_i < 0 and ts >= p.ready_at:
                p.entry_i, p.entry_price = j, costs.fill_price(candle.open, p.side)
                fee = costs.fee(p.entry_price, p.quantity)
                p.fees += fee
                account.balance -= fee
            if p.entry_i < 0:
                continue
            hit = exit_for_candle(p.side, p.stop, p.take, p.timeout_at, candle, costs)
            if hit is None:
                continue
            price, reason = hit
            fee = costs.fee(price, p.quantity)
            gross = p.side * p.quantity * (price - p.entry_price)
            account.balance += gross - fee
            account.positions.remove(p)
            pnl = gross - p.fees - fee
            row = (p.signal_i, p.entry_i, j, p.side, p.quantity, p.entry_price, price, reason)
            self.trades.append((*row, p.fees + fee, pnl, pnl / p.equity_at_signal))

    def _decide(self, j: int, row: int, ts: datetime) -> None:
        """The signal at this candle's close and, if it is an order the risk layer approves,
        a pending position (filled on a later candle)."""
        account, s = self.account, self.s
        if len(account.positions) >= s.risk.max_positions_per_symbol:
            return  # refused by decide() anyway; skipping the vote saves the work
        probas = {f: float(p[row]) for f, p in self.probas.items()}
        v = self.voting
        vote_ = vote(probas, v.weights, v.method, v.threshold, v.min_agree)
        state = account.state(self.symbol)
        regime = regime_from_sigma(self.sigma[: j + 1], s.signals)
        signal = score_signal(vote_, s.signals, risk_state(state, s.risk), regime=regime)
        request = signal.order(self.symbol, float(self.c[j]), float(self.sigma[j]))
        if request is None:
            return
        decision = decide(request, state, s.risk, self.labels, periods_per_year=self.periods)
        if not decision.approved:
            return
        timeout = decision.timeout_bars if decision.timeout_bars is not None else 0
        account.positions.append(
            _Position(
                signal_i=j,
                side=decision.side,
                quantity=decision.quantity,
                stop=float(decision.stop_loss),
                take=float(decision.take_profit),
                timeout_at=ts + timeout * self.tf.duration,
                ready_at=ts + self.tf.duration,
                reference=float(self.c[j]),
                equity_at_signal=state.equity,
            )
        )
