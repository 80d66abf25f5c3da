"""Triple-barrier labels (López de Prado, *Advances in Financial Machine Learning*, ch. 3).

For each event bar ``t0`` the trade enters at ``t0``'s close ``c0``. With ``σ`` a volatility of log
returns known at ``t0`` (EWM std of log returns, or ATR / close), the barriers are
``c0·exp(+pt·σ)`` (take-profit, upper), ``c0·exp(−sl·σ)`` (stop-loss, lower) and a vertical one
``horizon`` bars later. The label is +1 if the upper barrier is touched first, −1 if the lower one
is, 0 at the time-out; ``t1`` is the exit bar's time, ``ret`` the simple return at exit, ``pips``
the same move in pips, ``bars`` the bars held.

Touch test (``touch``):
* ``"close"`` — the book's definition: a barrier counts when a close reaches it; exit at that close.
* ``"high_low"`` — what a resting stop / limit order sees: the bar's high reaches the upper barrier
  or its low the lower one, filled at the barrier, or at the bar's open when the bar opened beyond
  it. **When one bar's range crosses both barriers the order of the touches is unknown: it counts
  as the stop-loss** (conservative), unless the bar opened beyond the take-profit. These are the
  exits the strategy trades (``core.strategy.exit_for_candle``; a test holds them equal).

With a primary ``side`` (meta-labelling) the barriers follow the side: for a short, take-profit is
below at ``pt·σ`` and the stop above at ``sl·σ``; ``ret`` and ``pips`` are the side's P&L and
``meta`` is 1 when that trade made money, else 0.

Labels look forward by design and are never features. An event whose vertical barrier lies past
the data (the last ``horizon`` bars) has no complete label: its outcome is null, never filled.
Vectorised over bars, looping only over the ``horizon`` offsets.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import talib

from core.feature_spec import LabelSpec
from core.strategy import barrier_levels

logger = logging.getLogger(__name__)

NO_TOUCH = np.iinfo(np.int32).max
BARRIER_DTYPE = pl.Enum(["tp", "sl", "time"])


def volatility(frame: pl.DataFrame, spec: LabelSpec) -> np.ndarray:
    """σ at each bar from data up to and including that bar (null during warm-up)."""
    close = frame["close"].to_numpy().astype(np.float64)
    if spec.vol == "atr":
        high = frame["high"].to_numpy().astype(np.float64)
        low = frame["low"].to_numpy().astype(np.float64)
        return talib.ATR(high, low, close, timeperiod=spec.vol_window) / close
    returns = pl.lit(pl.Series(np.diff(np.log(close), prepend=np.nan))).fill_nan(None)
    sigma = returns.ewm_std(span=spec.vol_window, adjust=False, min_samples=spec.vol_window)
    # One query (each Series method runs its own: half the time for the few hundred bars of a
    # live decision).
    return pl.select(sigma.fill_null(np.nan)).to_series().to_numpy().astype(np.float64)


def cusum_events(close: np.ndarray, sigma: np.ndarray, threshold: float) -> np.ndarray:
    """Symmetric CUSUM filter on log returns (AFML 2.5.2.1): a bar is an event when the cumulated
    up- or down-move since the last event exceeds ``threshold × σ`` (σ known at that bar)."""
    returns = np.diff(np.log(close), prepend=np.nan)
    events = np.zeros(close.size, dtype=bool)
    s_pos = s_neg = 0.0
    for i in range(1, close.size):  # sequential by nature; 1M bars take ~0.4 s
        limit = threshold * sigma[i]
        if not limit > 0:  # σ unknown (warm-up) or zero
            continue
        s_pos = max(0.0, s_pos + returns[i])
        s_neg = min(0.0, s_neg + returns[i])
        if s_pos > limit:
            s_pos, events[i] = 0.0, True
        elif s_neg < -limit:
            s_neg, events[i] = 0.0, True
    return events


def _first_touch(reach: np.ndarray, barrier: np.ndarray, horizon: int, above: bool) -> np.ndarray:
    """For each bar i, the smallest k in 1..horizon with ``reach[i+k]`` at/over ``barrier[i]``
    (≥ when ``above``, ≤ otherwise); ``NO_TOUCH`` when none."""
    n = reach.size
    first = np.full(n, NO_TOUCH, dtype=np.int32)
    for k in range(horizon, 0, -1):  # descending: the last write is the earliest touch
        m = n - k
        if m <= 0:
            continue
        hit = reach[k:] >= barrier[:m] if above else reach[k:] <= barrier[:m]
        first[:m][hit] = k
    return first


def _exit_index(n: int, k: np.ndarray) -> np.ndarray:
    return np.minimum(np.arange(n) + np.minimum(k, n), n - 1)


def _exits(
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sigma: np.ndarray,
    sides: np.ndarray,
    spec: LabelSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bar: bars to the exit, the exit bar, whether the upper / lower barrier was hit first,
    and the exit price (the rule of ``core.strategy.exit_for_candle``)."""
    o, h, lo, c = ohlc
    n, horizon = c.size, spec.horizon
    with np.errstate(invalid="ignore"):
        stop, take = barrier_levels(c, sigma, np.where(sides >= 0, 1, -1), spec.pt, spec.sl)
    upper, lower = np.where(sides >= 0, take, stop), np.where(sides >= 0, stop, take)
    reach_up, reach_dn = (c, c) if spec.touch == "close" else (h, lo)
    k_up = _first_touch(reach_up, upper, horizon, above=True)
    k_dn = _first_touch(reach_dn, lower, horizon, above=False)

    k_exit = np.minimum(np.minimum(k_up, k_dn), horizon)
    exit_i = _exit_index(n, k_exit)
    # One bar touching both barriers: the stop, unless that bar opened beyond the take-profit
    # (then the take-profit came first) — the exit rule of core.strategy.exit_for_candle.
    both = (k_up == k_dn) & (k_up <= horizon)
    with np.errstate(invalid="ignore"):
        # A long's upper barrier is its take-profit, a short's its stop; an open at or beyond
        # the stop is the stop. (Closes reach both only where σ = 0: the lower one, as always.)
        above, below = o[exit_i] >= upper, o[exit_i] <= lower
        up_first = np.where(sides >= 0, above & ~below, above | ~below)
    up_first &= spec.touch == "high_low"
    hit_up = ((k_up < k_dn) | (both & up_first)) & (k_up <= horizon)
    hit_dn = ((k_dn < k_up) | (both & ~up_first)) & (k_dn <= horizon)
    exit_price = c[exit_i].copy()
    if spec.touch == "high_low":
        # A touched barrier fills at the barrier, or at the bar's open when the bar opened
        # beyond it (a stop gapped through fills worse, a take-profit better).
        exit_price = np.where(hit_up, np.maximum(o[exit_i], upper), exit_price)
        exit_price = np.where(hit_dn, np.minimum(o[exit_i], lower), exit_price)
    return k_exit, exit_i, hit_up, hit_dn, exit_price


