"""The model-family abstraction: what every family of the zoo (``models.zoo``) provides — its
defaults, search space and estimator, how to fit it many times on one training set, and how to
score a fitted estimator — behind one interface, so that callers never branch on the family. It
knows no concrete estimator type."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import NamedTuple, TypeAlias

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from sklearn.base import BaseEstimator

from core.errors import ConfigError

# A hyper-parameter value: what Optuna suggests and what the families' constructors take.
ParamValue: TypeAlias = float | int | str | bool | None
Params: TypeAlias = dict[str, ParamValue]

# Set by build()'s keyword arguments or by the caller's sample_weight, never through params.
RESERVED_PARAMS = MappingProxyType(
    {
        "random_state": "pass seed= to build()",
        "n_jobs": "pass n_threads= to build()",
        "class_weight": "pass sample_weight=balanced_sample_weight(y) to fit()",
        "scale_pos_weight": "pass sample_weight=balanced_sample_weight(y) to fit()",
    }
)


class Scores(NamedTuple):
    """What live scoring wants of one family for ``X``: P(y = 1) per row, and the per-row feature
    contributions (:meth:`ModelFamily.feature_contributions`; None where the family has none)."""

    probability: np.ndarray
    contributions: np.ndarray | None


@dataclass(eq=False)
class TrainingSet:
    """One training set that is fitted many times with different parameters (a fold of a tuning,
    across its trials). ``derived`` holds what a family derives from it before fitting (its binned
    form), keyed by the settings it depends on, so it is derived once: this object is the cache's
    one owner and it lives as long as the tuning that made it."""

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None = None
    derived: dict[object, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its defaults, its search space, how to build an unfitted estimator and
    how to score a fitted one.

    ``build`` merges params over ``default_params``; names must be parameters of ``estimator_cls``
    (a typo would otherwise be ignored silently by XGBoost/LightGBM). ``suggest`` names each Optuna
    parameter exactly as ``build`` takes it, so ``study.best_params`` can be passed to ``build``.

    The scoring methods take a fitted estimator the family built (:meth:`owns`) and give the numbers
    of the estimator contract, ``predict_proba(X)[:, 1]``. A family overrides one where its library
    has a faster route to the same numbers, so that callers never branch on the family.
    """

    name: str
    estimator_cls: type[BaseEstimator]
    default_params: Mapping[str, ParamValue]
    space: Mapping[str, BaseDistribution]

    def suggest(self, trial: optuna.Trial) -> Params:
        """This family's search space, sampled by ``trial``."""
        return {name: _suggest(trial, name, dist) for name, dist in self.space.items()}

    def build(
        self, params: Mapping[str, ParamValue] | None = None, *, seed: int, n_threads: int
    ) -> BaseEstimator:
        """An unfitted estimator with ``params`` over the defaults, seeded, capped to n_threads."""
        params = dict(params or {})
        self._check_params(params)
        if (
            isinstance(n_threads, bool)
            or not isinstance(n_threads, numbers.Integral)
            or n_threads < 1
        ):
            raise ConfigError(f"n_threads must be an integer ≥ 1, got {n_threads!r}")
        return self.make({**self.default_params, **params}, int(seed), int(n_threads))

    def make(self, params: Params, seed: int, n_threads: int) -> BaseEstimator:
        """The estimator of checked ``params``, seeded and capped to ``n_threads`` its own way."""
        raise NotImplementedError(f"model family {self.name!r} cannot build estimators")

    def fit_predict(
        self,
        data: TrainingSet,
        params: Mapping[str, ParamValue] | None,
        X_test: np.ndarray,
        *,
        seed: int,
        n_threads: int,
    ) -> np.ndarray:
        """P(y = 1) of ``X_test`` by the estimator ``build`` makes, fitted on ``data``: the same
        numbers as ``build(...).fit(data.X, data.y, sample_weight=data.sample_weight)``. A family
        overrides it to reuse what it derived from ``data`` in an earlier call (its binning)."""
        model = self.build(params, seed=seed, n_threads=n_threads)
        model.fit(data.X, data.y, sample_weight=data.sample_weight)
        return self.positive_probability(model, X_test)

    def _check_params(self, params: Mapping[str, ParamValue]) -> None:
        for key in params:
            if key in RESERVED_PARAMS:
                raise ConfigError(
                    f"model family {self.name!r}: params may not set {key!r}; "
                    f"{RESERVED_PARAMS[key]}"
                )
        unknown = sorted(set(params) - self.param_names())
        if unknown:
            raise ConfigError(
                f"model family {self.name!r}: unknown params {unknown}; valid: "
                f"{sorted(self.param_names() - set(RESERVED_PARAMS))}"
            )

    def param_names(self) -> frozenset[str]:
        """Names ``build`` accepts in params (plus the reserved ones, which it refuses)."""
        return _constructor_params(self.estimator_cls) | set(self.default_params) | set(self.space)

    def owns(self, fitted: BaseEstimator) -> bool:
        """Whether ``fitted`` is an estimator of this family (fitted or not)."""
        return isinstance(fitted, self.estimator_cls)

    def positive_probability(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """P(y = 1) per row: ``predict_proba(X)[:, 1]``, the same numbers."""
        return fitted.predict_proba(X)[:, 1]

    def feature_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """Per-row additive contributions to the raw margin (log-odds of class 1): n × (features +
        1), the last column being the bias, so each row sums to the model's margin for that row."""
        raise NotImplementedError(
            f"no per-row feature contributions for {type(fitted).__name__}: the lightgbm, "
            "xgboost and logreg families have them"
        )

    def probability_and_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> Scores:
        """Both scores of ``X`` at once, the same numbers as the two methods."""
        try:
            contributions = self.feature_contributions(fitted, X)
        except NotImplementedError:
            contributions = None
        return Scores(self.positive_probability(fitted, X), contributions)


@cache
def _constructor_params(cls: type) -> frozenset[str]:
    return frozenset(cls().get_params(deep=False))


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> ParamValue:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution for {name!r}: {dist!r}")
