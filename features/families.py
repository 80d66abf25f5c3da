"""Built-in feature families: log returns, volatility and its ratios, z-scores, candle shape,
volume z-score, calendar and a simple regime. Each value at bar t uses bars ≤ t only."""

from __future__ import annotations

import itertools

import numpy as np

from core.feature_spec import FamiliesSpec
from features.indicators import Inputs, raw_function, rolling_zscore, safe_divide

REGIME_ADX_TREND = 25.0  # ADX above: trending
REGIME_VOL_RATIO = 1.5  # short / long volatility above: volatile (wins over trend)


def lagged_log_return(log_close: np.ndarray, lag: int) -> np.ndarray:
    out = np.empty(log_close.size)
    out[:lag] = np.nan
    if lag < log_close.size:
        np.subtract(log_close[lag:], log_close[:-lag], out=out[lag:])
    return out


def _volatility(returns_1: np.ndarray, windows: list[int]) -> dict[str, np.ndarray]:
    out = {f"vol_{w}": _stddev(returns_1, w) for w in windows if w > 1}
    keys = list(out)
    for short, long in itertools.pairwise(keys):
        out[f"{short}_over_{long.removeprefix('vol_')}"] = safe_divide(out[short], out[long])
    return out


def _candle_shape(inputs: Inputs, atr: np.ndarray) -> dict[str, np.ndarray]:
    o, h, lo, c = inputs["open"], inputs["high"], inputs["low"], inputs["close"]
    body, upper = c - o, np.maximum(o, c)
    lower, range_ = np.minimum(o, c), h - lo
    np.subtract(h, upper, out=upper)
    np.subtract(lower, lo, out=lower)
    return {  # each numerator is a temporary of ours: divided in place
        "shape_body": safe_divide(body, atr, out=body),
        "shape_upper": safe_divide(upper, atr, out=upper),
        "shape_lower": safe_divide(lower, atr, out=lower),
        "shape_range": safe_divide(range_, atr, out=range_),
    }


def calendar(ts_seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Hour of day and day of week of the candle's open time, as points on circles."""
    hour = (ts_seconds // 3600) % 24
    dow = (ts_seconds // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hours, days = 2 * np.pi * np.arange(24) / 24, 2 * np.pi * np.arange(7) / 7
    return {  # table look-ups: 24 and 7 values instead of a sine per row
        "hour_sin": np.sin(hours)[hour],
        "hour_cos": np.cos(hours)[hour],
        "dow_sin": np.sin(days)[dow],
        "dow_cos": np.cos(days)[dow],
    }


def _stddev(
    values: np.ndarray, window: int, known: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Rolling std of 1-bar log returns, reusing a ``vol_<window>`` column already computed."""
    if known is not None and f"vol_{window}" in known:
        return known[f"vol_{window}"]
    return raw_function("STDDEV")(values, timeperiod=window, nbdev=1)


def regime(
    inputs: Inputs,
    returns_1: np.ndarray,
    known: dict[str, np.ndarray] | None = None,
    adx: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One-hot trend / range / volatile: volatile when 12-bar volatility exceeds 1.5 × the 48-bar
    one, else trend when ADX(14) > 25, else range. ``known`` columns and ``adx`` are reused."""
    if adx is None:
        adx = raw_function("ADX")(inputs["high"], inputs["low"], inputs["close"], timeperiod=14)
    ratio = safe_divide(_stddev(returns_1, 12, known), _stddev(returns_1, 48, known))
    volatile = ratio > REGIME_VOL_RATIO
    trend = ~volatile & (adx > REGIME_ADX_TREND)
    known = ~(np.isnan(adx) | np.isnan(ratio))
    as_float = {
        "regime_trend": trend,
        "regime_range": ~volatile & ~trend,
        "regime_volatile": volatile,
    }
    return {k: np.where(known, v.astype(np.float64), np.nan) for k, v in as_float.items()}


def family_columns(
    spec: FamiliesSpec,
    inputs: Inputs,
    atr: np.ndarray,
    ts_seconds: np.ndarray | None,
    adx: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every enabled family, by column name (``ts_seconds=None`` leaves calendar out; an
    ``adx`` (14) already computed is reused by the regime)."""
    log_close = np.log(inputs["close"])
    returns_1 = lagged_log_return(log_close, 1)
    out = {f"ret_{lag}": lagged_log_return(log_close, lag) for lag in spec.returns}
    out.update(_volatility(returns_1, spec.volatility))
    out.update({f"zscore_{w}": rolling_zscore(inputs["close"], w) for w in spec.zscore if w > 1})
    if spec.candle_shape:
        out.update(_candle_shape(inputs, atr))
    if spec.volume_zscore:
        out["volume_z"] = rolling_zscore(inputs["volume"], spec.volume_zscore)
    if spec.calendar and ts_seconds is not None:
        out.update(calendar(ts_seconds))
    if spec.regime:
        out.update(regime(inputs, returns_1, out, adx))
    return out
