"""One-bar-at-a-time versions of TA-Lib functions, bit-for-bit equal to the vectorised call.

Each stream keeps the state TA-Lib's C loop carries from bar to bar (running sums, Wilder
averages, circular buffers, extreme indices) and repeats its floating-point operations in the
same order, so a signal service can update its features per candle without re-running TA-Lib.
Inputs must be finite: NaN inputs are never passed by the project and are not handled.
A function or parameter set reproduced only approximately gets no stream (``make_stream``
returns None) and the caller falls back to the vectorised path.

The arithmetic is that of the bundled TA-Lib 0.8 library as read from its machine code, which
differs from the public C source (fused multiply-adds, scaled zero tests, a re-centring TA_VAR,
resets after runs of bars without movement). Its functions with fused multiply-adds (EMA, MACD,
ATR, NATR, BBANDS) are picked at load time for CPUs with FMA; the streams reproduce those.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from features.streams._base import EMA, MAX_PERIOD, SMA, Identity, Stream
from features.streams.dispersion import ADX, BBANDS, MFI, STDDEV
from features.streams.momentum import (
    AROONOSC,
    ATR,
    CCI,
    MACD,
    OBV,
    RSI,
    STOCH,
    TRANGE,
    ULTOSC,
    WILLR,
    Lagged,
)

__all__ = ["Stream", "agrees_with_talib", "make_stream", "supported"]


def _period(params: Mapping[str, Any], name: str, minimum: int) -> int | None:
    """An integral period within TA-Lib's accepted range, or None."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not float(value).is_integer() or not minimum <= value <= MAX_PERIOD:
        return None
    return int(value)


def _real(params: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _matype(params: Mapping[str, Any], name: str) -> int | None:
    """SMA (0) and EMA (1) are reproduced; every other moving average is not."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
        return None
    return int(value)


def _single_period(cls: Callable[[int], Stream], minimum: int) -> Callable[..., Stream | None]:
    def build(params: Mapping[str, Any]) -> Stream | None:
        period = _period(params, "timeperiod", minimum)
        return None if period is None else cls(period)

    return build


def _build_macd(params: Mapping[str, Any]) -> Stream | None:
    fast = _period(params, "fastperiod", 2)
    slow = _period(params, "slowperiod", 2)
    signal = _period(params, "signalperiod", 1)
    if fast is None or slow is None or signal is None:
        return None
    return MACD(fast, slow, signal)


def _build_stoch(params: Mapping[str, Any]) -> Stream | None:
    periods = [
        _period(params, name, 1) for name in ("fastk_period", "slowk_period", "slowd_period")
    ]
    matypes = [_matype(params, name) for name in ("slowk_matype", "slowd_matype")]
    if None in periods or None in matypes:
        return None
    fastk, slowk, slowd = periods
    return STOCH(fastk, slowk, matypes[0], slowd, matypes[1])  # type: ignore[arg-type]


def _build_ultosc(params: Mapping[str, Any]) -> Stream | None:
    periods = [_period(params, f"timeperiod{i}", 1) for i in (1, 2, 3)]
    if None in periods:
        return None
    return ULTOSC(*periods)  # type: ignore[arg-type]


def _deviations(params: Mapping[str, Any], names: tuple[str, ...]) -> list[float] | None:
    """Band widths within TA-Lib's accepted range (+-3e37; its default marker is not taken)."""
    values = [_real(params, name) for name in names]
    if any(value is None or abs(value) > 3e37 for value in values):
        return None
    return values  # type: ignore[return-value]


def _build_stddev(params: Mapping[str, Any]) -> Stream | None:
    period = _period(params, "timeperiod", 2)
    widths = _deviations(params, ("nbdev",))
    if period is None or widths is None:
        return None
    return STDDEV(period, widths[0])


def _build_bbands(params: Mapping[str, Any]) -> Stream | None:
    period = _period(params, "timeperiod", 2)
    widths = _deviations(params, ("nbdevup", "nbdevdn"))
    matype = _matype(params, "matype")
    if period is None or widths is None or matype is None:
        return None
    return BBANDS(period, widths[0], widths[1], matype)


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Stream | None]] = {
    "RSI": _single_period(RSI, 2),
    "ATR": _single_period(lambda p: ATR(p, normalized=False), 1),
    # NATR(1) is TA-Lib's plain true range, not normalised: the period-1 shortcut returns TRANGE.
    "NATR": _single_period(lambda p: ATR(p, normalized=p > 1), 1),
    "MACD": _build_macd,
    "STOCH": _build_stoch,
    "CCI": _single_period(CCI, 2),
    "OBV": lambda params: OBV(),
    "WILLR": _single_period(WILLR, 2),
    "ROC": _single_period(lambda p: Lagged(p, rate=True), 1),
    "MOM": _single_period(lambda p: Lagged(p, rate=False), 1),
    "EMA": _single_period(lambda p: Identity() if p == 1 else EMA(p), 1),
    "SMA": _single_period(SMA, 1),
    "AROONOSC": _single_period(AROONOSC, 2),
    "ULTOSC": _build_ultosc,
    "TRANGE": lambda params: TRANGE(),
    "STDDEV": _build_stddev,
    "BBANDS": _build_bbands,
    "ADX": _single_period(ADX, 2),
    "MFI": _single_period(MFI, 2),
}


