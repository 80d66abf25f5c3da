"""MLflow tracking and registry, with everything inside the state directory by default.

Experiments are ``candleflow/<SYMBOL>/<TF>`` (artifacts under ``mlflow/artifacts/``), registered
models ``candleflow.<SYMBOL>.<TF>``. The registered model is a pyfunc that holds the fitted
family models, the ensemble rule and the feature spec, so the live stage can rebuild features
with the model's own spec and score them.

MLflow stores artifact locations as absolute URIs; a state directory that was moved or copied has
them rewritten to itself when it is opened (:func:`relocate`), so a copy never writes into its
original. Runs record their process (pid, host): a killed one is marked FAILED later.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import tempfile
from contextlib import closing
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from core.errors import CandleflowError, DataFormatError
from core.locks import exclusive
from core.processes import alive
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


class StateDirectoryError(CandleflowError):
    """The MLflow state belongs to another state directory (a copied home, a shared database)."""


def tracking_uri(home: Path, configured: str = "") -> str:
    """The configured URI, else SQLite in the state directory (never MLflow's own default)."""
    if configured:
        return configured
    return f"sqlite:///{_database(home)}"


def _database(home: Path) -> Path:
    path = Path(home).resolve() / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
            if not configured_uri:  # the database is the state directory's own
                relocate(client, home)
    return client


# An experiment's artifact location: ``<home>/mlflow/artifacts/<experiment>`` as a file URI.
_LOCATION = re.compile(r"^(?P<home>file://.+?)/mlflow/artifacts/[^/]+/?$")


def _home_of(location: str) -> tuple[str, Path] | None:
    """The state directory an artifact location lies in: its URI prefix and its path."""
    match = _LOCATION.match(location or "")
    if match is None:
        return None
    return match["home"], Path(local_file_uri_to_path(match["home"]))


def relocate(client: MlflowClient, home: Path) -> int:
    """Point the artifact locations of a state directory that was moved or copied at itself.

    MLflow keeps absolute URIs (experiments, runs, logged models, model versions; a relative
    location is resolved against the working directory), so a moved home answered "No such
    artifact" and a copied one wrote its new models into the original. Every location under a
    former path of this home is rewritten in its own database, which must be SQLite in the home.
    Returns the values rewritten (0: the home is where it was)."""
    here = Path(home).resolve()
    experiments = client.search_experiments(
        view_type=ViewType.ALL, filter_string="name LIKE 'candleflow/%'"
    )
    former = {
        found[0]
        for e in experiments
        if (found := _home_of(e.artifact_location)) is not None and found[1] != here
    }
    rewritten = sum(_rewrite(_database(home), old, here.as_uri()) for old in sorted(former))
    if former:
        logger.warning(
            "%s was moved or copied from %s: %d MLflow artifact location(s) now point into it",
            here,
            ", ".join(str(local_file_uri_to_path(old)) for old in sorted(former)),
            rewritten,
        )
    return rewritten


def _rewrite(database: Path, old: str, new: str) -> int:
    """Replace the URI prefix ``old/mlflow/`` by ``new/mlflow/`` in every text column of the
    database (by prefix only: whichever table a later MLflow keeps locations in)."""
    old, new = f"{old}/mlflow/", f"{new}/mlflow/"
    changed = 0
    with closing(sqlite3.connect(database, timeout=60)) as db, db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if not re.search("CHAR|TEXT|CLOB", column[2].upper()):
                    continue
                changed += db.execute(
                    f'UPDATE "{table}" SET "{column[1]}" = ? || substr("{column[1]}", ?)'
                    f' WHERE substr("{column[1]}", 1, ?) = ?',
                    (new, len(old) + 1, len(old), old),
                ).rowcount
    return changed


# MLflow 3's UI opens an experiment without this tag in its GenAI view; this one is for training.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, name: str, home: Path) -> str:
    """The experiment's id, created with its artifact location in the state directory. An
    experiment whose artifacts live in another state directory is refused: writing there would
    change another home (a copy sharing its original's database)."""
    here = Path(home).resolve()
    found = client.get_experiment_by_name(name)
    if found is not None:
        other = _home_of(found.artifact_location)
        if other is not None and other[1] != here:
            raise StateDirectoryError(
                f"experiment {name} keeps its artifacts in {other[1]}, not in this state"
                f" directory {here}: its MLflow database is another home's; use that home"
                " (--home), or give this one its own database (unset mlflow.tracking_uri)"
            )
        if EXPERIMENT_KIND[0] not in found.tags:  # created before experiments said their kind
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return found.experiment_id
    location = here / "mlflow" / "artifacts" / name.replace("/", "_")
    location.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(
        name, artifact_location=location.as_uri(), tags=dict([EXPERIMENT_KIND])
    )


NOTE_TAG = "mlflow.note.content"  # the run's "Description" in the MLflow UI
_NOTE_BREAK = "\n\n---\n\n"  # the decision above it, what the training wrote below


def describe_run(client: MlflowClient, run_id: str, head: str) -> None:
    """Put ``head`` (markdown: the latest decision about the run's model) at the top of a run's
    description, above what its training wrote there. A run deleted since is left as it is (the
    gate's evidence check already says so)."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise
    if run.info.lifecycle_stage == "deleted":
        return
    note = run.data.tags.get(NOTE_TAG, "")
    _, found, training = note.partition(_NOTE_BREAK)
    client.set_tag(run_id, NOTE_TAG, head + _NOTE_BREAK + (training if found else note))


def training_note(head: str, body: str) -> str:
    """A training run's first description: ``head`` (awaiting review) above ``body``."""
    return head + _NOTE_BREAK + body


PID_TAG, HOST_TAG = "candleflow.pid", "candleflow.host"
FAILED_REASON_TAG = "candleflow.failed_reason"


def process_tags() -> dict[str, str]:
    """Run tags naming the process that runs it, for :func:`fail_orphaned_runs`."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the experiment's runs still RUNNING whose process on this host is gone (a
    training killed mid-record), tagged with why; returns their ids. Runs of other hosts, or
    without a recorded process, are left as they are: their process cannot be checked."""
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    failed = []
    for run in running:
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) != host or not pid.isdigit() or alive(int(pid)):
            continue
        reason = f"process {pid} on {host} ended without ending this run (killed)"
        client.set_tag(run.info.run_id, FAILED_REASON_TAG, reason)
        client.set_terminated(run.info.run_id, "FAILED")
        failed.append(run.info.run_id)
    if failed:
        logger.warning(
            "marked %d run(s) of dead processes FAILED: %s", len(failed), ", ".join(failed)
        )
    return failed


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
    ensemble: Ensemble,
    input_example: pd.DataFrame,
    fingerprint: str | None = None,
    compiled: bytes | None = None,
) -> Any:
    """Log the ensemble as a pyfunc in the active run (registration is the caller's), with its
    code fingerprint (``models.fingerprint``, JSON) and its compiled form (``models.compiled``)
    beside it: they travel with the model."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.joblib"
        joblib.dump(ensemble, path)
        artifacts = {"ensemble": str(path)}
        if fingerprint is not None:
            (Path(tmp) / "fingerprint.json").write_text(fingerprint)
            artifacts["fingerprint"] = str(Path(tmp) / "fingerprint.json")
        if compiled is not None:
            (Path(tmp) / "compiled.npz").write_bytes(compiled)
            artifacts["compiled"] = str(Path(tmp) / "compiled.npz")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=CandleflowModel(),
            artifacts=artifacts,
            pip_requirements=PIP_REQUIREMENTS,
            input_example=input_example,
        )
