"""The registered model's one loader (the pyfunc and the live stage read the ensemble artifact
through ``read_ensemble``, which refuses a file that holds something else); runs of killed
processes marked FAILED; a moved or copied state directory's artifact locations."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import joblib
import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from core.errors import DataFormatError
from models.ensemble import Ensemble
from models.tracking import (
    FAILED_REASON_TAG,
    HOST_TAG,
    PID_TAG,
    CandleflowModel,
    StateDirectoryError,
    ensure_experiment,
    fail_orphaned_runs,
    read_ensemble,
    relocate,
    setup,
    tracking_uri,
)


def _ensemble() -> Ensemble:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), np.arange(40) % 2
    model = LogisticRegression().fit(X, y)
    return Ensemble({"logreg": model}, {"logreg": 1.0}, ["a", "b"], min_agree=1)


def test_the_pyfunc_loads_through_read_ensemble(tmp_path: Path) -> None:
    path = tmp_path / "ensemble.joblib"
    joblib.dump(_ensemble(), path)
    direct = read_ensemble(path)
    served = CandleflowModel()
    served.load_context(SimpleNamespace(artifacts={"ensemble": str(path)}))
    X = np.random.default_rng(1).normal(size=(3, 2))
    assert served.ensemble.feature_columns == direct.feature_columns == ["a", "b"]
    np.testing.assert_array_equal(
        served.ensemble.family_probabilities(X)["logreg"], direct.family_probabilities(X)["logreg"]
    )


def test_an_artifact_holding_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ensemble.joblib"
    joblib.dump({"not": "an ensemble"}, path)
    with pytest.raises(DataFormatError, match="holds a dict, not a candleflow Ensemble"):
        read_ensemble(path)
    with pytest.raises(DataFormatError):
        CandleflowModel().load_context(SimpleNamespace(artifacts={"ensemble": str(path)}))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_running_runs_of_dead_processes_on_this_host_are_marked_failed(tmp_path: Path) -> None:
    client = setup(tmp_path)
    experiment = ensure_experiment(client, "candleflow/BTCUSD/1h", tmp_path)
    host, dead = socket.gethostname(), str(_dead_pid())
    runs = {
        name: client.create_run(experiment, tags=tags, run_name=name).info.run_id
        for name, tags in {
            "killed": {PID_TAG: dead, HOST_TAG: host},
            "alive": {PID_TAG: str(os.getpid()), HOST_TAG: host},
            "elsewhere": {PID_TAG: dead, HOST_TAG: host + "-other"},
            "unrecorded": {},
        }.items()
    }
    finished = client.create_run(experiment, tags={PID_TAG: dead, HOST_TAG: host}).info.run_id
    client.set_terminated(finished, "FINISHED")

    assert fail_orphaned_runs(client, experiment) == [runs["killed"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {
        "killed": "FAILED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "unrecorded": "RUNNING",
    }
    reason = client.get_run(runs["killed"]).data.tags[FAILED_REASON_TAG]
    assert f"process {dead} on {host}" in reason
    assert client.get_run(finished).info.status == "FINISHED"
    assert fail_orphaned_runs(client, experiment) == []


def _home_with_a_run(home: Path) -> str:
    """A home whose experiment has a run with one artifact; the run's id."""
    client = setup(home)
    experiment = ensure_experiment(client, "candleflow/BTCUSD/1h", home)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_text("hello", "note.txt")
    return run.info.run_id


def test_a_copied_home_points_its_artifacts_at_itself(tmp_path: Path) -> None:
    run_id = _home_with_a_run(tmp_path / "A")
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    original = (tmp_path / "A" / "mlflow" / "mlflow.db").read_bytes()

    client = setup(tmp_path / "B")
    b = (tmp_path / "B").resolve()
    assert client.get_run(run_id).info.artifact_uri.startswith(b.as_uri() + "/mlflow/artifacts/")
    location = client.get_experiment_by_name("candleflow/BTCUSD/1h").artifact_location
    assert location.startswith(b.as_uri() + "/")
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/note.txt") == "hello"
    with sqlite3.connect(tmp_path / "B" / "mlflow" / "mlflow.db") as db:
        dump = "\n".join(db.iterdump())
    assert str((tmp_path / "A").resolve()) + "/" not in dump  # nothing still points at A
    assert (tmp_path / "A" / "mlflow" / "mlflow.db").read_bytes() == original
    assert relocate(client, tmp_path / "B") == 0  # done once


def test_an_experiment_of_another_home_is_refused(tmp_path: Path) -> None:
    _home_with_a_run(tmp_path / "A")
    shared = tracking_uri(tmp_path / "A")  # B configured to use A's database
    client = setup(tmp_path / "B", shared)
    with pytest.raises(StateDirectoryError) as refused:
        ensure_experiment(client, "candleflow/BTCUSD/1h", tmp_path / "B")
    message = str(refused.value)
    assert str((tmp_path / "A").resolve()) in message and str((tmp_path / "B").resolve()) in message
