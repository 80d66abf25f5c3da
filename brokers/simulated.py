"""The embedded default market: deterministic, seeded candles for every catalogue instrument,
realistic enough to learn on (fat tails, volatility clustering, regimes, sessions), with a planted,
documented edge of tunable strength.

Hourly layer, generated from ``EPOCH`` (2018-01-01, a Monday) per (seed, symbol), ``H`` = hour:

* regime ``R_d`` per UTC day ∈ {trend, range, volatile}: a Markov chain (``_TRANSITIONS``,
  stationary ≈ 53 % / 37 % / 11 %) with volatility multipliers ≈ 0.93 / 0.74 / 1.79;
* shocks ``ε_H`` ~ Student-t(5) scaled to unit variance, independent of everything before;
* ``σ_H`` = asset hourly vol × session × intraday seasonality × regime × exp(day-level AR(1),
  φ = 0.9) × exp(0.8 · EWMA over 24 h of min(|ε|, 3)): volatility clusters on past magnitudes;
* returns ``r_H = σ_H · (ε_H + a · m_{H−1}) / sqrt(1 + a²)``, ``a = edge · K · s(R_d)`` on
  trading hours (0 while closed), ``K = 3.0``, ``s`` = +1 (trend), −0.4 (range: reversed, weaker),
  0 (volatile), ``m_H = Σ_{j=0}^{23} w_j · ε_{H−j}`` over trading hours (closed hours count as 0),
  ``w_j ∝ 12 − j`` for ``j < 12`` and ``∝ −6.5`` for ``12 ≤ j < 24``, scaled to ``Σ w_j² = 1``
  (``w_0`` ≈ 0.353). In a trend the last 12 hours' standardized moves continue (momentum) and
  those of the 12 hours before are taken back; ``Σ w_j = 0``, so a shock's total effect on the
  price after a day is its own size: long-horizon volatility and price levels barely change with
  ``edge``, only the timing of moves becomes predictable; ``sqrt(1 + a²)`` keeps hourly volatility
  independent of ``edge``. All the edge uses lies in the last 24 h: vol-normalised past returns
  over 1–24 h see it (net momentum: trend days are commoner and their sign stronger); volatility
  ratios help with the regime-dependent sign (range days are calm, volatile days wild). Measured
  on 2 years of 1 h candles, 7 default symbols × 3 seeds, logistic regression on vol-normalised
  returns over 1/3/6/12/24 h predicting the sign of the next 12 h (70/30 time split): mean AUC
  ≈ 0.566 (sd 0.036 across series) at edge 0.12, 0.535 at 0.06, 0.617 at 0.3, 0.495 at 0;
  lag-1 autocorrelation of 1 h returns ≈ 0.09 at 0.12. Why 0.215 by default
  (``core.settings_brokers.DEFAULT_EDGE``; bench/bench_promotion.py: the whole pipeline, 2 years,
  ``--trials 10``, walk-forward out-of-sample evidence net of costs, DSR over N = 40 trials counted
  as the 8–16 independent trials they amount to, 7 symbols × seeds 7, 8, 9): 17 of 21 trainings
  promoted at 0.215 (out-of-sample AUC 0.57–0.65, promoted net Sharpe 2.1–5.3, median 3.8),
  15 of 21 at 0.2 (median 3.7), 19 of 21 at 0.25 but a median of 4.5, and at 0.3 net Sharpes of
  4–7: too good to be a real strategy. What a good real strategy shows, the default should show;
  0 is the canary (0 of 21 promoted, AUC 0.500 ± 0.016).
* ``edge = 0``: ``r_H = σ_H ε_H``, ``σ_H`` known beforehand, ``ε_H`` symmetric and independent —
  a driftless random walk in log price whose sign nothing predicts;
* log price = cumulative sum of ``r_H``, shifted so the price at ``REFERENCE`` (2024-01-01) is the
  asset's catalogue level (EURUSD 1.08, BTCUSD 40 000, US500 4 500, …).

``Session.FX`` instruments have no candles from Friday 22:00 to Sunday 22:00 UTC; the price keeps
diffusing at 0.3 × volatility, so Sunday opens with a gap. Each hour holds 60 one-minute candles
(a Student-t bridge pinned to the hourly closes, one generator per day) and every timeframe is
aggregated from them: a candle is the same whatever range, timeframe or horizon is asked for.
Volumes are positive multiples of a power of two (exact sums in any order) and follow volatility.
The candle containing ``now`` is returned as it stands: completed minutes plus the current minute's
open (no volume yet).
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from brokers.base import BaseBroker, BrokerCapabilities
from core.candles import CANDLE_SCHEMA, empty_candles
from core.errors import UnknownSymbolError
from core.instruments import CATALOGUE, AssetClass, Session, instrument
from core.settings_brokers import DEFAULT_EDGE
from core.symbols import normalize_symbol
from core.timeframes import TIMEFRAMES, Timeframe, as_utc

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

EPOCH = datetime(2018, 1, 1, tzinfo=UTC)  # a Monday: weekday of day d is d % 7
REFERENCE = datetime(2024, 1, 1, tzinfo=UTC)  # the price equals the catalogue level here
_REF_HOUR = int((REFERENCE - EPOCH).total_seconds()) // 3600
_MINUTE_US = 60_000_000
_EPOCH_US = int(EPOCH.timestamp()) * 1_000_000
_DAY_MINUTES = 1440

# Regimes: 0 trend, 1 range, 2 volatile (rows: from, columns: to).
_TRANSITIONS = np.array([[0.92, 0.05, 0.03], [0.08, 0.89, 0.03], [0.12, 0.13, 0.75]])
_REGIME_SIGN = np.array([1.0, -0.4, 0.0])
_EDGE_SCALE = 3.0  # K: a = edge · K · s(regime)
# m's weights: momentum over the last 12 h, then an equal and opposite pull from the 12 h before,
# so Σ w = 0: a shock's total effect on the price after 24 h is its own size (long-horizon vol
# and the catalogue levels stay honest; only the timing of moves is predictable).
_EDGE_WEIGHTS = np.concatenate((np.arange(12.0, 0.0, -1.0), np.full(12, -6.5)))
_EDGE_WEIGHTS /= math.sqrt(float(np.sum(_EDGE_WEIGHTS**2)))
_NU = 5.0  # Student-t degrees of freedom of the hourly and minute shocks
_T_SD = math.sqrt(_NU / (_NU - 2.0))
_GARCH_BETA, _GARCH_LAGS, _GARCH_DECAY, _GARCH_CAP = 0.8, 24, 0.8, 3.0
_GARCH_W = _GARCH_DECAY ** np.arange(1, _GARCH_LAGS + 1)
_GARCH_W /= _GARCH_W.sum()


def _capped_abs_moments(cap: float) -> tuple[float, float]:
    """Mean and variance of min(|ε|, cap) for the standardized Student-t (numerical integral)."""
    x = np.linspace(0.0, cap, 20001)
    log_c = math.lgamma((_NU + 1) / 2) - math.lgamma(_NU / 2) - 0.5 * math.log(_NU * math.pi)
    density = 2.0 * _T_SD * np.exp(log_c) * (1 + (x * _T_SD) ** 2 / _NU) ** (-(_NU + 1) / 2)
    tail = 1.0 - float(np.trapezoid(density, x))
    mean = float(np.trapezoid(x * density, x)) + cap * tail
    second = float(np.trapezoid(x * x * density, x)) + cap * cap * tail
    return mean, second - mean * mean


_CAPPED_MEAN, _CAPPED_VAR = _capped_abs_moments(_GARCH_CAP)
_DAY_PHI, _DAY_TAU = 0.9, 0.25  # day-level AR(1) log-volatility
_CLOSED_VOL = 0.3
_WICK = 0.6
_BLOCK_DAYS = 32  # hourly draws come in blocks of days; the hourly path grows in such blocks
_CHUNK_DAYS = 64  # minutes are built this many days at a time (bounded memory)
_STREAM_HOURLY, _STREAM_MINUTE = 1, 2


_PI = np.linalg.matrix_power(_TRANSITIONS, 1024)[0]  # the chain's stationary distribution
_REGIME_VOL = np.array([0.75, 0.60, 1.45])
_REGIME_VOL /= math.sqrt(float(_PI @ _REGIME_VOL**2))


@dataclass(frozen=True, slots=True)
class _Asset:
    price: float  # level at REFERENCE
    annual_vol: float
    volume: float  # mean volume of a minute
    volume_step: float  # volumes are multiples of this power of two


_ASSETS: dict[str, _Asset] = {
    "EURUSD": _Asset(1.08, 0.07, 90, 1.0),
    "GBPUSD": _Asset(1.27, 0.08, 80, 1.0),
    "USDJPY": _Asset(150.0, 0.09, 85, 1.0),
    "USDCHF": _Asset(0.88, 0.07, 50, 1.0),
    "AUDUSD": _Asset(0.66, 0.10, 60, 1.0),
    "USDCAD": _Asset(1.35, 0.06, 55, 1.0),
    "NZDUSD": _Asset(0.61, 0.10, 40, 1.0),
    "EURJPY": _Asset(162.0, 0.09, 60, 1.0),
    "EURGBP": _Asset(0.86, 0.05, 45, 1.0),
    "XAUUSD": _Asset(2000.0, 0.15, 120, 1.0),
    "XAGUSD": _Asset(23.0, 0.25, 70, 1.0),
    "BTCUSD": _Asset(40000.0, 0.60, 4.0, 2.0**-8),
    "ETHUSD": _Asset(2500.0, 0.70, 50.0, 2.0**-6),
    "SOLUSD": _Asset(100.0, 0.90, 600.0, 2.0**-4),
    "US500": _Asset(4500.0, 0.16, 300, 1.0),
    "US100": _Asset(16000.0, 0.20, 250, 1.0),
    "DE40": _Asset(16500.0, 0.17, 150, 1.0),
}
_DEFAULT_ASSET = _Asset(100.0, 0.20, 100, 1.0)  # for a catalogue entry added without parameters
# Intraday volatility/volume seasonality: (amplitude, UTC hour of the peak).
_SEASON = {
    AssetClass.FX: (0.35, 14),
    AssetClass.METAL: (0.35, 14),
    AssetClass.INDEX: (0.45, 15),
    AssetClass.CRYPTO: (0.15, 15),
}


def _season(asset_class: AssetClass) -> np.ndarray:
    amplitude, peak = _SEASON.get(asset_class, (0.2, 14))
    profile = 1.0 + amplitude * np.cos(2 * np.pi * (np.arange(24) - peak) / 24)
    return profile / np.sqrt(np.mean(profile**2))


def _closed_hours(n_days: int) -> np.ndarray:
    """Friday 22:00 → Sunday 22:00 UTC, per hour from EPOCH."""
    weekday = np.repeat(np.arange(n_days) % 7, 24)
    hour = np.tile(np.arange(24), n_days)
    return ((weekday == 4) & (hour >= 22)) | (weekday == 5) | ((weekday == 6) & (hour < 22))


@dataclass(frozen=True, slots=True)
class _Path:
    """The hourly layer: log price at every hour boundary (``n_hours + 1``), σ and trading hours."""

    log_price: np.ndarray
    sigma: np.ndarray
    is_open: np.ndarray
    regime: np.ndarray  # per day
    unit_sigma: float  # the asset's plain hourly σ (for volume scaling)


def _day_states(u: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequential day-level state: the regime chain and the AR(1) log-volatility."""
    cumulative = np.cumsum(_TRANSITIONS, axis=1)
    regime = np.empty(len(u), dtype=np.int8)
    level = np.empty(len(u))
    state = min(int(np.searchsorted(np.cumsum(_PI), u[0])), 2)
    value = _DAY_TAU * eta[0]
    innovation = _DAY_TAU * math.sqrt(1 - _DAY_PHI**2)
    for day in range(len(u)):
        if day:  # rows may sum to 0.999…: clamp the rare overshoot to the last regime
            state = min(int(np.searchsorted(cumulative[state], u[day])), 2)
            value = _DAY_PHI * value + innovation * eta[day]
        regime[day], level[day] = state, value
    return regime, level


