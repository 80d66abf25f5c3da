"""Settings of how candleflow runs: the task runner of the per-symbol fan-out, the local servers of
``candleflow up``, and the retrain check (``flows/retrain_check.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.settings_base import Section


class OrchestrationSettings(Section):
    """Task runner and local servers."""

    # "threads": a thread pool in the flow's process (the embedded default); "dask": prefect-dask's
    # DaskTaskRunner, on a temporary local cluster or on the scheduler at ``dask_address``.
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str = ""
    dask_workers: int = Field(default=2, ge=1, le=1024)
    dask_threads_per_worker: int = Field(default=1, ge=1, le=64)
    # `candleflow serve` / `up`: flow runs at once in the serving process (each in a subprocess).
    max_concurrent_runs: int = Field(default=4, ge=1, le=256)
    host: str = "127.0.0.1"
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    startup_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    # `signals` and `collect` run their flow in the signal service of a running `up` (a warm
    # process, same settings and code: core/attach.py); false: always in the command's process.
    run_in_service: bool = True


class RetrainSettings(Section):
    """When the hourly retrain check starts a training for a symbol × timeframe."""

    # Labelled samples (candles whose triple-barrier outcome is known) since the data end of the
    # newest training of the model (its champion's, unless a later training was refused).
    min_new_samples: int = Field(default=1000, ge=1)
    # Live decay: the champion's live BUY hit rate below this, once enough outcomes are known.
    min_live_hit_rate: float = Field(default=0.40, ge=0.0, le=1.0)
    min_resolved_signals: int = Field(default=30, ge=1)
    # No new trigger for a model within this many hours of its newest training.
    cooldown_hours: float = Field(default=24.0, ge=0.0)
    # What a trigger starts: a Prefect deployment (flow name/deployment name) run by run_deployment.
    deployment: str = "candleflow-run/retrain"
