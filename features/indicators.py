"""TA-Lib indicators named in the spec, made scale-free so that a model trained on one price regime
works on another.

Scales (``auto`` picks one per function, a spec entry may override it):
* ``level`` — a price level (moving averages, bands, SAR, regression lines): ``(close − x) / ATR``;
* ``diff`` — a price difference (MACD, momentum, directional movement, std dev): ``x / ATR``;
* ``close`` — a volatility in price units (ATR, true range): ``x / close``;
* ``zscore`` — a cumulative or volume-scaled series (OBV, A/D): z-score over ``ZSCORE_WINDOW`` bars;
* ``none`` — already scale-free (RSI, ADX, CCI, stochastics, patterns, …).
ATR is TA-Lib's ``ATR(14)`` of the same candles. A zero denominator gives 0 (a flat market), never
±inf.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import talib

from core.feature_spec import IndicatorSpec, talib_functions

ATR_PERIOD = 14
ZSCORE_WINDOW = 100

_LEVEL_GROUPS = {"Overlap Studies", "Price Transform"}
_LEVEL = {"LINEARREG", "LINEARREG_INTERCEPT", "TSF", "VWAP", "HA", "ACCBANDS"}
_DIFF = {
    "MACD",
    "MACDEXT",
    "MACDFIX",
    "MOM",
    "APO",
    "PLUS_DM",
    "MINUS_DM",
    "AO",
    "AC",
    "DPO",
    "STDDEV",
    "LINEARREG_SLOPE",
    "AVGDEV",
    "ADR",
    "QSTICK",
}
_CLOSE = {"ATR", "TRANGE"}
_ZSCORE = {"OBV", "AD", "ADOSC", "NVI", "PVI", "PVT", "EFI", "WAD", "MARKETFI", "VAR"}

Inputs = dict[str, np.ndarray]


def auto_scale(function: str) -> str:
    """The scale ``auto`` means for a TA-Lib function (see the module docstring)."""
    if function in _DIFF:
        return "diff"
    if function in _CLOSE:
        return "close"
    if function in _ZSCORE:
        return "zscore"
    if function in _LEVEL or talib_functions()[function]["group"] in _LEVEL_GROUPS:
        return "level"
    return "none"


def safe_divide(num: np.ndarray, den: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (NaN stays NaN: warm-up is not hidden). ``out`` may be
    ``num`` itself: results are written in place where the caller owns a temporary, because on
    this kind of machine fresh memory costs more than the arithmetic (first-touch page faults)."""
    zero = den == 0
    fix = zero & ~np.isnan(num) if zero.any() else None  # rare: a flat market
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.divide(num, den, out=out)
    if fix is not None:
        result[fix] = 0.0
    return result


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    mean = raw_function("SMA")(x, timeperiod=window)
    std = raw_function("STDDEV")(x, timeperiod=window, nbdev=1)
    deviation = np.subtract(x, mean, out=mean)
    return safe_divide(deviation, std, out=deviation)


@cache
def raw_function(function: str) -> Any:
    """TA-Lib's compiled function: ``talib.X`` wraps it to accept pandas and polars series
    (~8 µs of checks a call, ~60 calls a live decision); the inputs here are numpy arrays."""
    wrapped = getattr(talib, function)
    return getattr(wrapped, "__wrapped__", wrapped)


@cache
def _series(function: str) -> tuple[str, ...]:
    """The candle columns a TA-Lib function takes, in its argument order."""
    inputs = talib_functions()[function]["input_names"].values()
    return tuple(n for names in inputs for n in ([names] if isinstance(names, str) else names))


def call(spec: IndicatorSpec, inputs: Inputs) -> dict[str, np.ndarray]:
    """Raw TA-Lib outputs of one spec entry: ``{column: values}``. TA-Lib's function is called
    directly with the columns its abstract interface names (the same C call, without that
    interface's per-call input handling: a live decision makes ~30 of these calls)."""
    info = talib_functions()[spec.function]
    function = raw_function(spec.function)
    result = function(*(inputs[n] for n in _series(spec.function)), **spec.resolved_params)
    names = info["output_names"]
    if len(names) == 1:
        return {spec.key: np.asarray(result, dtype=np.float64)}
    return {
        f"{spec.key}_{name}": np.asarray(out, dtype=np.float64)
        for name, out in zip(names, result, strict=True)
    }


def scaled(
    spec: IndicatorSpec, raw: dict[str, np.ndarray], inputs: Inputs, atr: np.ndarray
) -> dict[str, np.ndarray]:
    """Scale-free versions of ``raw`` (see the module docstring)."""
    scale = auto_scale(spec.function) if spec.scale == "auto" else spec.scale
    close = inputs["close"]
    # TA-Lib's outputs are fresh arrays of ours: transformed in place.
    transforms = {
        "level": lambda x: safe_divide(np.subtract(close, x, out=x), atr, out=x),
        "diff": lambda x: safe_divide(x, atr, out=x),
        "close": lambda x: safe_divide(x, close, out=x),
        "zscore": lambda x: rolling_zscore(x, ZSCORE_WINDOW),
        "none": lambda x: x,
    }
    return {name: transforms[scale](values) for name, values in raw.items()}


def indicator_columns(
    specs: list[IndicatorSpec], inputs: Inputs, atr: np.ndarray
) -> dict[str, np.ndarray]:
    """Every indicator of the spec, scale-free, by column name."""
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        columns.update(scaled(spec, call(spec, inputs), inputs, atr))
    return columns
