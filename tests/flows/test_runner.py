"""The fan-out's thread pool: units whose tasks are chained run side by side (a submitted task
waits for its upstream in its runner thread, so one thread per unit would run them one at a
time)."""

from __future__ import annotations

import time

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from core.config import load_settings
from flows._runner import cpu_workers, training_workers, unit_threads

UNITS, TASKS = 2, 3


@task
def _start(unit: int) -> int:
    return unit


@task
def _work(unit: int, log: list[tuple[str, int, float]]) -> int:
    log.append(("in", unit, time.perf_counter()))
    time.sleep(0.4)
    log.append(("out", unit, time.perf_counter()))
    return unit


@task
def _after(unit: int) -> int:
    return unit


def _overlapped(threads: int) -> bool:
    """Whether two chained units' middle tasks ran at the same time on ``threads`` threads."""
    log: list[tuple[str, int, float]] = []

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=threads))
    def units() -> None:
        chains = []
        for unit in range(UNITS):  # every unit's chain submitted first, as fan_out does
            first = _start.submit(unit)
            middle = _work.submit(first, log)
            chains.append(_after.submit(middle))
        for future in chains:
            future.result()

    units()
    ins = sorted(t for kind, _, t in log if kind == "in")
    outs = sorted(t for kind, _, t in log if kind == "out")
    return ins[-1] < outs[0]  # the second started before the first ended


@pytest.mark.usefixtures("prefect_harness")
def test_chained_units_run_side_by_side_with_a_thread_per_task() -> None:
    threads = unit_threads(lambda _: UNITS, TASKS)(load_settings())
    assert threads == UNITS * TASKS
    assert _overlapped(threads)
    assert not _overlapped(UNITS)  # what one thread per unit did: one unit at a time


def test_the_training_and_dataset_flows_get_a_thread_per_task() -> None:
    from flows import build_dataset, train_models

    settings = load_settings()
    runner = train_models.configured(settings).task_runner
    assert runner._max_workers == training_workers(settings) * 5
    runner = build_dataset.configured(settings).task_runner
    assert runner._max_workers == cpu_workers(settings) * 4
