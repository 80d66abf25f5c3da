"""Tasks of the retrain check: judge one model, start a retraining through a Prefect deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event

from core.config import Settings
from core.reports import RetrainReport
from core.store import CandleStore
from models.tracking import setup
from trading.ledger import Ledger
from trading.retrain import decide_retrain, gather_evidence, report_row

RETRAIN_EVENT = "candleflow.retrain.requested"


@dataclass(frozen=True)
class StartedRun:
    """A flow run started from a deployment: its id and its (generated) name."""

    flow_run_id: str
    flow_run: str


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="retrain-check-{symbol}-{timeframe}",
)
def assess_retrain(settings: Settings, symbol: str, timeframe: str, now: datetime) -> RetrainReport:
    """The evidence (registry, new outcomes, live hit rate) and the decision for one model."""
    client = setup(settings.home, settings.mlflow.tracking_uri)
    ledger = Ledger.from_settings(settings.live, settings.home)  # opening it migrates it
    try:
        evidence = gather_evidence(
            client, CandleStore(settings.home), ledger, symbol, timeframe, settings.labels, now
        )
    finally:
        ledger.dispose()
    return report_row(evidence, decide_retrain(evidence, settings.retrain))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def start_retraining(
    deployment: str, symbols: list[str], timeframe: str, parameters: Mapping[str, str]
) -> StartedRun:
    """A run of ``deployment`` for these models (not awaited: it runs on its own, visible in the
    UI as a subflow of the check), announced as a ``candleflow.retrain.requested`` event.
    ``parameters``: the deployment's other flow parameters (``home``, ``config``)."""
    run = run_deployment(
        deployment,
        parameters={"symbols": symbols, "timeframes": [timeframe], **parameters},
        timeout=0,
        tags=["candleflow", "retrain-check"],
    )
    for symbol in symbols:
        emit_event(
            RETRAIN_EVENT,
            resource={"prefect.resource.id": f"candleflow.model.{symbol}.{timeframe}"},
            payload={"deployment": deployment, "flow_run_id": str(run.id)},
        )
    return StartedRun(flow_run_id=str(run.id), flow_run=run.name)
