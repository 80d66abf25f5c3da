"""The registered model's one loader: the pyfunc and the live stage read the ensemble artifact
through ``read_ensemble``, which refuses a file that holds something else."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from core.errors import DataFormatError
from models.ensemble import Ensemble
from models.tracking import CandleflowModel, read_ensemble


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
