"""Tasks of the promotion stage: review a challenger through the gate (registry I/O: retried).
Safe to retry: a promoted version is already champion, a refused one is judged the same way."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.config import Settings
from core.reports import PromoteReport, TrainReport
from models.registry import Reviewer
from models.tracking import setup

REVIEW = {
    "cache_policy": NO_CACHE,
    "retries": 2,
    "retry_delay_seconds": 5,
    "task_run_name": "promote-{symbol}-{timeframe}",
}


@task(**REVIEW)
def review_challenger(
    settings: Settings, symbol: str, timeframe: str, version: str | None = None
) -> PromoteReport:
    """Gate ``version`` (default: the challenger); promote it if every check holds."""
    client = setup(settings.home, settings.mlflow.tracking_uri)
    return _logged(Reviewer(settings, client).review(symbol, timeframe, version).report())


@task(**REVIEW)
def review_trained(
    settings: Settings, trained: TrainReport, symbol: str, timeframe: str
) -> TrainReport:
    """Gate the version a training just registered; its report row with the verdict. A reused
    version (the same training registered before) was judged then: left as it is."""
    if trained.reused or trained.version is None:
        return trained
    client = setup(settings.home, settings.mlflow.tracking_uri)
    decision = Reviewer(settings, client).review(symbol, timeframe, trained.version).report()
    return trained.model_copy(update={"promotion": _logged(decision)})


def _logged(decision: PromoteReport) -> PromoteReport:
    """The decision and its reasons in the run's log (the Prefect UI shows them)."""
    verdict = "promoted" if decision.promoted else "not promoted"
    reasons = "; ".join(decision.reasons or [])
    line = decision.summary or f"{decision.symbol} {decision.timeframe}: {verdict} {reasons}"
    get_run_logger().info("%s", line)
    return decision
