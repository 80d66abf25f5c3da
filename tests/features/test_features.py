"""Features: TA-Lib is the oracle, nothing looks ahead, the effective spec is what was built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.simulated import SimulatedBroker
from core.feature_spec import FeatureSpec, IndicatorSpec
from core.timeframes import parse_timeframe
from features.build import FeatureError, compute_features, resample
from features.indicators import auto_scale

NOW = datetime(2025, 6, 2, 12, tzinfo=UTC)


@cache
def market(symbol: str, tf: str = "1h", days: int = 90) -> pl.DataFrame:
    broker = SimulatedBroker(seed=11, edge=0.12, now=lambda: NOW)
    return broker.fetch_candles(symbol, tf, NOW - timedelta(days=days), NOW - timedelta(hours=4))


def test_indicator_columns_equal_talib() -> None:
    candles = market("EURUSD")
    out = compute_features(candles, FeatureSpec(), "1h", symbol="EURUSD").frame
    _o, h, lo, c, v = (candles[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    atr = talib.ATR(h, lo, c, 14)
    expected = {
        "rsi_14": talib.RSI(c, 14),
        "adx_14": talib.ADX(h, lo, c, 14),
        "stoch_5_3_0_3_0_slowk": talib.STOCH(h, lo, c)[0],
        "mfi_14": talib.MFI(h, lo, c, v, 14),
        "ema_20": (c - talib.EMA(c, 20)) / atr,  # a level: distance from close in ATR
        "bbands_20_2_2_0_upperband": (c - talib.BBANDS(c, 20)[0]) / atr,
        "macd_12_26_9_macdhist": talib.MACD(c, 12, 26, 9)[2] / atr,  # a difference: in ATR
        "atr_14": atr / c,  # a volatility: relative to close
    }
    for name, values in expected.items():
        np.testing.assert_allclose(out[name].to_numpy(), values, rtol=1e-12, err_msg=name)


def test_auto_scales() -> None:
    assert [auto_scale(f) for f in ("RSI", "EMA", "MACD", "ATR", "OBV", "CDLDOJI", "SAR")] == [
        "none",
        "level",
        "diff",
        "close",
        "zscore",
        "none",
        "level",
    ]


def _cut(frame: pl.DataFrame, tf_hours: int, closed_by: datetime) -> pl.DataFrame:
    return frame.filter(pl.col("ts") + timedelta(hours=tf_hours) <= closed_by)


@settings(max_examples=12, deadline=None)
@given(fraction=st.floats(0.05, 0.98), stored_4h=st.booleans())
def test_no_look_ahead_features_of_a_truncated_history_equal_the_full_ones(
    fraction: float, stored_4h: bool
) -> None:
    """Features at rows ≤ t computed from candles known at t equal those from the full history."""
    candles, btc = market("EURUSD"), market("BTCUSD")
    higher = {"4h": market("EURUSD", "4h")} if stored_4h else {}
    spec = FeatureSpec()
    full = compute_features(
        candles,
        spec,
        "1h",
        symbol="EURUSD",
        higher=higher,
        correlated={"EURUSD": None, "BTCUSD": btc},
    ).frame
    k = int(fraction * (candles.height - 1))
    closed = candles["ts"][k] + timedelta(hours=1)
    part = compute_features(
        _cut(candles, 1, closed),
        spec,
        "1h",
        symbol="EURUSD",
        higher={name: _cut(frame, 4, closed) for name, frame in higher.items()},
        correlated={"BTCUSD": _cut(btc, 1, closed)},
    ).frame
    assert part.height == k + 1
    for column in part.columns[1:]:
        np.testing.assert_array_equal(
            part[column].to_numpy(), full[column].to_numpy()[: k + 1], err_msg=column
        )


@pytest.mark.parametrize("last", [1, 3, 64, 65, 500])
def test_the_last_rows_alone_equal_the_same_rows_of_the_whole_frame(last: int) -> None:
    """``last`` (live scoring) builds only the newest rows, with numpy gathers up to 64 rows and
    polars' beyond: the same values bit for bit, NaN where nothing was known yet (BTCUSD starts
    40 bars before the end here: older rows have no correlated values)."""
    candles = market("ETHUSD")
    btc = market("BTCUSD").filter(pl.col("ts") >= candles["ts"][-40])
    kwargs = {
        "symbol": "ETHUSD",
        "higher": {"4h": market("ETHUSD", "4h")},
        "correlated": {"BTCUSD": btc},
    }
    full = compute_features(candles, FeatureSpec(), "1h", **kwargs)
    tail = compute_features(candles, FeatureSpec(), "1h", last=last, **kwargs)
    assert tail.columns == full.columns and tail.spec.hash == full.spec.hash
    expected = full.frame.tail(last)
    assert tail.frame.height == last and tail.frame.schema == expected.schema
    assert tail.frame["ts"].equals(expected["ts"])
    assert expected["xBTCUSD_vol_24"].is_nan().any() == (last > 40)  # a NaN prefix when older
    for column in full.columns:
        np.testing.assert_array_equal(
            tail.frame[column].to_numpy(), expected[column].to_numpy(), err_msg=column
        )


def test_higher_timeframe_values_appear_only_after_their_close() -> None:
    candles = market("BTCUSD")
    spec = FeatureSpec(indicators=[IndicatorSpec(function="RSI", params={"timeperiod": 3})])
    out = compute_features(candles, spec, "1h", symbol="BTCUSD").frame
    four = resample(candles, parse_timeframe("4h"))
    rsi4 = dict(zip(four["ts"], talib.RSI(four["close"].to_numpy(), 3), strict=True))
    for i in range(200, 240):
        ts = candles["ts"][i]
        visible = max(t for t in rsi4 if t + timedelta(hours=4) <= ts + timedelta(hours=1))
        assert out["tf4h_rsi_3"][i] == pytest.approx(rsi4[visible]), ts


def test_missing_inputs_are_skipped_named_and_change_the_effective_hash() -> None:
    candles = market("ETHUSD")
    spec = FeatureSpec()
    bare = compute_features(candles, spec, "1h", symbol="ETHUSD", correlated={})
    assert bare.skipped == ["correlated symbol BTCUSD: no 1h candles in the store"]
    assert not any(c.startswith("xBTCUSD_") for c in bare.columns)
    full = compute_features(
        candles, spec, "1h", symbol="ETHUSD", correlated={"BTCUSD": market("BTCUSD")}
    )
    assert full.skipped == [] and "xBTCUSD_ret_1" in full.columns
    assert bare.spec.hash != full.spec.hash
    assert (
        full.spec.hash
        == compute_features(
            candles, spec, "1h", symbol="ETHUSD", correlated={"BTCUSD": market("BTCUSD")}
        ).spec.hash
    )


def test_a_daily_file_alone_builds_with_the_default_spec() -> None:
    daily = market("XAUUSD", "1d", days=900)
    result = compute_features(daily, FeatureSpec(), "1d", symbol="XAUUSD")
    assert "higher timeframe 4h: not a multiple above 1d" in result.skipped
    assert result.spec.higher_timeframes == []
    assert result.frame.height == daily.height


def test_spec_hash_is_canonical() -> None:
    a = FeatureSpec(indicators=[IndicatorSpec(function="rsi")])
    b = FeatureSpec(indicators=[IndicatorSpec(function="RSI", params={"timeperiod": 14})])
    c = FeatureSpec(indicators=[IndicatorSpec(function="RSI", params={"timeperiod": 15})])
    assert a.hash == b.hash != c.hash
    assert a.canonical_json() == b.canonical_json()


def test_unknown_indicator_or_parameter_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown TA-Lib function 'RSX'; did you mean RSI"):
        IndicatorSpec(function="RSX")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['period'\]; valid: timeperiod"):
        IndicatorSpec(function="RSI", params={"period": 3})
    with pytest.raises(ValueError, match="listed twice"):
        FeatureSpec(indicators=[IndicatorSpec(function="RSI"), IndicatorSpec(function="RSI")])


def test_infinite_values_are_an_error() -> None:
    candles = market("EURUSD").with_columns(pl.col("open", "high", "low", "close") * 1e200)
    spec = FeatureSpec(
        indicators=[IndicatorSpec(function="MULT", scale="none")], higher_timeframes=[]
    )
    with pytest.raises(FeatureError, match=r"EURUSD 1h: feature column\(s\) \['mult'\]"):
        compute_features(candles, spec, "1h", symbol="EURUSD")
    with pytest.raises(FeatureError, match=r"EURUSD 1h: feature column\(s\) \['mult'\]"):
        compute_features(candles, spec, "1h", symbol="EURUSD", last=1)  # the row live scores
