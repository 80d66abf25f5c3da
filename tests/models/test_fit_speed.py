"""What makes training cheap without changing it: a family's repeated fits on one training set
give the numbers of a fresh fit while deriving its binning once, BLAS is capped while fits run
and restored after, and the pruner can stop a trial within the default budget of 4."""

from __future__ import annotations

import threading

import numpy as np
import optuna
import pytest
from threadpoolctl import threadpool_info

from models.family import TrainingSet
from models.tuning import pruner
from models.zoo import FAMILIES, ThreadCapped, balanced_sample_weight, blas_cap, get_family

# Families that bin their training set before fitting, and so keep that binning for reuse.
BINNING = {"hgb", "xgboost"}


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] + rng.normal(size=n) > 0.6).astype(np.int8)  # imbalanced: ~30 % positive
    return X, y


def _two_params(name: str) -> list[dict]:
    """Two points of the family's search space (a second trial's parameters)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    return [get_family(name).suggest(study.ask()) for _ in range(2)]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_repeated_fits_on_a_training_set_equal_fresh_fits(name: str, weighted: bool) -> None:
    X, y = _data(400, seed=1)
    X_train, y_train, X_test = X[:300], y[:300], X[300:]
    weight = balanced_sample_weight(y_train) if weighted else None
    family = get_family(name)
    data = TrainingSet(X_train, y_train, weight)
    for params in _two_params(name):
        fresh = family.build(params, seed=5, n_threads=1)
        fresh.fit(X_train, y_train, sample_weight=weight)
        reused = family.fit_predict(data, params, X_test, seed=5, n_threads=1)
        np.testing.assert_array_equal(reused, fresh.predict_proba(X_test)[:, 1])
    # Binned once for both parameter sets (the same binning settings), kept by the set itself.
    assert len(data.derived) == (1 if name in BINNING else 0)


def test_a_changed_binning_setting_bins_again() -> None:
    X, y = _data(300, seed=2)
    data = TrainingSet(X[:200], y[:200])
    for max_bin in (31, 63, 31):
        fresh = get_family("xgboost").build({"max_bin": max_bin}, seed=0, n_threads=1)
        fresh.fit(X[:200], y[:200])
        reused = get_family("xgboost").fit_predict(
            data, {"max_bin": max_bin}, X[200:], seed=0, n_threads=1
        )
        np.testing.assert_array_equal(reused, fresh.predict_proba(X[200:])[:, 1])
    assert len(data.derived) == 2


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_cap_is_shared_by_concurrent_holders_and_restored_by_the_last() -> None:
    """Two trainings in a thread pool (the flow's fan-out): the first sets the cap, the second
    still runs under it after the first left, and lifts it when it leaves."""
    before = _blas_threads()
    first_in, first_out, second_in, second_may_leave = (threading.Event() for _ in range(4))
    seen: dict[str, set[int]] = {}

    def first() -> None:
        with blas_cap(1):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with blas_cap(1):
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = _blas_threads()
            second_may_leave.wait(5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_out.wait(5)
    second_may_leave.set()
    for thread in threads:
        thread.join(5)
    assert seen["after the first left"] == {1}
    assert _blas_threads() == before


class _BlasSpy:
    """An estimator that records the BLAS threads it ran under."""

    def get_params(self, deep: bool = True) -> dict:
        return {}

    def set_params(self, **params: object) -> _BlasSpy:
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> _BlasSpy:
        self.classes_, self.n_features_in_ = np.unique(y), X.shape[1]
        self.seen_ = _blas_threads()
        return self


def test_thread_capped_fits_under_the_blas_cap() -> None:
    if not _blas_threads():
        pytest.skip("no BLAS library loaded")
    X, y = _data(50, seed=0)
    fitted = ThreadCapped(_BlasSpy(), n_threads=1).fit(X, y)
    assert fitted.estimator_.seen_ == {1}


def test_the_pruner_can_stop_the_fourth_of_four_trials() -> None:
    study = optuna.create_study(direction="maximize", pruner=pruner())
    aucs = [0.60, 0.61, 0.62, 0.50]  # the 4th is worse at every fold

    def objective(trial: optuna.Trial) -> float:
        for fold in range(4):
            trial.report(aucs[trial.number], fold)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return aucs[trial.number]

    study.optimize(objective, n_trials=4)
    states = [t.state for t in study.trials]
    assert states[:3] == [optuna.trial.TrialState.COMPLETE] * 3
    assert states[3] == optuna.trial.TrialState.PRUNED
    assert max(study.trials[3].intermediate_values) == 1  # stopped after its second fold
