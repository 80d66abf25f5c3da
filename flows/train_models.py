"""Stage 4: per-symbol training — purged CV, Optuna per family, an ensemble, an honest
walk-forward out-of-sample evaluation, tracked in MLflow and registered as ``challenger``.
Fanned out per symbol × timeframe; one unit's failure does not stop the others."""

from __future__ import annotations

from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact

from core.collect import collection_units
from core.config import Settings, load_settings
from flows._reporting import first_error, publish_decisions, publish_table, raise_if_failed
from flows._runner import ConfiguredTaskRunner, task_runner, training_workers
from models.training import TrainingConfig
from tasks.promote import review_challenger
from tasks.train import read_training_data, record, registered_trials, train

TRAIN_FIELDS = (
    "symbol",
    "timeframe",
    "model_name",
    "version",
    "metrics",
    "trials",
    "promoted",
    "reasons",
    "error",
)
SUMMARY = ("cv_auc", "oos_auc", "oos_sharpe", "oos_days", "dsr", "pbo", "trades", "bh_sharpe")


@flow(name="train-models", task_runner=ConfiguredTaskRunner(training_workers))
def train_models(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    trials: int | None = None,
    promote: bool = True,
    home: str | None = None,
    config: str | None = None,
) -> list[dict]:
    """Train every symbol × timeframe (defaults: the configured universe) from its dataset, then
    (``promote``) put each new challenger through the promotion gate."""
    settings = load_settings(config, home)
    if trials is not None:
        settings.training.trials = trials
    journal = settings.home / "optuna"
    units = []
    for symbol, timeframe in collection_units(settings, symbols, timeframes):
        cfg = TrainingConfig.from_settings(settings, symbol, timeframe)
        data = read_training_data.submit(settings.home, symbol, timeframe)
        prior = registered_trials.submit(
            settings.home, settings.mlflow.tracking_uri, symbol, timeframe
        )
        result = train.submit(data, cfg, journal, symbol, timeframe, prior)
        recorded = record.submit(
            result, cfg, data, settings.home, settings.mlflow.tracking_uri, symbol, timeframe
        )
        units.append((symbol, timeframe, data, prior, result, recorded))
    rows, decisions = [], []
    for symbol, timeframe, data, prior, result, recorded in units:
        error = first_error(data, prior, result, recorded)
        row = dict.fromkeys(TRAIN_FIELDS) | {"symbol": symbol, "timeframe": timeframe}
        row |= {"error": error} if error else recorded.result()
        if promote and not error and not row.get("reused"):  # a reused version was judged
            decision = review_challenger.submit(settings, symbol, timeframe, row["version"])
            decisions.append((row, decision))
        rows.append(row)
    outcomes = []
    for row, decision in decisions:
        error = first_error(decision)
        unit = {"symbol": row["symbol"], "timeframe": row["timeframe"]}
        failed = dict.fromkeys(("promoted", "reasons", "summary")) | unit
        outcome = failed | {"error": f"promotion: {error}"} if error else decision.result()
        row.update(
            promoted=outcome.get("promoted"),
            reasons=outcome.get("reasons"),
            error=outcome.get("error"),
        )
        outcomes.append(outcome | {"version": row["version"], "error": row["error"]})
    if outcomes:  # the review's own rows, with its summaries
        publish_decisions(outcomes)
    create_markdown_artifact(
        key="training-report",
        markdown=_markdown(rows),
        description="Out-of-sample evaluation per symbol",
    )
    table = [
        {
            "symbol": r["symbol"],
            "timeframe": r["timeframe"],
            "version": r["version"],
            **(r["metrics"] or {}),
            "error": r["error"],
        }
        for r in rows
    ]
    publish_table("training-metrics", table, "Out-of-sample metrics of the trained ensembles")
    return raise_if_failed(rows)


def _markdown(rows: list[dict]) -> str:
    lines = [
        "# Training",
        "",
        "| symbol | tf | version | " + " | ".join(SUMMARY) + " |",
        "|---" * (3 + len(SUMMARY)) + "|",
    ]
    for r in rows:
        m = r["metrics"] or {}
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-" for k in SUMMARY]
        lines.append(
            f"| {r['symbol']} | {r['timeframe']} | {r['version'] or r['error']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def configured(settings: Settings) -> Flow:
    """The flow with the configured task runner (threads: no more parallel trainings than cores
    allow, each fit using ``training.n_threads``)."""
    return train_models.with_options(task_runner=task_runner(settings, training_workers(settings)))


if __name__ == "__main__":
    train_models()
