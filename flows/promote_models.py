"""Stage 5: promotion. Each symbol × timeframe's ``challenger`` goes through the gate
(``models/promotion.py``) and becomes ``champion`` only on evidence; every decision is recorded
on the model version and published as a markdown artifact. Runs at the end of training and on
its own (a daily review, or after a change of the gate's settings)."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from core.collect import collection_units
from core.config import Settings, load_settings
from core.reports import PromoteReport
from flows._fanout import Chain, fan_out, publish_decisions, raise_if_failed
from tasks.promote import review_challenger


@flow(name="promote-models", task_runner=ThreadPoolTaskRunner(max_workers=2))
def promote_models(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[PromoteReport]:
    """Review the challenger of every symbol × timeframe (defaults: the configured universe)."""
    settings = settings or load_settings(config, home)

    def chain(symbol: str, timeframe: str) -> Chain:
        return (review_challenger.submit(settings, symbol, timeframe),)

    rows = fan_out(collection_units(settings, symbols, timeframes), chain, PromoteReport)
    publish_decisions(rows)
    return raise_if_failed(rows)


if __name__ == "__main__":
    promote_models()
