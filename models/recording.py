"""Recording a training in MLflow: one parent run per training with a nested run per family,
the evidence as artifacts, and the ensemble registered as a new version with alias
``challenger`` (promotion decides about ``champion``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from core.reports import TrainReport
from features.dataset import Dataset, DatasetMeta
from models.compiled import compile_checked
from models.ensemble import Ensemble
from models.evidence import (
    EVALUATION_DIGEST,
    VERSION_METRICS,
    evaluation_bytes,
    sha256,
    tag_text,
)
from models.fingerprint import take
from models.report import REPORT_ARTIFACT, oos_record, record_of, render
from models.tracking import (
    NOTE_TAG,
    ensure_experiment,
    experiment_name,
    fail_orphaned_runs,
    log_ensemble,
    process_tags,
    registered_name,
    setup,
    training_note,
)
from models.training import TrainingConfig, TrainingResult

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)
CHALLENGER = "challenger"


def code_version() -> str:
    """The git commit of the code, when it runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return _package_version()
    return out.stdout.strip() or _package_version()


def _package_version() -> str:
    """Outside a checkout (an installed package): the package version."""
    from importlib import metadata

    try:
        return "candleflow-" + metadata.version("candleflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plots(result: TrainingResult, folder: Path) -> None:
    daily = result.oos_backtest.daily
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(daily["day"].to_list(), np.cumprod(1 + daily["ret"].to_numpy()), label="strategy")
    ax.plot(
        daily["day"].to_list(), np.cumprod(1 + daily["bh_ret"].to_numpy()), label="buy and hold"
    )
    ax.set_title("Holdout equity, net of costs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "equity_oos.png", dpi=90)
    plt.close(fig)
    importances = _importances(result)
    if importances:
        top = sorted(importances.items(), key=lambda kv: kv[1])[-25:]
        fig, ax = plt.subplots(figsize=(7, 7))
        ax.barh([k for k, _ in top], [v for _, v in top])
        ax.set_title("Feature importance (tree families, normalised, weighted by ensemble)")
        fig.tight_layout()
        fig.savefig(folder / "feature_importance.png", dpi=90)
        plt.close(fig)


def _importances(result: TrainingResult) -> dict[str, float]:
    total = np.zeros(len(result.ensemble.feature_columns))
    for name, model in result.ensemble.models.items():
        values = getattr(model, "feature_importances_", None)
        if values is not None and np.sum(values) > 0:
            total += result.ensemble.weights[name] * np.asarray(values) / np.sum(values)
    return (
        dict(zip(result.ensemble.feature_columns, total.tolist(), strict=True))
        if total.any()
        else {}
    )


def _metrics(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}  # NaN: undefined, not logged


@dataclass(frozen=True)
class TrainingRun:
    """A training as recorded: the registered version, its MLflow run and experiment."""

    model_name: str
    version: str
    run_id: str
    experiment: str
    reused: bool  # this exact training was registered before: that version, not a new one
    report: str = ""  # the backtest report's artifact URI ("": a training recorded without one)


def record_training(
    result: TrainingResult,
    cfg: TrainingConfig,
    dataset: Dataset,
    home: Path,
    tracking_uri: str = "",
) -> TrainingRun:
    """Log the training and register the ensemble as ``challenger``. The dataset's last rows
    become the model's code fingerprint."""
    meta = dataset.meta
    client = setup(home, tracking_uri)
    experiment = experiment_name(meta.symbol, meta.timeframe)
    name = registered_name(meta.symbol, meta.timeframe)
    key = training_key(result, cfg, meta)
    experiment_id = ensure_experiment(client, experiment, home)
    fail_orphaned_runs(client, experiment_id)  # runs a killed recording left RUNNING
    existing = find_version(client, name, key)
    if existing is not None:  # a retried record after a successful registration
        if not existing.aliases:
            client.set_registered_model_alias(name, CHALLENGER, existing.version)
        report = _report_uri(client, existing.run_id)
        return TrainingRun(name, str(existing.version), existing.run_id, experiment, True, report)
    tags = {
        "symbol": meta.symbol,
        "timeframe": meta.timeframe,
        "data_first": meta.candle_first.isoformat(),
        "data_last": meta.candle_last.isoformat(),
        "data_hash": result.data_hash,
        "spec_hash": meta.spec_hash,
        "code_version": code_version(),
        "trials": str(int(result.metrics["trials"])),
    } | process_tags()
    # The run starts when the training did (its measured stages), so its duration is the
    # training's; named with its version once registered.
    started = time.time() - sum(result.seconds.values())
    day = datetime.fromtimestamp(started, UTC).date().isoformat()
    run = client.create_run(
        experiment_id,
        start_time=int(started * 1000),
        tags=tags,
        run_name=f"{meta.symbol} {meta.timeframe} {day}",
    )
    with mlflow.start_run(run_id=run.info.run_id) as parent:
        _log_runs(result, cfg, meta, experiment_id, tags)
        digest, evaluation = _log_artifacts(result, meta)
        mlflow.log_param(EVALUATION_DIGEST, digest)  # a param cannot change once logged
        fingerprint = take(result.ensemble, dataset.frame).to_json()
        compiled = _compiled(result.ensemble, dataset.frame)
        info = log_ensemble(result.ensemble, _input_example(result), fingerprint, compiled)
        # The version and its tags in one call: a retry never meets a version without its key.
        version_tags = _version_tags(result, meta, key) | {EVALUATION_DIGEST: digest}
        mv = _register_quietly(info.model_uri, name, version_tags)
        version = str(mv.version)
        client.update_run(run.info.run_id, name=f"{meta.symbol} {meta.timeframe} v{version} {day}")
        mlflow.set_tag(NOTE_TAG, _note(result, meta, version, day))
        # The report from the evaluation as hashed (what the gate will read), not from `result`.
        record = record_of(
            json.loads(evaluation),
            client.get_model_version(name, version),
            symbol=meta.symbol,
            timeframe=meta.timeframe,
            reviewed=False,
        )
        mlflow.log_text(render([record], title=f"Backtest report: {record.title}"), REPORT_ARTIFACT)
    client.set_registered_model_alias(name, CHALLENGER, version)
    report = f"{parent.info.artifact_uri}/{REPORT_ARTIFACT}"
    return TrainingRun(name, version, parent.info.run_id, experiment, False, report)


def _report_uri(client: MlflowClient, run_id: str) -> str:
    """The URI of the run's backtest report ("" when it was recorded without one)."""
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    uri = client.get_run(run_id).info.artifact_uri
    return f"{uri}/{REPORT_ARTIFACT}" if REPORT_ARTIFACT in logged else ""


def _note(result: TrainingResult, meta: DatasetMeta, version: str, day: str) -> str:
    """The run's description until the gate reviews it (the decision then heads it)."""
    m = {k: result.metrics.get(v, math.nan) for k, v in SUMMARY_METRICS.items()}
    body = (
        f"{meta.symbol} {meta.timeframe} v{version}, trained {day} on the candles "
        f"{meta.candle_first:%Y-%m-%d} → {meta.candle_last:%Y-%m-%d}. Out of sample "
        f"(walk-forward, {m['oos_days']:.0f} days, net of costs): Sharpe {m['oos_sharpe']:.2f} "
        f"(buy-and-hold {m['bh_sharpe']:.2f}), DSR {m['dsr']:.3f} (N = {m['trials_total']:.0f} "
        f"trials ever, {m['trials_effective']:.1f} independent), PBO {m['pbo']:.2f}, "
        f"AUC {m['oos_auc']:.3f}, {m['trades']:.0f} trades. "
        f"Backtest report: artifact `{REPORT_ARTIFACT}`."
    )
    return training_note("**Not reviewed yet by the promotion gate.**", body)


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
    "trials_effective": "trials_effective",
    "trades": "oos_trades",
    "win_rate": "oos_win_rate",
    "profit_factor": "oos_profit_factor",
    "max_drawdown": "oos_max_drawdown",
    "exposure": "oos_exposure",
    "bh_sharpe": "oos_bh_sharpe_annual",
    "cv_sharpe": "cv_sharpe_annual",
}


def train_report(run: TrainingRun, result: TrainingResult, meta: DatasetMeta) -> TrainReport:
    """The training's report row: the version and its headline metrics under report names
    (NaN, undefined, e.g. without trades, as None)."""
    m = result.metrics
    return TrainReport(
        symbol=meta.symbol,
        timeframe=meta.timeframe,
        model_name=run.model_name,
        version=run.version,
        run_id=run.run_id,
        experiment=run.experiment,
        reused=run.reused,
        metrics={
            name: None if m.get(key) is None or math.isnan(m[key]) else m[key]
            for name, key in SUMMARY_METRICS.items()
        },
        families=result.family_metrics,
        trials=int(m["trials"]),
    )


def _log_runs(
    result: TrainingResult,
    cfg: TrainingConfig,
    meta: DatasetMeta,
    experiment_id: str,
    tags: dict[str, str],
) -> None:
    """The parameters and metrics of the (active) parent run, and a nested run per family."""
    mlflow.log_params(
        {f"training.{k}": v for k, v in cfg.__dict__.items() if k != "strategy"}
        | {f"costs.{k}": v for k, v in cfg.strategy.costs.__dict__.items()}
        | {f"risk.{k}": v for k, v in cfg.strategy.risk.model_dump().items()}
        | {f"labels.{k}": v for k, v in meta.label_spec.model_dump(mode="json").items()}
    )
    mlflow.log_metrics(_metrics(result.metrics))
    for family, tuned in result.tuned.items():
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=family,
            nested=True,
            tags=tags | {"family": family},
        ):
            mlflow.log_params(tuned.params)
            mlflow.log_metrics(_metrics(result.family_metrics[family]))


