"""The family jobs' schedule: the walk-forward cut into chunks that cover every step once, in
order, each with the rows it reads; the costliest families tuned first."""

from __future__ import annotations

import numpy as np
import pytest

from models.family_runs import _chunks, _cost_rank
from models.splits import Fold


def _anchored(steps: int, block: int = 10, first: int = 40) -> list[Fold]:
    starts = [first + i * block for i in range(steps)]
    return [Fold(np.arange(s - 3), np.arange(s, s + block)) for s in starts]


@pytest.mark.parametrize(("steps", "n"), [(18, 3), (5, 3), (2, 3), (1, 3), (7, 1), (40, 4)])
def test_chunks_cover_every_step_once_in_order_with_the_rows_they_read(steps: int, n: int) -> None:
    walk = _anchored(steps)
    chunks = _chunks(walk, n)
    assert 1 <= len(chunks) <= min(n, steps)
    flat = [step for run, _ in chunks for step in run]
    assert flat == walk  # the same objects, in order, each once
    for run, end in chunks:
        assert end == 1 + max(int(max(s.train.max(), s.test.max())) for s in run)


def test_chunks_have_about_equal_cost_when_fits_grow() -> None:
    costs = [sum(s.train.size + s.test.size for s in run) for run, _ in _chunks(_anchored(18), 3)]
    assert max(costs) < 1.6 * min(costs)  # the later, larger fits come in shorter runs


def test_the_costliest_families_are_tuned_first() -> None:
    families = ["logreg", "xgboost", "lightgbm", "hgb"]
    assert sorted(families, key=_cost_rank) == ["hgb", "lightgbm", "xgboost", "logreg"]
