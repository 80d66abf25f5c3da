"""MLflow tracking and registry, with everything inside the state directory by default.

Experiments are ``candleflow/<SYMBOL>/<TF>`` (artifacts under ``mlflow/artifacts/``), registered
models ``candleflow.<SYMBOL>.<TF>``. The registered model is a pyfunc that holds the fitted
family models, the ensemble rule and the feature spec, so the live stage can rebuild features
with the model's own spec and score them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from core.errors import DataFormatError
from core.locks import exclusive
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe
from models.ensemble import Ensemble

logger = logging.getLogger(__name__)

# What the registered model needs to load, by installed distribution (explicit: inferring costs
# seconds, see STACK.md). xgboost-cpu, not xgboost, which would pull ~470 MB of CUDA libraries.
# Unpickling the model also needs the candleflow package itself (models.tracking, models.ensemble).
PIP_REQUIREMENTS = [
    f"{name}=={metadata.version(name)}"
    for name in (
        "mlflow",
        "scikit-learn",
        "lightgbm",
        "xgboost-cpu",
        "numpy",
        "pandas",
        "joblib",
        "cloudpickle",
    )
]


def experiment_name(symbol: str, timeframe: str) -> str:
    return f"candleflow/{normalize_symbol(symbol)}/{parse_timeframe(timeframe).name}"


def registered_name(symbol: str, timeframe: str) -> str:
    return f"candleflow.{normalize_symbol(symbol)}.{parse_timeframe(timeframe).name}"


def tracking_uri(home: Path, configured: str = "") -> str:
    """The configured URI, else SQLite in the state directory (never MLflow's own default)."""
    if configured:
        return configured
    path = Path(home).resolve() / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def setup(home: Path, configured_uri: str = "") -> MlflowClient:
    os.environ.setdefault("DO_NOT_TRACK", "true")
    uri = tracking_uri(home, configured_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if uri.startswith("sqlite:"):
        # MLflow creates and migrates a new SQLite database on first use; two processes doing it
        # at once (a Dask fan-out) collide on alembic's temporary tables. One at a time.
        with exclusive(Path(home) / "locks" / "mlflow.lock"):
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
    return client


def ensure_experiment(client: MlflowClient, name: str, home: Path) -> str:
    """The experiment's id, created with its artifact location in the state directory."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = Path(home).resolve() / "mlflow" / "artifacts" / name.replace("/", "_")
    location.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location.as_uri())


# Where a logged model keeps its fitted ensemble (the pyfunc's ``ensemble`` artifact).
ENSEMBLE_ARTIFACT = "artifacts/ensemble.joblib"


def read_ensemble(path: str | Path) -> Ensemble:
    """The fitted ensemble in a model's ``ensemble`` artifact: the one loader, used by the pyfunc
    (``load_context``) and by the live stage, which reads the artifact without the pyfunc."""
    ensemble = joblib.load(path)
    if not isinstance(ensemble, Ensemble):
        raise DataFormatError(
            f"{path} holds a {type(ensemble).__name__}, not a candleflow Ensemble: the model was"
            " not logged by candleflow's log_ensemble; train and register it again"
        )
    return ensemble


class CandleflowModel(mlflow.pyfunc.PythonModel):
    """The registered model: features in (the columns of its spec), per-family probabilities,
    the ensemble probability and the long signal out."""

    def load_context(self, context: Any) -> None:
        self.ensemble = read_ensemble(context.artifacts["ensemble"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        missing = [c for c in self.ensemble.feature_columns if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s) {missing[:10]}")
        X = model_input[self.ensemble.feature_columns].to_numpy(dtype=np.float64)
        probas = self.ensemble.family_probabilities(X)
        proba, signal = self.ensemble.combine(probas)
        out = pd.DataFrame({f"proba_{name}": p for name, p in probas.items()})
        out["proba"], out["signal"] = proba, signal
        return out


def log_ensemble(
    ensemble: Ensemble, input_example: pd.DataFrame, fingerprint: str | None = None
) -> Any:
    """Log the ensemble as a pyfunc in the active run (registration is the caller's), with its
    code fingerprint (``models.fingerprint``, JSON) beside it: it travels with the model."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.joblib"
        joblib.dump(ensemble, path)
        artifacts = {"ensemble": str(path)}
        if fingerprint is not None:
            (Path(tmp) / "fingerprint.json").write_text(fingerprint)
            artifacts["fingerprint"] = str(Path(tmp) / "fingerprint.json")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=CandleflowModel(),
            artifacts=artifacts,
            pip_requirements=PIP_REQUIREMENTS,
            input_example=input_example,
        )