def _lagged_sum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_j weights[j] · values[t − 1 − j]`` (zeros before the start): a causal FIR filter built
    from elementwise adds, so each value is bit-identical whatever the array's length."""
    out = np.zeros_like(values)
    for lag, weight in enumerate(weights, start=1):
        if lag < len(values):
            out[lag:] += weight * values[:-lag]
    return out


def _build_path(seed: int, edge: float, symbol: str, n_days: int) -> _Path:
    crc = zlib.crc32(symbol.encode())
    spec, asset = instrument(symbol), _ASSETS.get(symbol, _DEFAULT_ASSET)
    eps, eta, u = [], [], []
    for block in range(-(-n_days // _BLOCK_DAYS)):
        rng = np.random.default_rng([seed, crc, block, _STREAM_HOURLY])
        eps.append(rng.standard_t(_NU, (_BLOCK_DAYS, 24)) / _T_SD)
        eta.append(rng.standard_normal(_BLOCK_DAYS))
        u.append(rng.random(_BLOCK_DAYS))
    shocks = np.concatenate(eps)[:n_days].ravel()
    regime, level = _day_states(np.concatenate(u)[:n_days], np.concatenate(eta)[:n_days])
    closed = _closed_hours(n_days) if spec.session is Session.FX else np.zeros(n_days * 24, bool)
    session = np.where(closed, _CLOSED_VOL, 1.0)
    unit = asset.annual_vol / math.sqrt(8760 * float(np.mean(session[: 7 * 24] ** 2)))
    capped = np.minimum(np.abs(shocks), _GARCH_CAP) - _CAPPED_MEAN
    clustering = _GARCH_BETA * _lagged_sum(capped, _GARCH_W)
    clustering -= _GARCH_BETA**2 * _CAPPED_VAR * float(np.sum(_GARCH_W**2))
    day_vol = np.repeat(_REGIME_VOL[regime] * np.exp(level - _DAY_TAU**2), 24)
    sigma = unit * session * np.tile(_season(spec.asset_class), n_days) * day_vol
    sigma *= np.exp(clustering)
    a = np.where(closed, 0.0, edge * _EDGE_SCALE * np.repeat(_REGIME_SIGN[regime], 24))
    momentum = _lagged_sum(np.where(closed, 0.0, shocks), _EDGE_WEIGHTS)
    returns = sigma * (shocks + a * momentum) / np.sqrt(1.0 + a * a)
    log_price = np.concatenate(([0.0], np.cumsum(returns)))
    log_price = log_price - log_price[_REF_HOUR] + math.log(asset.price)
    return _Path(log_price, sigma, ~closed, regime, unit)


_PATHS: OrderedDict[tuple[int, float, str], _Path] = OrderedDict()
_PATHS_MAX = 48  # ~1.3 MB each: bounded memory however many symbols/seeds a process touches
_PATHS_LOCK = threading.Lock()


def _hourly_path(seed: int, edge: float, symbol: str, n_days: int) -> _Path:
    """The cached hourly layer covering at least ``n_days`` from EPOCH. Values never depend on how
    far it reaches (elementwise and sequential arithmetic only), so growing it changes nothing."""
    key = (seed, edge, symbol)
    with _PATHS_LOCK:
        path = _PATHS.get(key)
        if path is not None and len(path.regime) >= n_days:
            _PATHS.move_to_end(key)
            return path
    n_days = -(-max(n_days, _REF_HOUR // 24 + 1) // _BLOCK_DAYS) * _BLOCK_DAYS
    logger.debug(
        "simulated %s (seed %d, edge %g): hourly path of %d days", symbol, seed, edge, n_days
    )
    path = _build_path(seed, edge, symbol, n_days)
    with _PATHS_LOCK:
        _PATHS[key] = path
        _PATHS.move_to_end(key)
        while len(_PATHS) > _PATHS_MAX:
            _PATHS.popitem(last=False)
    return path


@dataclass(slots=True)
class _Minutes:
    """One-minute candles of whole days, flat arrays of ``n_days * 1440``, plus a validity mask."""

    first_day: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    valid: np.ndarray


def _minutes(path: _Path, seed: int, symbol: str, asset: _Asset, days: range) -> _Minutes:
    crc = zlib.crc32(symbol.encode())
    n = len(days)
    shocks, wicks, noise = np.empty((n, 24, 60)), np.empty((2, n, 24, 60)), np.empty((n, 24, 60))
    for i, day in enumerate(days):
        rng = np.random.default_rng([seed, crc, day, _STREAM_MINUTE])
        shocks[i] = rng.standard_t(_NU, (24, 60)) / _T_SD
        wicks[:, i] = rng.standard_exponential((2, 24, 60))
        noise[i] = rng.standard_normal((24, 60))
    hours = slice(days.start * 24, days.stop * 24)
    start_lp = path.log_price[hours][:, None]
    end_lp = path.log_price[days.start * 24 + 1 : days.stop * 24 + 1]
    scale = (path.sigma[hours] / math.sqrt(60.0))[:, None]
    shocks = shocks.reshape(-1, 60)
    walk = np.cumsum(shocks * scale, axis=1)
    frac = np.arange(1, 61) / 60.0
    log_close = start_lp + (walk - frac * (walk[:, -1:] - (end_lp[:, None] - start_lp)))
    log_close[:, -1] = end_lp  # pinned, so hourly closes do not depend on the minutes
    close = np.exp(log_close)
    open_ = np.exp(np.concatenate((start_lp, log_close[:, :-1]), axis=1))
    high = np.maximum(open_, close) * np.exp(_WICK * scale * wicks[0].reshape(-1, 60))
    low = np.minimum(open_, close) * np.exp(-_WICK * scale * wicks[1].reshape(-1, 60))
    busy = np.minimum(np.abs(shocks), _GARCH_CAP) / _CAPPED_MEAN  # mean 1: busy minutes move more
    activity = (path.sigma[hours] / path.unit_sigma)[:, None] * (0.4 + 0.6 * busy)
    raw = asset.volume * activity * np.exp(0.35 * noise.reshape(-1, 60) - 0.06125)
    volume = np.maximum(np.round(raw / asset.volume_step), 1.0) * asset.volume_step
    valid = np.repeat(path.is_open[hours], 60)
    return _Minutes(
        days.start, open_.ravel(), high.ravel(), low.ravel(), close.ravel(), volume.ravel(), valid
    )


def _cut_at_now(minutes: _Minutes, now_us: int) -> None:
    """Hide minutes that have not started; the current one shows only its open (volume 0)."""
    offset = now_us - minutes.first_day * _DAY_MINUTES * _MINUTE_US
    started = -(-offset // _MINUTE_US)
    minutes.valid[max(started, 0) :] = False
    current = offset // _MINUTE_US
    if 0 <= current < len(minutes.open) and current < started:
        price = minutes.open[current]
        minutes.high[current] = minutes.low[current] = minutes.close[current] = price
        minutes.volume[current] = 0.0


def _aggregate(minutes: _Minutes, per_bar: int) -> dict[str, np.ndarray]:
    """Bars of ``per_bar`` minutes over the valid minutes; bars without any are dropped."""
    valid = minutes.valid.reshape(-1, per_bar)
    keep = valid.any(axis=1)
    rows = np.flatnonzero(keep)
    valid = valid[keep]
    first = np.argmax(valid, axis=1)
    last = per_bar - 1 - np.argmax(valid[:, ::-1], axis=1)

    def pick(values: np.ndarray) -> np.ndarray:
        return values.reshape(-1, per_bar)[keep]

    bar_start = minutes.first_day * _DAY_MINUTES + rows * per_bar
    return {
        "ts": _EPOCH_US + bar_start.astype(np.int64) * _MINUTE_US,
        "open": pick(minutes.open)[np.arange(len(rows)), first],
        "high": np.where(valid, pick(minutes.high), -np.inf).max(axis=1),
        "low": np.where(valid, pick(minutes.low), np.inf).min(axis=1),
        "close": pick(minutes.close)[np.arange(len(rows)), last],
        "volume": np.where(valid, pick(minutes.volume), 0.0).sum(axis=1),
    }


def _to_frame(parts: list[dict[str, np.ndarray]]) -> pl.DataFrame:
    if not parts:
        return empty_candles()
    columns = {name: np.concatenate([p[name] for p in parts]) for name in CANDLE_SCHEMA}
    ts = pl.Series("ts", columns.pop("ts"), dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame([ts, *(pl.Series(k, v, dtype=pl.Float64) for k, v in columns.items())])


class SimulatedBroker(BaseBroker):
    """Deterministic candles for every catalogue symbol (see the module docstring)."""

    name = "simulated"
    capabilities = BrokerCapabilities(
        timeframes=tuple(TIMEFRAMES),
        max_candles_per_request=None,
        needs_credentials=False,
        can_trade=False,
        history_start=EPOCH,
    )

    def __init__(
        self, seed: int = 7, edge: float = DEFAULT_EDGE, now: Callable[[], datetime] | None = None
    ) -> None:
        if not 0.0 <= edge <= 1.0:
            raise ValueError(f"edge must be in [0, 1], got {edge}")
        self.seed = int(seed)
        self.edge = float(edge)
        self.now = now or (lambda: datetime.now(UTC))

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatedBroker:
        return cls(seed=settings.simulated.seed, edge=settings.simulated.edge)

    def check_symbol(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        if canonical not in CATALOGUE:
            raise UnknownSymbolError(
                f"the simulated broker has no symbol {canonical!r}; "
                f"available: {', '.join(sorted(CATALOGUE))}"
            )
        return canonical

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        now = as_utc(self.now())
        start = max(as_utc(start), EPOCH)
        stop = min(tf.floor(as_utc(end) - timedelta(microseconds=1)) + tf.duration, now)
        if stop <= start:
            return empty_candles()
        first_day = (start - EPOCH).days
        last_day = (stop - timedelta(microseconds=1) - EPOCH).days
        path = _hourly_path(self.seed, self.edge, symbol, last_day + 1)
        asset = _ASSETS.get(symbol, _DEFAULT_ASSET)
        now_us = (now - EPOCH) // timedelta(microseconds=1)
        per_bar = tf.seconds // 60
        parts = []
        for chunk in range(first_day, last_day + 1, _CHUNK_DAYS):
            days = range(chunk, min(chunk + _CHUNK_DAYS, last_day + 1))
            minutes = _minutes(path, self.seed, symbol, asset, days)
            _cut_at_now(minutes, now_us)
            parts.append(_aggregate(minutes, per_bar))
        frame = _to_frame(parts)
        return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < as_utc(end)))
