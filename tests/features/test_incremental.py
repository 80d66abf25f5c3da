"""Feature streams (``features.incremental``): one candle at a time, the same values bit for bit
as ``compute_features`` over the same candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl
import pytest

from brokers.simulated import SimulatedBroker
from core.feature_spec import FeatureSpec, IndicatorSpec
from core.timeframes import parse_timeframe
from features.build import compute_features
from features.incremental import ColumnsDiffer, FeatureStream, FeatureStreams, OutOfStep

NOW = datetime(2025, 6, 2, 12, tzinfo=UTC)
H1 = parse_timeframe("1h")


@cache
def market(symbol: str, tf: str = "1h", days: int = 45) -> pl.DataFrame:
    broker = SimulatedBroker(seed=11, edge=0.12, now=lambda: NOW)
    return broker.fetch_candles(symbol, tf, NOW - timedelta(days=days), NOW - timedelta(hours=4))


def _assert_rows_equal(stream: FeatureStream, expected: pl.DataFrame) -> None:
    columns = expected.columns[1:]
    assert list(stream.row) == columns
    got = stream.values(columns)[0]
    want = np.array(expected.row(-1)[1:], dtype=np.float64)
    np.testing.assert_array_equal(got, want, err_msg=f"at {expected['ts'][-1]}")


def _replay(spec: FeatureSpec, symbol: str, higher: dict, correlated: dict, steps: int) -> None:
    """A stream started on all but the last ``steps`` candles, then fed one at a time: each row
    equals the last row of ``compute_features`` over the candles up to it."""
    candles = market(symbol)
    start = candles.height - steps
    stream = FeatureStream(spec, "1h", symbol)
    assert stream.catch_up(candles.head(start), higher, correlated) == start
    for k in range(start, candles.height + 1):
        seen = candles.head(k)
        if k > start:
            assert stream.catch_up(seen, higher, correlated) == 1
        full = compute_features(
            seen, spec, "1h", symbol=symbol, higher=higher, correlated=correlated
        )
        _assert_rows_equal(stream, full.frame)
    assert stream.catch_up(candles, higher, correlated) == 0  # nothing new: nothing pushed


@pytest.mark.parametrize("stored_higher", [False, True], ids=["resampled-4h", "stored-4h"])
def test_the_default_spec_streams_bit_for_bit(stored_higher: bool) -> None:
    """Every column of the default spec — indicators of both timeframes (a higher timeframe's
    bucket closing, or its stored candle arriving, between steps), families, calendar, regime —
    and a correlated symbol whose candles start late (its NaN prefix, then values)."""
    btc = market("BTCUSD")
    btc = btc.filter(pl.col("ts") >= btc["ts"][-30])  # known only for the last 30 bars
    higher = {"4h": market("ETHUSD", "4h") if stored_higher else None}
    _replay(FeatureSpec(), "ETHUSD", higher, {"BTCUSD": btc}, steps=40)


def test_every_scale_and_family_switch_streams_bit_for_bit() -> None:
    spec = FeatureSpec.model_validate(
        {
            "indicators": [
                {"function": "OBV"},  # zscore
                {"function": "EMA", "params": {"timeperiod": 7}},  # level
                {"function": "MACD"},  # diff, 3 outputs
                {"function": "ATR", "params": {"timeperiod": 5}},  # close
                {"function": "RSI", "params": {"timeperiod": 3}, "scale": "zscore"},
                {"function": "EMA", "params": {"timeperiod": 9}, "scale": "none"},
            ],
            "higher_timeframes": ["4h", "1d"],
            "families": {
                "returns": [1, 3],
                "volatility": [5, 20, 40],
                "zscore": [10],
                "candle_shape": False,
                "volume_zscore": 0,
                "calendar": False,
                "regime": True,
            },
        }
    )
    _replay(spec, "EURUSD", {}, {}, steps=30)


def test_functions_without_an_exact_stream_are_replayed_bit_for_bit() -> None:
    """A TA-Lib function ``features.streams`` does not reproduce is called over the inputs the
    stream has kept — the same call as the full build's, so the same values."""
    spec = FeatureSpec(
        indicators=[IndicatorSpec(function="HT_TRENDLINE"), IndicatorSpec(function="KAMA")],
        higher_timeframes=[],
    )
    _replay(spec, "EURUSD", {}, {}, steps=10)
    stream = FeatureStream(spec, "1h", "EURUSD")
    stream.catch_up(market("EURUSD"), {}, {})
    assert stream.replayed == market("EURUSD").height


def test_a_revised_candle_starts_the_stream_again() -> None:
    candles = market("EURUSD")
    spec = FeatureSpec()
    stream = FeatureStream(spec, "1h", "EURUSD")
    stream.catch_up(candles.head(-1), {}, {})
    revised = candles.head(-1).with_columns(
        pl.when(pl.col("ts") == pl.col("ts").max())
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    with pytest.raises(OutOfStep, match="revised"):
        stream.catch_up(revised, {}, {})
    with pytest.raises(OutOfStep, match="no longer stored"):
        stream.catch_up(candles.head(-2), {}, {})
    with pytest.raises(OutOfStep, match="changed"):  # a stored 4h series appeared
        stream.catch_up(candles, {"4h": market("EURUSD", "4h")}, {})

    streams = FeatureStreams()
    expected = compute_features(candles.head(-1), spec, "1h", symbol="EURUSD").frame
    columns = expected.columns[1:]
    streams.last_row(candles.head(-1), {}, {}, spec, H1, "EURUSD", columns)
    row = streams.last_row(revised, {}, {}, spec, H1, "EURUSD", columns)
    assert streams.restarts == 1
    rebuilt = compute_features(revised, spec, "1h", symbol="EURUSD").frame
    np.testing.assert_array_equal(row[0], np.array(rebuilt.row(-1)[1:], dtype=np.float64))


def test_other_columns_than_the_models_are_refused() -> None:
    candles = market("EURUSD")
    stream = FeatureStream(FeatureSpec(), "1h", "EURUSD")
    stream.catch_up(candles, {}, {})
    columns = list(stream.row)
    with pytest.raises(ColumnsDiffer, match="missing"):
        stream.values([*columns, "rsi_99"])
    with pytest.raises(ColumnsDiffer, match="not in the model"):
        stream.values(columns[1:])
    with pytest.raises(ColumnsDiffer):
        stream.values(columns[::-1])  # the same columns in another order


def test_a_stream_with_replayed_functions_starts_again_once_it_has_doubled() -> None:
    """Replayed functions keep every input: once a stream holds twice the candles it started
    with, it starts again on the tail it is given — its row then that tail's full build."""
    spec = FeatureSpec(indicators=[IndicatorSpec(function="KAMA")], higher_timeframes=[])
    candles = market("EURUSD")
    streams, tail = FeatureStreams(), 200
    columns = compute_features(candles.head(tail), spec, "1h", symbol="EURUSD").columns
    for end in range(tail, 2 * tail + 2):
        window = candles.slice(end - tail, tail)
        row = streams.last_row(window, {}, {}, spec, H1, "EURUSD", columns)
    assert streams.renewals == 1 and streams.restarts == 0
    rebuilt = compute_features(window, spec, "1h", symbol="EURUSD").frame
    np.testing.assert_array_equal(row[0], np.array(rebuilt.row(-1)[1:], dtype=np.float64))
