"""Triple-barrier labels: the vectorised version equals the reference loop on random data with
ties and gaps; the documented conventions hold on hand-made paths."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.feature_spec import LabelSpec
from features._reference import triple_barrier_loop
from features.labels import cusum_events, triple_barrier

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candles(o, h, lo, c) -> pl.DataFrame:
    n = len(c)
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(hours=i) for i in range(n)],
            "open": np.asarray(o, float),
            "high": np.asarray(h, float),
            "low": np.asarray(lo, float),
            "close": np.asarray(c, float),
            "volume": np.ones(n),
        }
    )


@st.composite
def random_market(draw):
    """Prices on a coarse grid (so closes tie barriers and each other), opens that gap away from
    the previous close, and some flat stretches (σ = 0, barriers at the entry price)."""
    n = draw(st.integers(3, 60))
    ticks = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    close = 100 + np.cumsum(ticks).astype(float) * 0.5
    close = np.maximum(close, 1.0)
    gaps = np.asarray(draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))) * 0.5
    open_ = np.maximum(np.r_[close[0], close[:-1]] + gaps, 0.5)
    wick = np.asarray(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))) * 0.5
    high = np.maximum(open_, close) + wick
    low = np.maximum(np.minimum(open_, close) - wick[::-1], 0.25)
    return candles(open_, high, low, close)


spec_strategy = st.builds(
    LabelSpec,
    pt=st.sampled_from([0.5, 1.0, 2.0]),
    sl=st.sampled_from([0.5, 1.0, 3.0]),
    horizon=st.integers(1, 8),
    vol=st.sampled_from(["ewm", "atr"]),
    vol_window=st.integers(2, 5),
    touch=st.sampled_from(["close", "high_low"]),
)


def _assert_matches_loop(frame, spec, side=None) -> None:
    fast = triple_barrier(frame, spec, side=side, pip_size=0.01)
    slow = triple_barrier_loop(frame, spec, side=side, pip_size=0.01)
    for i, expected in enumerate(slow):
        row = fast.row(i, named=True)
        if expected is None:
            assert row["label"] is None and row["t1"] is None and row["ret"] is None
            continue
        assert row["label"] == expected["label"], (i, row, expected)
        assert row["barrier"] == expected["barrier"]
        assert row["bars"] == expected["bars"]
        assert row["t1"] == frame["ts"][expected["exit"]]
        assert math.isclose(row["ret"], expected["ret"], rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(row["pips"], expected["pips"], rel_tol=1e-12, abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(frame=random_market(), spec=spec_strategy)
def test_vectorised_equals_reference_loop(frame: pl.DataFrame, spec: LabelSpec) -> None:
    _assert_matches_loop(frame, spec)


@settings(max_examples=150, deadline=None)
@given(frame=random_market(), spec=spec_strategy, data=st.data())
def test_vectorised_equals_reference_loop_with_sides(frame, spec, data) -> None:
    side = np.asarray(
        data.draw(
            st.lists(st.sampled_from([-1, 0, 1]), min_size=frame.height, max_size=frame.height)
        )
    )
    _assert_matches_loop(frame, spec, side)


# Hand-made paths: σ is fixed by a flat warm-up so barrier prices are known.
def _path(closes, highs=None, lows=None, opens=None) -> pl.DataFrame:
    closes = np.asarray(closes, float)
    highs = closes + 0.5 if highs is None else np.asarray(highs, float)
    lows = closes - 0.5 if lows is None else np.asarray(lows, float)
    opens = np.r_[closes[0], closes[:-1]] if opens is None else np.asarray(opens, float)
    return candles(
        opens,
        np.maximum(highs, np.maximum(opens, closes)),
        np.minimum(lows, np.minimum(opens, closes)),
        closes,
    )


def test_upper_first_lower_first_and_time_out() -> None:
    spec = LabelSpec(pt=1, sl=1, horizon=3, vol="atr", vol_window=2, touch="close")
    frame = _path([100, 100, 100, 101, 103, 100, 100, 100, 100, 96, 100, 100, 100, 100])
    out = triple_barrier(frame, spec)
    sigma = out["sigma"][2]
    assert sigma > 0
    first = out.row(2, named=True)  # next closes 101 (< 100·e^σ), 103: upper at the 2nd bar
    assert (first["label"], first["barrier"], first["bars"]) == (1, "tp", 2)
    assert first["t1"] == frame["ts"][4]
    assert first["ret"] == pytest.approx(0.03)  # close-only: exit at the touching close
    lower = out.row(7, named=True)  # closes 100, 96: lower at the 2nd bar
    assert (lower["label"], lower["barrier"], lower["bars"]) == (-1, "sl", 2)
    flat = out.row(10, named=True)  # nothing moves: the vertical barrier
    assert (flat["label"], flat["barrier"], flat["bars"], flat["ret"]) == (0, "time", 3, 0.0)
    assert out["label"][-3:].is_null().all()  # the last `horizon` bars have no complete label


def test_same_bar_double_touch_counts_as_stop_loss() -> None:
    spec = LabelSpec(pt=1, sl=1, horizon=2, vol="atr", vol_window=2, touch="high_low")
    closes = [100, 100, 100, 100, 100, 100]
    frame = _path(
        closes,
        highs=[100.2, 100.2, 100.2, 130, 100.2, 100.2],
        lows=[99.8, 99.8, 99.8, 70, 99.8, 99.8],
    )
    row = triple_barrier(frame, spec).row(2, named=True)
    assert (row["label"], row["barrier"], row["bars"]) == (-1, "sl", 1)
    assert row["ret"] < 0


def test_stop_gapped_through_fills_at_the_open() -> None:
    spec = LabelSpec(pt=5, sl=1, horizon=3, vol="atr", vol_window=2, touch="high_low")
    frame = _path(
        [100, 100, 100, 90, 90, 90, 90],
        opens=[100, 100, 100, 90, 90, 90, 90],
        highs=[100.5, 100.5, 100.5, 90, 90, 90, 90],
    )
    row = triple_barrier(frame, spec).row(2, named=True)
    assert row["label"] == -1
    assert row["ret"] == pytest.approx(90 / 100 - 1)  # the open, not the barrier
    assert row["pips"] == pytest.approx(-10 / 0.0001)


def test_short_side_meta_label() -> None:
    spec = LabelSpec(pt=1, sl=1, horizon=3, vol="atr", vol_window=2, touch="close")
    frame = _path([100, 101, 100, 97, 97, 97, 97, 97])
    side = np.array([0, 0, -1, -1, 1, 1, 1, 1])
    out = triple_barrier(frame, spec, side=side)
    short = out.row(2, named=True)
    assert short["label"] == -1 and short["barrier"] == "tp"  # lower touched: a short's profit
    assert short["ret"] > 0 and short["meta"] == 1
    assert out["meta"][0] is None  # no side, no trade


def test_cusum_filter_marks_cumulated_moves() -> None:
    close = np.r_[np.full(10, 100.0), 100.5, 101.0, 101.5, np.full(5, 101.5), 100.0]
    sigma = np.full(close.size, 0.004)
    events = cusum_events(close, sigma, threshold=2.0)
    assert events.tolist().index(True) == 11  # 0.5 % + 0.5 % cumulated > 0.8 %
    assert events[-1]  # the 1.5 % drop
    assert events.sum() == 2  # bar 12 (+0.5 % after the reset) stays under 0.8 %


def test_bad_spec_is_rejected() -> None:
    with pytest.raises(ValueError, match="pt"):
        LabelSpec(pt=0)
    with pytest.raises(ValueError, match="horizon"):
        LabelSpec(horizon=0)
    with pytest.raises(ValueError, match="touch"):
        LabelSpec(touch="wick")
