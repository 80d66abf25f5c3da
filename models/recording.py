"""Recording a training in MLflow: one parent run per training with a nested run per family,
the evidence as artifacts, and the ensemble registered as a new version with alias
``challenger`` (promotion decides about ``champion``)."""

from __future__ import annotations

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
        return "unknown"
    return out.stdout.strip() or "unknown"


def _plots(result: TrainingResult, folder: Path) -> None:
    daily = result.holdout_backtest.daily
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(daily["day"].to_list(), np.cumprod(1 + daily["ret"].to_numpy()), label="strategy")
    ax.plot(
        daily["day"].to_list(), np.cumprod(1 + daily["bh_ret"].to_numpy()), label="buy and hold"
    )
    ax.set_title("Holdout equity, net of costs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "equity_holdout.png", dpi=90)
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
) -> dict[str, Any]:
    """Log the training and register the ensemble; returns model name, version and run id."""
    symbol, timeframe = metadata["symbol"], metadata["timeframe"]
    client = setup(home, tracking_uri)
    experiment_id = ensure_experiment(client, experiment_name(symbol, timeframe), home)
    name = registered_name(symbol, timeframe)
    trials = int(result.metrics["trials"])
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
            {f"training.{k}": v for k, v in cfg.__dict__.items() if k != "costs"}
            | {f"costs.{k}": v for k, v in cfg.costs.__dict__.items()}
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
        _log_artifacts(result, metadata)
        info = log_ensemble(result.ensemble, _input_example(result), name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key in (
        "holdout_roc_auc",
        "holdout_sharpe_annual",
        "holdout_psr",
        "holdout_dsr",
        "holdout_trades",
        "trials",
    ):
        value = result.metrics.get(key)
        client.set_model_version_tag(name, version, key, "nan" if value is None else f"{value:.6g}")
    client.set_model_version_tag(name, version, "spec_hash", metadata["spec_hash"])
    client.set_model_version_tag(name, version, "data_hash", result.data_hash)
    return {
        "model_name": name,
        "version": version,
        "run_id": parent.info.run_id,
        "experiment": experiment_name(symbol, timeframe),
    }


def _input_example(result: TrainingResult) -> Any:
    import pandas as pd

    columns = result.ensemble.feature_columns
    return pd.DataFrame(np.zeros((2, len(columns))), columns=columns)


def _log_artifacts(result: TrainingResult, metadata: dict[str, Any]) -> None:
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
        }
        (folder / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=str))
        result.predictions.write_parquet(folder / "predictions.parquet")
        result.holdout_backtest.trades.write_parquet(folder / "holdout_trades.parquet")
        _plots(result, folder)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