def triple_barrier(
    frame: pl.DataFrame,
    spec: LabelSpec,
    *,
    side: np.ndarray | None = None,
    pip_size: float = 0.0001,
) -> pl.DataFrame:
    """Label every bar of ``frame`` (candle schema, sorted by ts). Columns: ``ts``, ``t1``,
    ``label`` (+1/−1/0), ``barrier`` ("tp"/"sl"/"time"), ``ret``, ``pips``, ``bars``, ``sigma``,
    ``event`` and, with ``side``, ``side`` and ``meta``. Outcomes are null where incomplete."""
    o, h, lo, c = (
        frame[col].to_numpy().astype(np.float64) for col in ("open", "high", "low", "close")
    )
    n, horizon = c.size, spec.horizon
    sigma = volatility(frame, spec)
    sides = np.ones(n) if side is None else np.sign(np.asarray(side, dtype=np.float64))
    k_exit, exit_i, hit_up, hit_dn, exit_price = _exits((o, h, lo, c), sigma, sides, spec)
    direction = np.where(hit_up, 1, np.where(hit_dn, -1, 0)).astype(np.int8)
    won_up = direction * np.where(sides >= 0, 1, -1)  # +1 when the touched barrier is the TP

    complete = (np.arange(n) + horizon < n) & np.isfinite(sigma) & (sides != 0)
    ret = sides * (exit_price / c - 1.0)
    out = pl.DataFrame(
        {
            "ts": frame["ts"],
            "t1": frame["ts"].gather(exit_i),
            "label": direction,
            "barrier": pl.Series(won_up + 1, dtype=pl.UInt8).replace_strict(
                {0: "sl", 1: "time", 2: "tp"}, return_dtype=BARRIER_DTYPE
            ),
            "ret": ret,
            "pips": sides * (exit_price - c) / pip_size,
            "bars": k_exit.astype(np.int32),
            "sigma": sigma,
        }
    )
    events = complete if spec.cusum is None else complete & cusum_events(c, sigma, spec.cusum)
    outcome_cols = ["t1", "label", "barrier", "ret", "pips", "bars"]
    out = out.with_columns(
        [pl.when(pl.Series(complete)).then(pl.col(col)).alias(col) for col in outcome_cols]
    ).with_columns(event=pl.Series(events))
    if side is not None:
        out = out.with_columns(
            side=pl.Series(sides.astype(np.int8)),
            meta=pl.when(pl.Series(complete)).then((pl.col("ret") > 0).cast(pl.Int8)),
        )
    return out
