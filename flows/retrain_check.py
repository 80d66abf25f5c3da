"""The retrain check (hourly): per symbol × timeframe, is there enough newly labelled data since the
newest training, or has the champion's live hit rate decayed? Where so (and not within the
cooldown), start the retraining deployment (``retrain.deployment``: the pipeline without live
signals) with ``run_deployment``: Prefect runs it, not a scheduler of ours."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from core.collect import collection_units
from core.config import Settings, load_settings
from core.reports import RetrainReport
from flows._fanout import Chain, fan_out, first_error, publish_table, raise_if_failed
from tasks.retrain import assess_retrain, start_retraining


@flow(name="retrain-check", task_runner=ThreadPoolTaskRunner(max_workers=2))
def retrain_check(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    start: Literal["deployment", "inline", "none"] = "deployment",
    now: datetime | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[RetrainReport]:
    """Judge every model (defaults: the configured universe); retrain those due — ``start``:
    through the ``retrain.deployment`` (the served default), ``inline`` as a subflow here (no
    server needed), or ``none`` (report only)."""
    settings = settings or load_settings(config, home)
    now = now or datetime.now(UTC)

    def chain(symbol: str, timeframe: str) -> Chain:
        return (assess_retrain.submit(settings, symbol, timeframe, now),)

    rows = fan_out(collection_units(settings, symbols, timeframes), chain, RetrainReport)
    due: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.retrain:
            due[row.timeframe].append(row.symbol)
    params = {k: v for k, v in (("home", home), ("config", config)) if v is not None}
    started = {
        timeframe: _start(start, settings, names, timeframe, params)
        for timeframe, names in due.items()
    }
    rows = [r.model_copy(update=started[r.timeframe]) if r.retrain else r for r in rows]
    publish_table("retrain-check", rows, "Retrain check: new samples, live hit rate, decision")
    return raise_if_failed(rows)


def _start(
    how: str, settings: Settings, symbols: list[str], timeframe: str, params: dict[str, str]
) -> dict[str, str | None]:
    """Start the retraining; what was started (or why not) for the report rows."""
    if how == "none":
        return {"flow_run": "not started (start=none)"}
    if how == "inline":
        from flows.pipeline import run_pipeline

        state = run_pipeline(
            symbols=symbols,
            timeframes=[timeframe],
            signals=False,
            settings=settings,
            return_state=True,
            **params,
        )
        return {"flow_run": state.name, "error": None if state.is_completed() else state.message}
    deployment = settings.retrain.deployment
    future = start_retraining.submit(deployment, symbols, timeframe, params)
    error = first_error(future)
    if error:
        hint = " (is it deployed? `candleflow serve`, or `prefect deploy --all`)"
        return {"error": f"starting {deployment}: {error}{hint}"}
    return {"flow_run": future.result().flow_run}


if __name__ == "__main__":
    retrain_check()
