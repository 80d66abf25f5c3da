"""Recording a training in MLflow: one parent run per training with a nested run per family,
the evidence as artifacts, and the ensemble registered as a new version with alias
``challenger`` (promotion decides about ``champion``)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from models.evidence import (
    EVALUATION_DIGEST,
    VERSION_METRICS,
    evaluation_bytes,
    sha256,
    tag_text,
)
from models.fingerprint import take
from models.tracking import (
    ensure_experiment,
    experiment_name,
    log_ensemble,
    registered_name,
    setup,
)
from models.training import TrainingConfig, TrainingResult

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


def record_training(
    result: TrainingResult,
    cfg: TrainingConfig,
    metadata: dict[str, Any],
    home: Path,
    tracking_uri: str = "",
    *,
    dataset: pl.DataFrame,
) -> dict[str, Any]:
    """Log the training and register the ensemble; returns model name, version and run id.
    ``dataset``: the frame trained on, whose last rows become the model's code fingerprint."""
    symbol, timeframe = metadata["symbol"], metadata["timeframe"]
    client = setup(home, tracking_uri)
    experiment_id = ensure_experiment(client, experiment_name(symbol, timeframe), home)
    name = registered_name(symbol, timeframe)
    trials = int(result.metrics["trials"])
    key = training_key(result, cfg, metadata)
    existing = find_version(client, name, key)
    if existing is not None:  # a retried record after a successful registration
        if not existing.aliases:
            client.set_registered_model_alias(name, CHALLENGER, existing.version)
        return {
            "model_name": name,
            "version": str(existing.version),
            "run_id": existing.run_id,
            "experiment": experiment_name(symbol, timeframe),
            "reused": True,
        }
    tags = {
        "symbol": symbol,
        "timeframe": timeframe,
        "data_first": metadata["candle_first"],
        "data_last": metadata["candle_last"],
        "data_hash": result.data_hash,
        "spec_hash": metadata["spec_hash"],
        "code_version": code_version(),
        "trials": str(trials),
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train {symbol} {timeframe}", tags=tags
    ) as parent:
        mlflow.log_params(
            {f"training.{k}": v for k, v in cfg.__dict__.items() if k != "strategy"}
            | {f"costs.{k}": v for k, v in cfg.strategy.costs.__dict__.items()}
            | {f"risk.{k}": v for k, v in cfg.strategy.risk.model_dump().items()}
            | {f"labels.{k}": v for k, v in metadata["label_spec"].items()}
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
        digest = _log_artifacts(result, metadata)
        mlflow.log_param(EVALUATION_DIGEST, digest)  # a param cannot change once logged
        fingerprint = take(result.ensemble, dataset).to_json()
        info = log_ensemble(result.ensemble, _input_example(result), fingerprint)
        # The version and its tags in one call: a retry never meets a version without its key.
        version_tags = _version_tags(result, metadata, key) | {EVALUATION_DIGEST: digest}
        info = mlflow.register_model(info.model_uri, name, tags=version_tags)
    version = str(info.version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return {
        "model_name": name,
        "version": version,
        "run_id": parent.info.run_id,
        "experiment": experiment_name(symbol, timeframe),
        "reused": False,
    }


def _version_tags(result: TrainingResult, metadata: dict[str, Any], key: str) -> dict[str, str]:
    holdout = result.predictions.filter(pl.col("set") == "oos")["ts"]
    # Display copies of the evaluation (the gate reads the run's evaluation.json, models.evidence).
    tags = {k: tag_text(result.metrics.get(k)) for k in VERSION_METRICS}
    return tags | {
        "spec_hash": metadata["spec_hash"],
        "data_hash": result.data_hash,
        "training_key": key,
        "oos_start": holdout.min().isoformat(),
        "oos_end": holdout.max().isoformat(),
        "data_last": metadata["candle_last"],
    }


def training_key(result: TrainingResult, cfg: TrainingConfig, metadata: dict[str, Any]) -> str:
    """What makes two trainings the same: data, spec, labels, training config and code."""
    parts = [result.data_hash, metadata["spec_hash"], metadata["label_spec"], repr(cfg)]
    text = json.dumps(
        [*parts, code_version()],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def find_version(client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    """The registered version of this exact training, if one exists."""
    versions = client.search_model_versions(f"name='{name}'")  # [] for a new model
    found = [v for v in versions if v.tags.get("training_key") == key]
    return client.get_model_version(name, found[0].version) if found else None


def _input_example(result: TrainingResult) -> Any:
    import pandas as pd

    columns = result.ensemble.feature_columns
    return pd.DataFrame(np.zeros((2, len(columns))), columns=columns)


def _log_artifacts(result: TrainingResult, metadata: dict[str, Any]) -> str:
    """The evidence as artifacts under ``evaluation/``; returns the sha256 of evaluation.json."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "feature_spec.json").write_text(
            json.dumps(
                {"spec_hash": metadata["spec_hash"], "spec": metadata["feature_spec"]}, indent=2
            )
        )
        (folder / "label_spec.json").write_text(json.dumps(metadata["label_spec"], indent=2))
        (folder / "folds.json").write_text(json.dumps(result.folds, indent=2))
        evaluation = {
            "ensemble": result.metrics,
            "families": result.family_metrics,
            "weights": result.ensemble.weights,
            # The out-of-sample daily net returns: what a champion is compared on, hashed too.
            "oos_daily": {
                "day": [d.isoformat() for d in result.oos_backtest.daily["day"].to_list()],
                "ret": result.oos_backtest.daily["ret"].to_list(),
            },
        }
        data = evaluation_bytes(evaluation)
        (folder / "evaluation.json").write_bytes(data)
        result.predictions.write_parquet(folder / "predictions.parquet")
        result.oos_backtest.trades.write_parquet(folder / "oos_trades.parquet")
        _plots(result, folder)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    return sha256(data)
