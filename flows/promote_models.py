"""Stage 5: promotion. Each symbol × timeframe's ``challenger`` goes through the gate
(``models/promotion.py``) and becomes ``champion`` only on evidence; every decision is recorded
on the model version and published as a markdown artifact. Runs at the end of training and on
its own (a daily review, or after a change of the gate's settings)."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from core.collect import collection_units
from core.config import load_settings
from flows._reporting import first_error, publish_decisions, raise_if_failed
from tasks.promote import review_challenger

PROMOTE_FIELDS = ("symbol", "timeframe", "version", "promoted", "kind", "reasons", "error")


@flow(name="promote-models", task_runner=ThreadPoolTaskRunner(max_workers=2))
def promote_models(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    home: str | None = None,
    config: str | None = None,
) -> list[dict]:
    """Review the challenger of every symbol × timeframe (defaults: the configured universe)."""
    settings = load_settings(config, home)
    units = [
        (symbol, timeframe, review_challenger.submit(settings, symbol, timeframe))
        for symbol, timeframe in collection_units(settings, symbols, timeframes)
    ]
    rows = []
    for symbol, timeframe, future in units:
        error = first_error(future)
        row = dict.fromkeys(PROMOTE_FIELDS) | {"symbol": symbol, "timeframe": timeframe}
        rows.append(row | ({"error": error} if error else future.result()))
    publish_decisions(rows)
    return raise_if_failed(rows)


if __name__ == "__main__":
    promote_models()
