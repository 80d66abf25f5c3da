"""Task of the promotion stage: review a challenger through the gate (registry I/O: retried)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.config import Settings
from models.registry import Reviewer
from models.tracking import setup


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="promote-{symbol}-{timeframe}",
)
def review_challenger(
    settings: Settings, symbol: str, timeframe: str, version: str | None = None
) -> dict[str, Any]:
    """Gate ``version`` (default: the challenger); promote it if every check holds. Safe to
    retry: a promoted version is already champion, a refused one is judged the same way again."""
    client = setup(settings.home, settings.mlflow.tracking_uri)
    decision = Reviewer(settings, client).review(symbol, timeframe, version)
    return decision.to_dict() | {"summary": decision.summary()}
