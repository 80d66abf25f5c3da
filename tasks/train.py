"""Tasks of the training stage: read the dataset, train, record in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.store import CandleStore
from features.dataset import dataset_path, read_dataset
from models.evidence import prior_trials
from models.recording import record_training
from models.tracking import registered_name, setup
from models.training import TrainingConfig, TrainingResult, train_dataset


@task(cache_policy=NO_CACHE, task_run_name="read-dataset-{symbol}-{timeframe}")
def read_training_data(
    home: Path, symbol: str, timeframe: str
) -> tuple[pl.DataFrame, dict[str, Any], pl.DataFrame]:
    """The dataset, its metadata and the candles it came from (for buy-and-hold)."""
    frame, metadata = read_dataset(dataset_path(home, symbol, timeframe))
    return frame, metadata, CandleStore(home).read(symbol, timeframe)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="prior-trials-{symbol}-{timeframe}",
)
def registered_trials(home: Path, tracking_uri: str, symbol: str, timeframe: str) -> int:
    """Every trial the model's registered evidence already counts (registry I/O: retried)."""
    return prior_trials(setup(home, tracking_uri), registered_name(symbol, timeframe))


@task(cache_policy=NO_CACHE, task_run_name="train-{symbol}-{timeframe}")
def train(
    data: tuple[pl.DataFrame, dict[str, Any], pl.DataFrame],
    cfg: TrainingConfig,
    journal_dir: Path,
    symbol: str,
    timeframe: str,
    prior: int = 0,
) -> TrainingResult:
    """Tune every family, combine, walk forward out of sample, refit and evaluate."""
    frame, metadata, candles = data
    return train_dataset(frame, metadata, candles, cfg, journal_dir, prior_trials=prior)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="record-{symbol}-{timeframe}",
)
def record(
    result: TrainingResult,
    cfg: TrainingConfig,
    data: tuple[pl.DataFrame, dict[str, Any], pl.DataFrame],
    home: Path,
    tracking_uri: str,
    symbol: str,
    timeframe: str,
) -> dict[str, Any]:
    """Log runs and artifacts, register the ensemble as ``challenger`` (registry I/O: retried)."""
    registered = record_training(result, cfg, data[1], home, tracking_uri, dataset=data[0])
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        **registered,
        "metrics": summary(result.metrics),
        "families": result.family_metrics,
        "trials": int(result.metrics["trials"]),
    }


# Report names (CLI --json, artifacts) → the metric logged in MLflow (which has them all).
SUMMARY_METRICS = {
    "cv_auc": "cv_roc_auc",
    "oos_auc": "oos_roc_auc",
    "oos_logloss": "oos_log_loss",
    "oos_sharpe": "oos_sharpe_annual",
    "oos_days": "oos_days",
    "psr": "oos_psr",
    "dsr": "oos_dsr",
    "pbo": "pbo",
    "trials_total": "trials_total",
    "trades": "oos_trades",
    "win_rate": "oos_win_rate",
    "profit_factor": "oos_profit_factor",
    "max_drawdown": "oos_max_drawdown",
    "exposure": "oos_exposure",
    "bh_sharpe": "oos_bh_sharpe_annual",
    "cv_sharpe": "cv_sharpe_annual",
}


def summary(metrics: dict[str, float]) -> dict[str, float | None]:
    """The headline metrics under report names; NaN (undefined, e.g. no trades) as None."""
    return {
        name: (None if metrics.get(key) is None or metrics[key] != metrics[key] else metrics[key])
        for name, key in SUMMARY_METRICS.items()
    }
