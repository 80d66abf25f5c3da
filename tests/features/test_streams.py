"""Streams pushed bar by bar must equal TA-Lib's vectorised output bit for bit."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import talib
from talib import abstract

from features.streams import make_stream, supported

N_BARS = 3000


def _ohlcv(close: np.ndarray, rng: np.random.Generator, volume_scale: float) -> dict:
    """Consistent candles around a close path: high >= max(open, close), low <= min."""
    open_ = np.concatenate([[close[0]], close[:-1]])
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1.0 + np.abs(rng.normal(0.0, 0.004, close.size)))
    low = bottom * (1.0 - np.abs(rng.normal(0.0, 0.004, close.size)))
    volume = rng.lognormal(0.0, 1.0, close.size) * volume_scale
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _random_walk() -> dict:
    rng = np.random.default_rng(7)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N_BARS)))
    return _ohlcv(close, rng, 1_000.0)


def _flat_stretches() -> dict:
    """Tick-rounded prices (many tied extremes), 50-bar flat runs, zero volume, high == low."""
    rng = np.random.default_rng(11)
    close = np.round(50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, N_BARS))), 2)
    bars = _ohlcv(close, rng, 500.0)
    bars["high"] = np.round(bars["high"], 2)
    bars["low"] = np.round(bars["low"], 2)
    for start in (300, 1200, 2500):
        flat = slice(start, start + 50)
        for column in ("open", "high", "low", "close"):
            bars[column][flat] = close[start]
    bars["volume"][700:760] = 0.0
    bars["volume"][2000:2030] = 0.0
    point = rng.choice(N_BARS, 200, replace=False)
    bars["high"][point] = bars["close"][point]
    bars["low"][point] = bars["close"][point]
    bars["open"][point] = bars["close"][point]
    return bars


def _magnitudes() -> dict:
    """Price levels of 1e-4, 1e5 and 1 in turn, with tiny and huge volumes."""
    rng = np.random.default_rng(23)
    walk = np.exp(np.cumsum(rng.normal(0.0, 0.01, N_BARS)))
    level = np.repeat([1e-4, 1e5, 1.0], N_BARS // 3)
    bars = _ohlcv(walk * level, rng, 1.0)
    bars["volume"] *= np.repeat([1e-3, 1e6, 1.0], N_BARS // 3)
    return bars


def _quiet() -> dict:
    """No movement at all at the start and for 1 200 bars later (Wilder sums decay to exactly
    zero), and bars whose high and low stay put while the close moves (true range without
    directional movement)."""
    rng = np.random.default_rng(41)
    close = np.round(10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, N_BARS))), 2)
    bars = _ohlcv(close, rng, 100.0)
    for column in ("open", "high", "low", "close"):
        bars[column][:80] = 10.0
        bars[column][1500:2700] = bars["close"][1500]
    bars["high"][80:140] = 10.5
    bars["low"][80:140] = 9.5
    bars["close"][80:140] = np.where(np.arange(60) % 2 == 0, 10.0, 10.2)
    bars["open"][80:140] = np.concatenate([[10.0], bars["close"][80:139]])
    bars["volume"][:40] = 0.0
    return bars


SERIES = {
    "walk": _random_walk(),
    "flat": _flat_stretches(),
    "magnitudes": _magnitudes(),
    "quiet": _quiet(),
}

STDDEV_PERIODS = (2, 3, 5, 12, 20, 48, 100)
BBANDS_PARAMS = (
    (20, 2.0, 2.0, 0),
    (2, 2.0, 2.0, 0),
    (5, 1.0, 1.0, 0),
    (20, 2.0, 1.5, 0),
    (12, 1.5, 2.5, 0),
    (48, 2.0, 2.0, 0),
    (100, 2.5, 2.5, 0),
    (20, 2.0, 2.0, 1),
    (7, 2.0, 1.0, 1),
)

CASES: list[tuple[str, dict[str, Any]]] = [
    *[("RSI", {"timeperiod": p}) for p in (14, 2, 3, 7, 30)],
    *[("ATR", {"timeperiod": p}) for p in (14, 1, 2, 7, 30)],
    *[("NATR", {"timeperiod": p}) for p in (14, 1, 3, 30)],
    *[
        ("MACD", {"fastperiod": f, "slowperiod": s, "signalperiod": g})
        for f, s, g in ((12, 26, 9), (2, 3, 1), (3, 2, 2), (26, 12, 9), (7, 7, 3), (5, 30, 7))
    ],
    *[
        (
            "STOCH",
            {
                "fastk_period": k,
                "slowk_period": sk,
                "slowk_matype": km,
                "slowd_period": sd,
                "slowd_matype": dm,
            },
        )
        for k, sk, km, sd, dm in (
            (5, 3, 0, 3, 0),
            (1, 1, 0, 1, 0),
            (14, 3, 0, 3, 0),
            (7, 2, 0, 3, 0),
            (30, 7, 0, 2, 0),
            (5, 3, 1, 3, 1),
            (14, 1, 1, 4, 0),
        )
    ],
    *[("CCI", {"timeperiod": p}) for p in (14, 2, 3, 7, 30, 40)],
    ("OBV", {}),
    *[("WILLR", {"timeperiod": p}) for p in (14, 2, 3, 7, 30)],
    *[("ROC", {"timeperiod": p}) for p in (10, 1, 2, 7, 30)],
    *[("MOM", {"timeperiod": p}) for p in (10, 1, 2, 7, 30)],
    *[("EMA", {"timeperiod": p}) for p in (30, 1, 2, 3, 7)],
    *[("SMA", {"timeperiod": p}) for p in (30, 1, 2, 3, 7)],
    *[("AROONOSC", {"timeperiod": p}) for p in (14, 2, 3, 7, 30)],
    *[
        ("ULTOSC", {"timeperiod1": a, "timeperiod2": b, "timeperiod3": c})
        for a, b, c in ((7, 14, 28), (1, 2, 3), (28, 7, 14), (3, 3, 5), (5, 2, 30))
    ],
    ("TRANGE", {}),
    *[("STDDEV", {"timeperiod": p, "nbdev": d}) for p in STDDEV_PERIODS for d in (1.0, 2.0)],
    *[("ADX", {"timeperiod": p}) for p in (14, 2, 3, 7, 30)],
    *[("MFI", {"timeperiod": p}) for p in (14, 2, 3, 7, 30, 60)],
    *[
        ("BBANDS", {"timeperiod": p, "nbdevup": u, "nbdevdn": d, "matype": m})
        for p, u, d, m in BBANDS_PARAMS
    ],
]


def _inputs(function: str, bars: dict) -> list[np.ndarray]:
    """The candle columns ``function`` takes, in TA-Lib's argument order."""
    columns: list[str] = []
    for names in abstract.Function(function).input_names.values():
        columns.extend([names] if isinstance(names, str) else names)
    return [np.ascontiguousarray(bars[column], dtype=np.float64) for column in columns]


