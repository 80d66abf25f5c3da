"""Stage 4 (and 5): per-symbol training — purged CV, Optuna per family, an ensemble, an honest
walk-forward out-of-sample evaluation, tracked in MLflow and registered as ``challenger`` — then
the promotion gate on each new challenger, as its own task. Fanned out per symbol × timeframe;
one unit's failure does not stop the others."""

from __future__ import annotations

from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact

from core.collect import collection_units
from core.config import Settings, load_settings
from core.reports import TrainReport
from flows._fanout import Chain, fan_out, publish_decisions, publish_table, raise_if_failed
from flows._runner import ConfiguredTaskRunner, task_runner, training_workers, unit_threads
from models.training import TrainingConfig
from tasks.promote import review_trained
from tasks.train import read_training_data, record, registered_trials, train

SUMMARY = ("cv_auc", "oos_auc", "oos_sharpe", "oos_days", "dsr", "pbo", "trades", "bh_sharpe")


# A unit's tasks: read, prior trials, train, record, review (flows._runner.unit_threads).
THREADS = unit_threads(training_workers, tasks_per_unit=5)


@flow(name="train-models", task_runner=ConfiguredTaskRunner(THREADS))
def train_models(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    trials: int | None = None,
    promote: bool = True,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[TrainReport]:
    """Train every symbol × timeframe (defaults: the configured universe) from its dataset, then
    (``promote``) put each new challenger through the promotion gate. ``trials``: Optuna trials
    per family (default: configured). ``settings``: the configuration already resolved by the
    caller (else loaded from ``config`` / ``home``)."""
    settings = settings or load_settings(config, home)
    if trials is not None:  # a copy: the caller's settings stay as they were
        training = settings.training.model_copy(update={"trials": trials})
        settings = settings.model_copy(update={"training": training})
    home_dir, uri, journal = settings.home, settings.mlflow.tracking_uri, settings.home / "optuna"

    def chain(symbol: str, timeframe: str) -> Chain:
        cfg = TrainingConfig.from_settings(settings, symbol, timeframe)
        data = read_training_data.submit(home_dir, symbol, timeframe)
        prior = registered_trials.submit(home_dir, uri, symbol, timeframe)
        result = train.submit(data, cfg, journal, symbol, timeframe, prior)
        recorded = record.submit(result, cfg, data, home_dir, uri, symbol, timeframe)
        if not promote:
            return data, prior, result, recorded
        return (
            data,
            prior,
            result,
            recorded,
            review_trained.submit(settings, recorded, symbol, timeframe),
        )

    rows = fan_out(collection_units(settings, symbols, timeframes), chain, TrainReport)
    decisions = [r.promotion for r in rows if r.promotion is not None]
    if decisions:
        publish_decisions(decisions)
    create_markdown_artifact(
        key="training-report",
        markdown=_markdown(rows),
        description="Out-of-sample evaluation per symbol",
    )
    publish_table("training-metrics", rows, "Out-of-sample metrics of the trained ensembles")
    return raise_if_failed(rows)


def _markdown(rows: list[TrainReport]) -> str:
    lines = [
        "# Training",
        "",
        "| symbol | tf | version | " + " | ".join(SUMMARY) + " | promoted |",
        "|---" * (4 + len(SUMMARY)) + "|",
    ]
    for r in rows:
        m = r.metrics or {}
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-" for k in SUMMARY]
        lines.append(
            f"| {r.symbol} | {r.timeframe} | {r.version or r.error} | "
            + " | ".join([*cells, str(r.promoted)])
            + " |"
        )
    return "\n".join(lines)


def configured(settings: Settings) -> Flow:
    """The flow with the configured task runner (threads: no more parallel trainings than cores
    allow, each fit using ``training.n_threads``)."""
    return train_models.with_options(task_runner=task_runner(settings, THREADS(settings)))


if __name__ == "__main__":
    train_models()
