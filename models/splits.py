"""Time splits that cannot leak through overlapping labels (AFML ch. 7).

Each sample is an event with a label interval ``[t0, t1]``: ``t0`` the bar the trade is entered on
(its features use that bar), ``t1`` the bar it exits on (the label uses bars up to ``t1``).

* **Walk-forward** (:func:`walk_forward`): the first events for development (tuning and model
  selection), *purged*: an event whose label ends on or after the first out-of-sample event starts
  is dropped, and so is any event within the embargo before it; every later event predicted by a
  model fitted only on events whose labels ended before its block.
* **Purged K-fold with embargo** on the development set: contiguous test blocks; a training event
  is kept only if its label interval ends strictly before the test block's first event *starts*
  (``t1 < t0_first``; starting the test window at the end time of its first label, as one popular
  implementation does, leaks on the left side) or starts strictly after the block's last label
  ends plus the embargo (``t0 > max t1 + embargo``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # row positions
    test: np.ndarray


def _micros(series: pl.Series) -> np.ndarray:
    return series.dt.epoch("us").to_numpy()


def purged_kfold(t0: pl.Series, t1: pl.Series, n_splits: int, embargo: timedelta) -> list[Fold]:
    """K contiguous test blocks over the events (sorted by ``t0``) with purged, embargoed
    training sets (see the module docstring)."""
    start, end = _micros(t0), _micros(t1)
    n = start.size
    if n_splits < 2 or n < n_splits * 2:
        raise ValueError(
            f"purged K-fold needs ≥ 2 splits and ≥ 2 events per split; "
            f"got {n_splits} splits for {n} events"
        )
    if np.any(np.diff(start) < 0) or np.any(end < start):
        raise ValueError("events must be sorted by t0 and have t1 ≥ t0")
    gap = int(embargo.total_seconds() * 1e6)
    folds = []
    for test in np.array_split(np.arange(n), n_splits):
        first_start, last_end = start[test[0]], end[test].max()
        train = (end < first_start) | (start > last_end + gap)
        train[test] = False
        folds.append(Fold(train=np.flatnonzero(train), test=test))
    return folds


def overlaps(t0: np.ndarray, t1: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether any interval of set ``a`` overlaps any of set ``b`` (closed intervals)."""
    if a.size == 0 or b.size == 0:
        return False
    order = np.argsort(t0[b])
    b_start, b_end = t0[b][order], np.maximum.accumulate(t1[b][order])
    # For each a-interval: the b-intervals starting at or before its end; the latest-ending of
    # them overlaps it iff it ends at or after the a-interval's start.
    k = np.searchsorted(b_start, t1[a], side="right") - 1
    hit = k >= 0
    return bool(np.any(b_end[k[hit]] >= t0[a][hit]))


@dataclass(frozen=True)
class WalkForward:
    """The evaluation layout: ``development`` rows (tuning and model selection only, purged
    before the first out-of-sample row) and the out-of-sample ``steps``, each a block of test rows
    predicted by a model fitted on ``train`` rows whose labels ended before the block starts."""

    development: np.ndarray
    steps: list[Fold]

    @property
    def oos(self) -> np.ndarray:
        return np.concatenate([s.test for s in self.steps])


def walk_forward(
    t0: pl.Series,
    t1: pl.Series,
    development: float,
    refit_every: timedelta,
    *,
    window: timedelta | None = None,
    embargo: timedelta = timedelta(0),
) -> WalkForward:
    """The first ``development`` fraction of the events for tuning; every later event predicted
    out of sample by a model refitted every ``refit_every`` on the events before it: all of them
    (anchored, ``window=None``) or those starting within ``window`` of the block (rolling). A
    training event must have ended (``t1``) before its block's first event starts (purged); the
    development set also keeps the ``embargo`` before the first out-of-sample event."""
    if not 0 < development < 1:
        raise ValueError(f"development fraction must be in (0, 1), got {development}")
    if refit_every <= timedelta(0):
        raise ValueError(f"refit_every must be positive, got {refit_every}")
    start, end = _micros(t0), _micros(t1)
    n = start.size
    first = round(n * development)
    if first < 2 or first >= n:
        raise ValueError(f"{n} events are too few for a {development:.0%} development period")
    cutoff = start[first] - int(embargo.total_seconds() * 1e6)
    dev = np.flatnonzero((np.arange(n) < first) & (end < start[first]) & (start < cutoff))
    step_us = int(refit_every.total_seconds() * 1e6)
    block = (start[first:] - start[first]) // step_us
    boundaries = first + np.flatnonzero(np.r_[True, np.diff(block) > 0])
    steps = []
    for a, b in zip(boundaries, [*boundaries[1:], n], strict=True):
        train = end < start[a]
        if window is not None:
            train &= start >= start[a] - int(window.total_seconds() * 1e6)
        train[a:] = False
        steps.append(Fold(train=np.flatnonzero(train), test=np.arange(a, b)))
    return WalkForward(dev, steps)
