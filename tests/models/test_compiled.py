"""Compiled inference: every family's compiled probabilities equal its library's to 1e-6 on rows
it was not trained on; the compiled form survives its bytes; a family it cannot compile, or a
compiled form that disagrees with the fingerprint, is scored by its library; registration stores
the compiled form and the live model loads it (or compiles one when it is missing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier

from models.compiled import (
    TOLERANCE,
    CompiledEnsemble,
    compile_checked,
    compile_ensemble,
    disagreement,
    load_compiled,
)
from models.ensemble import Ensemble
from models.fingerprint import take
from models.recording import record_training
from models.tracking import setup
from models.training import train_dataset
from models.tuning import fit
from models.zoo import positive_probability
from tests.models.conftest import Small
from trading.live_models import LiveModel, ModelCache, _compiled

FAST = {
    "logreg": {},
    "hgb": {"max_iter": 40, "min_samples_leaf": 20, "max_leaf_nodes": 31},
    "xgboost": {"n_estimators": 40, "max_depth": 6, "min_child_weight": 1.0},
    "lightgbm": {"n_estimators": 40, "num_leaves": 31, "min_child_samples": 10},
}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, their labels and held-out rows (heavy-tailed, a few repeated values)."""
    rng = np.random.default_rng(7)
    X = rng.standard_t(3, (1400, 12))
    X[:, 3] = np.round(X[:, 3], 1)  # ties at split thresholds
    y = ((X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + rng.normal(0, 1, 1400)) > 0).astype(np.int8)
    return X[:1000], y[:1000], X[1000:]


@pytest.fixture(scope="module")
def ensemble(data: tuple) -> Ensemble:
    X, y, _ = data
    models = {f: fit(f, p, X, y, seed=3, n_threads=1) for f, p in FAST.items()}
    columns = [f"f{i}" for i in range(X.shape[1])]
    return Ensemble(models, {f: 0.25 for f in models}, columns)


def test_every_family_compiles_to_its_librarys_probabilities(ensemble, data) -> None:
    _, _, held_out = data
    compiled = compile_ensemble(ensemble)
    assert set(compiled.families) == set(FAST)
    got = compiled.probabilities(held_out)
    for name, fitted in ensemble.models.items():
        expected = positive_probability(fitted, held_out)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=TOLERANCE, err_msg=name)
        one = compiled.probabilities(held_out[-1:])[name]  # the one row live scores
        np.testing.assert_allclose(one, expected[-1:], rtol=0, atol=TOLERANCE, err_msg=name)


def test_the_compiled_form_reads_back_from_its_bytes(ensemble, data) -> None:
    _, _, held_out = data
    compiled = compile_ensemble(ensemble)
    again = CompiledEnsemble.from_bytes(compiled.to_bytes())
    assert again.families == compiled.families
    before, after = compiled.probabilities(held_out), again.probabilities(held_out)
    for name in compiled.families:
        np.testing.assert_array_equal(after[name], before[name])


def test_a_family_it_cannot_compile_is_scored_by_its_library(ensemble, data) -> None:
    X, y, held_out = data
    models = {**ensemble.models, "dummy": DummyClassifier(strategy="prior").fit(X, y)}
    mixed = Ensemble(models, {f: 0.2 for f in models}, ensemble.feature_columns)
    compiled = compile_ensemble(mixed)
    assert "dummy" not in compiled.families and len(compiled.families) == len(FAST)
    live = LiveModel("m", "1", mixed, None, None, compiled=compiled)  # type: ignore[arg-type]
    probabilities = live.probabilities(held_out[:1])
    assert list(probabilities) == list(models)
    assert probabilities["dummy"] == pytest.approx(float(y.mean()))
    for name, fitted in ensemble.models.items():
        assert probabilities[name] == pytest.approx(positive_probability(fitted, held_out[:1])[0])


def test_a_compiled_form_that_disagrees_is_not_used(ensemble, data) -> None:
    _, _, held_out = data
    compiled = compile_ensemble(ensemble)
    frame = _frame(ensemble, held_out)
    fingerprint = take(ensemble, frame)
    assert _compiled("m v1", ensemble, fingerprint, compiled) is compiled
    trees = compiled.trees["lightgbm"]
    off = dataclasses.replace(trees, value=trees.value + 1e-3 * (trees.value != 0))  # every leaf
    wrong = CompiledEnsemble({**compiled.trees, "lightgbm": off}, compiled.linear, 12)
    problem = disagreement(wrong, np.asarray(fingerprint.features), fingerprint.probabilities)
    assert problem is not None and "lightgbm" in problem
    assert _compiled("m v1", ensemble, fingerprint, wrong) is None
    # and registration keeps only the families that agree with their library
    checked = compile_checked(ensemble, held_out)
    assert set(checked.families) == set(FAST)


def _frame(ensemble: Ensemble, X: np.ndarray):
    import polars as pl

    ts = pl.datetime_range(
        pl.datetime(2024, 1, 1, time_zone="UTC"),
        pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(hours=X.shape[0] - 1),
        "1h",
        eager=True,
    )
    return pl.DataFrame({"ts": ts, **dict(zip(ensemble.feature_columns, X.T, strict=True))})


def test_registration_stores_the_compiled_form_live_loads(small: Small, tmp_path: Path) -> None:
    dataset, candles, cfg = small
    result = train_dataset(dataset, candles, cfg, tmp_path / "journal")
    run = record_training(result, cfg, dataset, tmp_path)
    client: MlflowClient = setup(tmp_path)
    uri = client.get_model_version_download_uri(run.model_name, run.version)
    stored = load_compiled(uri)
    assert stored is not None and set(stored.families) == set(cfg.families)
    live = ModelCache(client).get(run.model_name, "challenger")
    assert live is not None and live.compiled is not None
    X = dataset.frame.tail(50).select(live.ensemble.feature_columns).to_numpy()
    for row in X[-3:]:
        got = live.probabilities(row[None, :])
        for name, fitted in live.ensemble.models.items():
            expected = positive_probability(fitted, row[None, :])[0]
            assert abs(got[name] - expected) <= TOLERANCE
    # a version without the stored form: compiled when it loads
    assert load_compiled(f"{uri}/nowhere") is None
