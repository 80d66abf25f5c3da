"""The fit pool: results in the keys' order, every job finished before an error is raised."""

from __future__ import annotations

import threading
import time

import pytest

from models.parallel import fit_workers, map_ordered


def test_results_keep_the_keys_order_whatever_finishes_first() -> None:
    delays = {"slow": 0.05, "fast": 0.0, "mid": 0.02}

    def job(key: str) -> str:
        time.sleep(delays[key])
        return key.upper()

    assert list(map_ordered(job, delays, workers=2).items()) == [
        ("slow", "SLOW"),
        ("fast", "FAST"),
        ("mid", "MID"),
    ]


def test_an_error_is_raised_after_every_job_has_finished() -> None:
    finished: list[str] = []

    def job(key: str) -> str:
        if key == "bad":
            raise ValueError("bad family")
        time.sleep(0.05)
        finished.append(key)
        return key

    with pytest.raises(ValueError, match="bad family"):
        map_ordered(job, ["bad", "a", "b"], workers=2)
    assert sorted(finished) == ["a", "b"]  # nothing left running behind the caller's back


def test_a_job_that_maps_again_runs_its_jobs_inline() -> None:
    """A job on the pool never waits on the pool (no deadlock when it is full)."""

    def inner(key: int) -> str:
        return threading.current_thread().name

    def outer(key: int) -> dict[int, str]:
        return map_ordered(inner, [1, 2], workers=2)

    names = map_ordered(outer, [1, 2, 3], workers=2)
    for inner_names in names.values():
        assert all(name.startswith("candleflow-fit") for name in inner_names.values())


def test_workers_fit_the_cores() -> None:
    assert fit_workers(1) >= 1
    assert fit_workers(10_000) == 1
