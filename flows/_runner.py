"""The task runner of a flow's per-symbol fan-out, chosen by ``[orchestration]`` in the config:
a thread pool in the flow's process (the default), or prefect-dask's ``DaskTaskRunner`` on a
temporary local cluster or an existing Dask scheduler.

Callers that hold the settings (the CLI, the parent flow, ``candleflow serve``) apply the runner
with ``flow.with_options(task_runner=task_runner(settings, workers))``. A flow started any other way
(a worker running a ``prefect deploy`` deployment) gets :class:`ConfiguredTaskRunner`, which reads
the config in effect (``$CANDLEFLOW_CONFIG``, ``./candleflow.toml`` or the shipped one) when the
run starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any, Self

from prefect.futures import PrefectFuture
from prefect.settings import temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from core.config import Settings, load_settings
from core.errors import ConfigError


def task_runner(settings: Settings, workers: int) -> TaskRunner:
    """The configured runner; ``workers``: the thread pool's size (threads only)."""
    o = settings.orchestration
    if o.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError(
            "orchestration.task_runner = 'dask' needs prefect-dask: "
            "pip install 'candleflow[dask]' (or uv sync --extra dask)"
        ) from None
    if o.dask_address:
        return DaskTaskRunner(address=o.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": o.dask_workers,
            "threads_per_worker": o.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no web dashboard port (and no bokeh needed)
        }
    )


def cpu_workers(settings: Settings) -> int:
    """Threads for CPU-bound fan-outs: no more than cores."""
    return max(1, min(settings.collect.max_workers, os.cpu_count() or 1))


def training_workers(settings: Settings) -> int:
    """Parallel trainings: cores / threads per fit."""
    return max(1, (os.cpu_count() or 1) // settings.training.n_threads)


Workers = Callable[[Settings], int]


def unit_threads(units: Workers, tasks_per_unit: int) -> Workers:
    """Threads for ``units(settings)`` units running side by side when each unit is a chain of
    ``tasks_per_unit`` tasks. A submitted task takes its runner thread at once and waits there
    for its upstream, so a pool of one thread per unit is held by the first units' waiting
    downstream tasks and runs the units one at a time."""
    return lambda settings: units(settings) * tasks_per_unit


class ConfiguredTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """Resolves the configured runner when the flow run enters it and delegates to it."""

    def __init__(self, workers: Callable[[Settings], int]) -> None:
        super().__init__()
        self._workers = workers
        self._inner: TaskRunner | None = None

    @property
    def name(self) -> str:
        return "configured"

    def duplicate(self) -> Self:
        return type(self)(self._workers)

    def __enter__(self) -> Self:
        settings = load_settings()
        self._inner = task_runner(settings, self._workers(settings))
        self._inner.__enter__()
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._inner is not None:
                self._inner.__exit__(*exc_info)
        finally:
            self._inner = None
            super().__exit__(*exc_info)

    def submit(  # type: ignore[override]
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectFuture[Any]:
        if self._inner is None:
            raise RuntimeError("the task runner is used outside its context")
        return self._inner.submit(task, parameters, wait_for, dependencies)


def heartbeats_off() -> contextlib.AbstractContextManager[Any]:
    """No flow-run heartbeats for a command's own flow run, in its process or handed to the
    signal service (unless the user set their frequency, ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``).
    A heartbeat lets a Prefect automation of the user's mark a run that stopped sending them as
    crashed — a guard for long runs of deployments, which keep them; a command's run lasts
    seconds, and Prefect joins the heartbeat thread at its end, which sleeps in 1 s steps:
    ~0.8 s per command."""
    names = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
    if any(os.environ.get(name) for name in names):
        return contextlib.nullcontext()
    return temporary_settings(updates={"flows.heartbeat_frequency": None})  # type: ignore[dict-item]