def make_stream(function: str, params: Mapping[str, Any]) -> Stream | None:
    """A fresh stream for TA-Lib function ``function`` with ``params`` (every parameter named,
    as talib's abstract interface lists them), or None when it cannot be reproduced exactly —
    including on this machine: the first stream of each function and parameters is checked
    against TA-Lib on a test series (``agrees_with_talib``), since the library picks its code
    by CPU at load time."""
    builder = _BUILDERS.get(function)
    if builder is None:
        return None
    stream = builder(params)
    if stream is None or not agrees_with_talib(function, tuple(sorted(params.items()))):
        return None
    return stream


@functools.cache
def agrees_with_talib(function: str, params: tuple[tuple[str, Any], ...]) -> bool:
    """Whether a stream of ``function`` gives TA-Lib's values bit for bit on a test series
    here (600 bars: a walk with a flat run and a jump), worked out once per process."""
    import numpy as np
    import talib
    from talib import abstract

    builder = _BUILDERS[function]
    stream = builder(dict(params))
    if stream is None:
        return False
    rng = np.random.default_rng(20261201)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    close[200:260] = close[199]  # a flat run: TA-Lib's zero tests and resets
    close[400:] *= 3.0  # a jump: re-centred sums
    spread = np.abs(rng.normal(0, 0.004, 600)) * close
    spread[200:260] = 0.0
    candles = {
        "open": np.r_[close[0], close[:-1]],
        "high": close + spread,
        "low": close - spread,
        "close": close,
        "volume": np.where((np.arange(600) // 50) % 5 == 0, 0.0, rng.uniform(1, 1e4, 600)),
    }
    candles["high"] = np.maximum(candles["high"], candles["open"])
    candles["low"] = np.minimum(candles["low"], candles["open"])
    info = abstract.Function(function).info["input_names"].values()
    names = [n for group in info for n in ([group] if isinstance(group, str) else group)]
    inputs = [candles["close"] if n not in candles else candles[n] for n in names]
    expected = getattr(talib, function)(*inputs, **dict(params))
    expected = expected if isinstance(expected, tuple) else (expected,)
    pushed = [stream.push(*(float(x[i]) for x in inputs)) for i in range(600)]
    got = np.array(pushed, dtype=np.float64).T
    return all(np.array_equal(g, e, equal_nan=True) for g, e in zip(got, expected, strict=True))


def supported(function: str, params: Mapping[str, Any]) -> bool:
    """Whether ``make_stream`` gives an exact stream for this function and parameters."""
    return make_stream(function, params) is not None
