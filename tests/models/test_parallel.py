"""The fit pool: results in the submission order, computed in worker processes, errors raised with
their own type, inline for one worker."""

from __future__ import annotations

import os
import time

import pytest

from models.parallel import FitPool, fit_workers, gather

DELAYS = {"slow": 0.3, "fast": 0.0, "mid": 0.1}


def _job(key: str) -> tuple[str, int]:
    time.sleep(DELAYS[key])
    return key.upper(), os.getpid()


def test_results_keep_the_keys_order_and_run_in_worker_processes() -> None:
    pool = FitPool(workers=2)
    results = gather([pool.submit(_job, key) for key in DELAYS])
    assert [name for name, _ in results] == ["SLOW", "FAST", "MID"]
    assert os.getpid() not in {pid for _, pid in results}


def test_one_worker_runs_inline() -> None:
    pool = FitPool(workers=1)
    results = gather([pool.submit(_job, key) for key in ("fast", "mid")])
    assert {pid for _, pid in results} == {os.getpid()}


def _fail(key: str) -> str:
    if key == "bad":
        raise ValueError("bad family")
    return key


def test_an_error_reaches_the_caller_with_its_own_type() -> None:
    with pytest.raises(ValueError, match="bad family"):
        pool = FitPool(workers=2)
        gather([pool.submit(_fail, key) for key in ("a", "bad", "b")])


def test_a_closure_is_shipped_to_the_workers() -> None:
    offset = 10

    def add(key: int) -> int:
        return key + offset

    pool = FitPool(workers=2)
    assert gather([pool.submit(add, key) for key in (1, 2, 3)]) == [11, 12, 13]


def test_workers_fit_the_cores() -> None:
    assert fit_workers(1) >= 1
    assert fit_workers(10_000) == 1


def test_a_pool_job_submitted_on_completion_runs_and_errors_keep_their_type() -> None:
    pool = FitPool(workers=2)
    first = pool.submit(_job, "fast")
    _key, pid = first.result()
    follower = pool.submit(_job, "mid")  # submitted once the first ended, as training does
    assert gather([first, follower])[1][0] == "MID" and pid != os.getpid()
    with pytest.raises(ValueError, match="bad family"):
        gather([pool.submit(_fail, "a"), pool.submit(_fail, "bad")])


def test_an_inline_pool_runs_at_submission_and_holds_the_error_for_gather() -> None:
    pool = FitPool(workers=1)
    done = pool.submit(_job, "fast")
    assert done.done() and done.result()[1] == os.getpid()
    failed = pool.submit(_fail, "bad")
    with pytest.raises(ValueError, match="bad family"):
        gather([done, failed])
    pool.warm("json")  # nothing to start inline
