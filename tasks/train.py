"""Tasks of the training stage: read the dataset, count the trials already registered, train,
record in MLflow."""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.utils.file_utils import local_file_uri_to_path
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.reports import TrainReport
from core.store import CandleStore
from features.dataset import dataset_path, read_dataset
from models.evidence import prior_trials
from models.recording import TrainingRun, record_training, train_report
from models.report import REPORT_ARTIFACT
from models.tracking import registered_name, setup
from models.training import TrainingConfig, TrainingData, TrainingResult, train_dataset


@task(cache_policy=NO_CACHE, task_run_name="read-dataset-{symbol}-{timeframe}")
def read_training_data(home: Path, symbol: str, timeframe: str) -> TrainingData:
    """The dataset and the candles it came from (the backtest's prices)."""
    dataset = read_dataset(dataset_path(home, symbol, timeframe))
    return TrainingData(dataset, CandleStore(home).read(symbol, timeframe))


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
    data: TrainingData,
    cfg: TrainingConfig,
    journal_dir: Path,
    symbol: str,
    timeframe: str,
    prior: int = 0,
) -> TrainingResult:
    """Tune every family, combine, walk forward out of sample, refit and evaluate."""
    return train_dataset(data.dataset, data.candles, cfg, journal_dir, prior_trials=prior)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="record-{symbol}-{timeframe}",
)
def record(
    result: TrainingResult,
    cfg: TrainingConfig,
    data: TrainingData,
    home: Path,
    tracking_uri: str,
    symbol: str,
    timeframe: str,
) -> TrainReport:
    """Log runs and artifacts, register the ensemble as ``challenger`` (registry I/O: retried)."""
    run = record_training(result, cfg, data.dataset, home, tracking_uri)
    if run.report:
        _link_report(run, symbol, timeframe)
    return train_report(run, result, data.dataset.meta)


def _link_report(run: TrainingRun, symbol: str, timeframe: str) -> None:
    """A Prefect artifact pointing at the backtest report the training run holds."""
    path = local_file_uri_to_path(run.report) if run.report.startswith("file:") else run.report
    markdown = (
        f"# Backtest report: {symbol} {timeframe} v{run.version}\n\n"
        f"[{REPORT_ARTIFACT}]({run.report}) of MLflow run `{run.run_id}` (experiment "
        f"`{run.experiment}`): one HTML file that opens offline, at\n\n`{path}`"
    )
    key = re.sub(r"[^a-z0-9-]+", "-", f"backtest-{symbol}-{timeframe}".lower())
    create_markdown_artifact(key=key, markdown=markdown, description="Out-of-sample backtest")