def _version_tags(result: TrainingResult, meta: DatasetMeta, key: str) -> dict[str, str]:
    holdout = result.predictions.filter(pl.col("set") == "oos")["ts"]
    # Display copies of the evaluation (the gate reads the run's evaluation.json, models.evidence).
    tags = {k: tag_text(result.metrics.get(k)) for k in VERSION_METRICS}
    return tags | {
        "spec_hash": meta.spec_hash,
        "data_hash": result.data_hash,
        "training_key": key,
        "oos_start": holdout.min().isoformat(),
        "oos_end": holdout.max().isoformat(),
        "data_last": meta.candle_last.isoformat(),
    }


def training_key(result: TrainingResult, cfg: TrainingConfig, meta: DatasetMeta) -> str:
    """What makes two trainings the same: data, spec, labels, training config and code."""
    label_spec = meta.label_spec.model_dump(mode="json")
    parts = [result.data_hash, meta.spec_hash, label_spec, repr(cfg)]
    text = json.dumps([*parts, code_version()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def find_version(client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    """The registered version of this exact training, if one exists."""
    versions = client.search_model_versions(f"name='{name}'")  # [] for a new model
    found = [v for v in versions if v.tags.get("training_key") == key]
    return client.get_model_version(name, found[0].version) if found else None


def _compiled(ensemble: Ensemble, frame: pl.DataFrame, rows: int = 2000) -> bytes:
    """The ensemble's compiled form (what live scores with), checked against the libraries on
    the dataset's newest rows (the holdout's among them)."""
    X = frame.tail(rows).select(ensemble.feature_columns).to_numpy().astype(np.float64)
    return compile_checked(ensemble, X).to_bytes()


def _input_example(result: TrainingResult) -> pd.DataFrame:
    import pandas as pd

    columns = result.ensemble.feature_columns
    return pd.DataFrame(np.zeros((2, len(columns))), columns=columns)


def _log_artifacts(result: TrainingResult, meta: DatasetMeta) -> tuple[str, bytes]:
    """The evidence as artifacts under ``evaluation/``; returns the sha256 of evaluation.json
    and its bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = json.loads(meta.feature_spec.canonical_json())
        (folder / "feature_spec.json").write_text(
            json.dumps({"spec_hash": meta.spec_hash, "spec": spec}, indent=2)
        )
        (folder / "label_spec.json").write_text(meta.label_spec.model_dump_json(indent=2))
        folds = [asdict(f) for f in result.folds]
        (folder / "folds.json").write_text(json.dumps(folds, indent=2))
        evaluation = {
            "ensemble": result.metrics,
            "families": result.family_metrics,
            "weights": result.ensemble.weights,
            # The out-of-sample daily net returns (what a champion is compared on) and trades
            # (the backtest report), hashed too.
            **oos_record(result.oos_backtest),
        }
        data = evaluation_bytes(evaluation)
        (folder / "evaluation.json").write_bytes(data)
        result.predictions.write_parquet(folder / "predictions.parquet")
        result.oos_backtest.trades.write_parquet(folder / "oos_trades.parquet")
        _plots(result, folder)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    return sha256(data), data


def _register_quietly(model_uri: str, name: str, tags: dict[str, str]) -> Any:
    """``mlflow.register_model``, whose "Successfully registered model …" lines it prints straight
    to stderr go to this module's log instead (the log file, not the terminal)."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        version = mlflow.register_model(model_uri, name, tags=tags)
    for line in captured.getvalue().splitlines():
        logger.info("%s", line)
    return version
