"""Purged K-fold and holdout: no training label interval may overlap a test label interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.splits import overlaps, purged_kfold, walk_forward

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def events(starts_h: list[int], bars: list[int]) -> tuple[pl.Series, pl.Series]:
    t0 = pl.Series([T0 + h * H for h in starts_h], dtype=pl.Datetime("us", "UTC"))
    t1 = pl.Series(
        [T0 + (h + b) * H for h, b in zip(starts_h, bars, strict=True)],
        dtype=pl.Datetime("us", "UTC"),
    )
    return t0, t1


@st.composite
def event_sets(draw):
    n = draw(st.integers(10, 120))
    steps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))  # gaps in time
    bars = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    return events(list(np.cumsum(steps)), bars)


def _us(s: pl.Series) -> np.ndarray:
    return s.dt.epoch("us").to_numpy()


@settings(max_examples=200, deadline=None)
@given(data=event_sets(), k=st.integers(2, 6), embargo_h=st.integers(0, 6))
def test_no_training_label_overlaps_a_test_label(data, k: int, embargo_h: int) -> None:
    t0, t1 = data
    if t0.len() < 2 * k:
        return
    folds = purged_kfold(t0, t1, k, embargo_h * H)
    s, e = _us(t0), _us(t1)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(t0.len()))
    for fold in folds:
        assert not overlaps(s, e, fold.train, fold.test)
        assert not set(fold.train) & set(fold.test)
        after = fold.train[s[fold.train] > s[fold.test].max()]
        assert np.all(s[after] > e[fold.test].max() + embargo_h * 3_600_000_000)


def test_left_edge_purges_by_the_first_test_event_start_not_its_end() -> None:
    # Event 1's label is [2 h, 7 h]; the test block [events 2, 3] starts with event 2, label
    # [4 h, 8 h]. The buggy rule (keep training labels ending by the *end* of the first test
    # label, 7 ≤ 8) would train on event 1, whose label overlaps the test label. Ours does not.
    t0, t1 = events([0, 2, 4, 6, 8, 10, 12, 14], [1, 5, 4, 1, 1, 1, 1, 1])
    block = purged_kfold(t0, t1, 4, timedelta(0))[1]
    assert block.test.tolist() == [2, 3]
    assert _us(t1)[1] <= _us(t1)[2]  # what the buggy rule would have kept
    assert block.train.tolist() == [0, 5, 6, 7]  # 1 purged left, 4 (starts at 8 h) purged right
    assert not overlaps(_us(t0), _us(t1), block.train, block.test)


def test_embargo_removes_training_events_just_after_the_test_block() -> None:
    t0, t1 = events(list(range(0, 40)), [2] * 40)
    without = purged_kfold(t0, t1, 4, timedelta(0))[1]
    with_embargo = purged_kfold(t0, t1, 4, timedelta(hours=5))[1]
    assert with_embargo.train.size == without.train.size - 5
    last_end = _us(t1)[with_embargo.test].max()
    assert (
        _us(t0)[with_embargo.train[with_embargo.train > with_embargo.test.max()]].min()
        > last_end + 5 * 3_600_000_000
    )


@settings(max_examples=100, deadline=None)
@given(
    data=event_sets(),
    development=st.sampled_from([0.2, 0.5, 0.7]),
    embargo_h=st.integers(0, 8),
    every_h=st.integers(1, 12),
    window_h=st.sampled_from([None, 6, 30]),
)
def test_walk_forward_predicts_every_later_event_from_the_purged_past(
    data, development: float, embargo_h: int, every_h: int, window_h: int | None
) -> None:
    t0, t1 = data
    window = None if window_h is None else window_h * H
    walk = walk_forward(t0, t1, development, every_h * H, window=window, embargo=embargo_h * H)
    s, e = _us(t0), _us(t1)
    first = round(t0.len() * development)
    assert walk.oos.tolist() == list(range(first, t0.len()))  # every later event, once
    assert not overlaps(s, e, walk.development, walk.oos)
    assert np.all(s[walk.development] < s[first] - embargo_h * 3_600_000_000)
    for step in walk.steps:
        block_start = s[step.test[0]]
        assert np.all(e[step.train] < block_start)  # labels ended before the block
        assert np.all(s[step.test] - block_start < every_h * 3_600_000_000)
        if window_h is not None:
            assert np.all(s[step.train] >= block_start - window_h * 3_600_000_000)


def test_bad_arguments() -> None:
    t0, t1 = events(list(range(5)), [1] * 5)
    with pytest.raises(ValueError, match="splits"):
        purged_kfold(t0, t1, 3, H)
    with pytest.raises(ValueError, match="development fraction"):
        walk_forward(t0, t1, 1.5, H)
    with pytest.raises(ValueError, match="refit_every"):
        walk_forward(t0, t1, 0.5, 0 * H)
    with pytest.raises(ValueError, match="sorted"):
        purged_kfold(t0.reverse(), t1.reverse(), 2, H)


def test_overlaps_helper() -> None:
    s, e = np.array([0, 5, 10]), np.array([4, 9, 12])
    assert not overlaps(s, e, np.array([0]), np.array([1, 2]))
    assert overlaps(np.array([0, 4]), np.array([4, 6]), np.array([0]), np.array([1]))  # touch