def _expected(function: str, params: dict[str, Any], inputs: list[np.ndarray]) -> list:
    result = getattr(talib, function)(*inputs, **params)
    return list(result) if isinstance(result, tuple) else [result]


def _pushed(stream: Any, inputs: list[np.ndarray], start: int = 0) -> list[np.ndarray]:
    columns = [column[start:].tolist() for column in inputs]
    rows = [stream.push(*bar) for bar in zip(*columns, strict=True)]
    return [np.array(column, dtype=np.float64) for column in zip(*rows, strict=True)]


def _case_id(case: tuple[str, dict[str, Any]]) -> str:
    function, params = case
    return function + "-" + "-".join(str(value) for value in params.values())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
@pytest.mark.parametrize("series", list(SERIES))
def test_stream_equals_talib(case: tuple[str, dict[str, Any]], series: str) -> None:
    function, params = case
    stream = make_stream(function, params)
    assert stream is not None, f"{function} {params} should be streamed"
    assert stream.outputs == tuple(abstract.Function(function).output_names)
    inputs = _inputs(function, SERIES[series])
    expected = _expected(function, params, inputs)
    got = _pushed(stream, inputs)
    assert len(got) == len(expected)
    for name, want, have in zip(stream.outputs, expected, got, strict=True):
        np.testing.assert_array_equal(have, want, err_msg=f"{function} {params} {name} {series}")


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c[0]
        in {"ATR", "MACD", "CCI", "AROONOSC", "STOCH", "ULTOSC", "STDDEV", "BBANDS", "ADX", "MFI"}
    ][::2],
)
def test_deepcopy_continues_identically(case: tuple[str, dict[str, Any]]) -> None:
    """A snapshot taken mid-series resumes exactly where the original stream was."""
    function, params = case
    inputs = _inputs(function, SERIES["flat"])
    stream = make_stream(function, params)
    assert stream is not None
    half = N_BARS // 2
    _pushed(stream, [column[:half] for column in inputs])
    snapshot = copy.deepcopy(stream)
    original_tail = _pushed(stream, inputs, half)
    copied_tail = _pushed(snapshot, inputs, half)
    expected = _expected(function, params, inputs)
    for want, first, second in zip(expected, original_tail, copied_tail, strict=True):
        np.testing.assert_array_equal(first, want[half:])
        np.testing.assert_array_equal(second, want[half:])


def test_snapshot_is_independent_of_the_original() -> None:
    stream = make_stream("EMA", {"timeperiod": 3})
    assert stream is not None
    for value in (1.0, 2.0, 3.0):
        stream.push(value)
    snapshot = copy.deepcopy(stream)
    stream.push(100.0)
    assert snapshot.push(4.0) == (3.0,)


@pytest.mark.parametrize(
    ("function", "params"),
    [
        ("HT_TRENDLINE", {}),
        ("KAMA", {"timeperiod": 30}),
        ("STDDEV", {"timeperiod": 5}),
        ("STDDEV", {"timeperiod": 5, "nbdev": 4e37}),
        ("BBANDS", {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0}),
        ("BBANDS", {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 2}),
        ("BBANDS", {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 7}),
        (
            "STOCH",
            {
                "fastk_period": 5,
                "slowk_period": 3,
                "slowk_matype": 0,
                "slowd_period": 3,
                "slowd_matype": 3,
            },
        ),
        ("RSI", {"timeperiod": 14.5}),
        ("RSI", {}),
    ],
)
def test_unsupported_gives_none(function: str, params: dict[str, Any]) -> None:
    assert make_stream(function, params) is None
    assert not supported(function, params)


def test_integral_floats_are_periods() -> None:
    assert supported("RSI", {"timeperiod": 14.0})
    assert supported("ULTOSC", {"timeperiod1": 7.0, "timeperiod2": 14, "timeperiod3": 28.0})


@pytest.mark.parametrize(
    ("function", "params", "name"),
    [
        ("RSI", {"timeperiod": 2}, "timeperiod"),
        ("ATR", {"timeperiod": 1}, "timeperiod"),
        ("CCI", {"timeperiod": 2}, "timeperiod"),
        ("AROONOSC", {"timeperiod": 2}, "timeperiod"),
        ("MACD", {"fastperiod": 2, "slowperiod": 3, "signalperiod": 1}, "signalperiod"),
        ("MACD", {"fastperiod": 2, "slowperiod": 3, "signalperiod": 1}, "fastperiod"),
        ("EMA", {"timeperiod": 1}, "timeperiod"),
        ("STDDEV", {"timeperiod": 2, "nbdev": 1.0}, "timeperiod"),
        ("BBANDS", {"timeperiod": 2, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": 0}, "timeperiod"),
        ("ADX", {"timeperiod": 2}, "timeperiod"),
        ("MFI", {"timeperiod": 2}, "timeperiod"),
    ],
)
def test_smallest_period_matches_talib(function: str, params: dict[str, Any], name: str) -> None:
    """The smallest period TA-Lib accepts is streamed; one below is refused by both."""
    inputs = _inputs(function, SERIES["walk"])
    assert supported(function, params)
    _expected(function, params, inputs)
    below = {**params, name: params[name] - 1}
    assert not supported(function, below)
    with pytest.raises(Exception, match="BAD_PARAM"):
        _expected(function, below, inputs)


def _long_walk() -> np.ndarray:
    """20 000 bars: a re-centring variance may drift apart only after many bars."""
    rng = np.random.default_rng(31)
    return 1_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 20_000)))


def _level_shift() -> np.ndarray:
    """Prices jump x1000 halfway, with tick-rounded flat runs on both levels."""
    rng = np.random.default_rng(37)
    close = np.round(20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.005, N_BARS))), 2)
    close[N_BARS // 2 :] *= 1000.0
    for start in (400, 1480, 1900, 2700):
        close[start : start + 120] = close[start]
    return close


VARIANCE_SERIES = {"long": _long_walk(), "shift": _level_shift()}
VARIANCE_CASES = [
    case
    for case in CASES
    if case[0] == "BBANDS" or (case[0] == "STDDEV" and case[1]["nbdev"] == 2.0)
]


@pytest.mark.parametrize("case", VARIANCE_CASES, ids=[_case_id(c) for c in VARIANCE_CASES])
@pytest.mark.parametrize("series", list(VARIANCE_SERIES))
def test_variance_streams_over_long_and_shifted_series(
    case: tuple[str, dict[str, Any]], series: str
) -> None:
    function, params = case
    stream = make_stream(function, params)
    assert stream is not None
    inputs = [VARIANCE_SERIES[series]]
    expected = _expected(function, params, inputs)
    got = _pushed(stream, inputs)
    for name, want, have in zip(stream.outputs, expected, got, strict=True):
        np.testing.assert_array_equal(have, want, err_msg=f"{function} {params} {name} {series}")


def test_a_stream_this_machine_computes_otherwise_than_talib_is_not_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TA-Lib picks its code by CPU at load time: a stream that disagrees with it here, by one
    unit in the last place, is refused, and the caller replays TA-Lib instead."""
    import features.streams as module

    exact = module._BUILDERS["RSI"]

    class OneUlpOff:
        outputs = ("real",)

        def __init__(self, params: dict) -> None:
            self.inner = exact(params)

        def push(self, *values: float) -> tuple[float, ...]:
            (x,) = self.inner.push(*values)
            return (math.nextafter(x, math.inf),)

    params = {"timeperiod": 14}
    assert module.make_stream("RSI", params) is not None
    module.agrees_with_talib.cache_clear()
    monkeypatch.setitem(module._BUILDERS, "RSI", OneUlpOff)
    try:
        assert module.make_stream("RSI", params) is None
    finally:
        module.agrees_with_talib.cache_clear()
