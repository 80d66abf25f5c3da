"""Model zoo: four binary-classifier families behind one interface (``models.family``: fast
defaults, an Optuna search space, an unfitted scikit-learn-compatible estimator, its scores by the
library's fastest route), so CV, tuning, ensembles and live scoring never branch on the family.
Families are config keys: ``logreg``, ``hgb``, ``xgboost``, ``lightgbm``.

The contract of every estimator ``build`` returns (scikit-learn's): the constructor only stores
parameters; ``fit(X, y, sample_weight=None)`` returns self; ``predict_proba(X)[:, 1]`` is P(y = 1).
X is a 2-D float numpy array (convert polars frames at this boundary).

Class imbalance has one way in, for every family:
``fit(X, y, sample_weight=balanced_sample_weight(y))`` (multiply other per-row weights in first).
``class_weight``/``scale_pos_weight`` are refused in params so weights are never applied twice.

Threads: ``n_threads`` caps each fit so symbols trained in parallel do not oversubscribe the cores.
XGBoost and LightGBM take it as ``n_jobs`` (their ``nthread``/``num_threads``). ``hgb`` and
``logreg`` have no such parameter, so they are wrapped in ``ThreadCapped``, which runs fit and
predict under threadpoolctl's OpenMP limit (per calling thread, so safe in a thread pool) and
under :func:`blas_cap` (logreg's Newton-Cholesky is mostly BLAS: X'WX products). OpenBLAS's limit
is process-wide, so the BLAS cap is shared: set when the first concurrent holder enters, lifted
when the last one leaves, never changed while a holder runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import MappingProxyType
from typing import Any

import lightgbm as lgb
import numpy as np
import xgboost as xgb
from numpy.typing import ArrayLike
from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Tags, get_tags
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from core.errors import ConfigError
from models.family import ModelFamily, Params, Scores, TrainingSet

logger = logging.getLogger(__name__)


class UnknownModelFamilyError(ConfigError, ValueError):
    """A model family name that the zoo does not know."""


def balanced_sample_weight(y: np.ndarray) -> np.ndarray:
    """Inverse class frequency per row, scaled to mean 1: every class gets the same total weight.

    Mean 1 keeps weight-scaled settings (LightGBM/XGBoost ``min_child_weight``, the logistic ``C``)
    meaning what they mean unweighted. Same as scikit-learn's ``compute_sample_weight("balanced")``.
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        return np.ones(0)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels.size / (counts.size * counts))[inverse]


class _ThreadCaps:
    """The process's thread caps: OpenMP per calling thread, BLAS shared by every holder.

    The controller finds the loaded libraries once: a fresh scan per call
    (``threadpool_limits``) costs more than scoring one row."""

    def __init__(self) -> None:
        self._controller: ThreadpoolController | None = None
        self._lock = threading.Lock()
        self._holders = 0
        self._original: Any = None  # the limiter that restores the limits found by the first

    def controller(self) -> ThreadpoolController:
        if self._controller is None:
            self._controller = ThreadpoolController()
        return self._controller

    def openmp(self, n_threads: int) -> AbstractContextManager[object]:
        return self.controller().limit(limits=n_threads, user_api="openmp")

    @contextmanager
    def blas(self, n_threads: int) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:  # later holders share it: a holder may be in a BLAS call
                self._original = self.controller().limit(limits=n_threads, user_api="blas")
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._original.restore_original_limits()
                    self._original = None


_THREADS = _ThreadCaps()


def blas_cap(n_threads: int) -> AbstractContextManager[None]:
    """Cap BLAS to ``n_threads`` while the block runs (concurrent holders share the first one's
    cap; the limits found are restored when the last holder leaves). With more BLAS threads than
    free cores, OpenBLAS's spinning workers slow the fit and every other fit on the machine."""
    return _THREADS.blas(n_threads)


class ThreadCapped(ClassifierMixin, BaseEstimator):
    """Fits and predicts ``estimator`` (cloned into ``estimator_``) under an OpenMP cap of
    ``n_threads``, for estimators without a thread parameter. For a Pipeline, ``sample_weight``
    goes to its final step (scikit-learn pipelines do not route it without metadata routing)."""

    def __init__(self, estimator: BaseEstimator, n_threads: int = 1) -> None:
        self.estimator = estimator
        self.n_threads = n_threads

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = get_tags(self.estimator).input_tags.allow_nan
        return tags

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: np.ndarray | None = None
    ) -> ThreadCapped:
        estimator = clone(self.estimator)
        fit_params: dict[str, np.ndarray] = {}
        if sample_weight is not None:
            key = "sample_weight"
            if isinstance(estimator, Pipeline):
                key = f"{estimator.steps[-1][0]}__sample_weight"
            fit_params[key] = sample_weight
        with _THREADS.openmp(self.n_threads), blas_cap(self.n_threads):
            estimator.fit(X, y, **fit_params)
        self.estimator_ = estimator
        self.classes_ = estimator.classes_
        self.n_features_in_ = estimator.n_features_in_
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        with _THREADS.openmp(self.n_threads), blas_cap(self.n_threads):
            return self.estimator_.predict_proba(X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]


class _Logreg(ModelFamily):
    """Standardised features, then a logistic regression, under :class:`ThreadCapped`. Its scores
    are computed step by step as the pipeline itself does, standardising ``X`` once for both: the
    pipeline's own per-call machinery costs more than the arithmetic of one row."""

    def make(self, params: Params, seed: int, n_threads: int) -> BaseEstimator:
        # The solver is deterministic; random_state is stored so a solver change stays seeded.
        logreg = self.estimator_cls(random_state=seed, **params)
        pipeline = Pipeline([("scale", StandardScaler()), ("logreg", logreg)])
        return ThreadCapped(pipeline, n_threads=n_threads)

    def owns(self, fitted: BaseEstimator) -> bool:
        return (
            isinstance(fitted, ThreadCapped)
            and isinstance(fitted.estimator, Pipeline)
            and isinstance(fitted.estimator[-1], self.estimator_cls)
        )

    def feature_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """Coefficient × standardised value, plus the intercept."""
        return _linear_contributions(*_standardised(fitted, X))

    def probability_and_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> Scores:
        model, scaled = _standardised(fitted, X)
        return Scores(model.predict_proba(scaled)[:, 1], _linear_contributions(model, scaled))


def _standardised(fitted: ThreadCapped, X: np.ndarray) -> tuple[LogisticRegression, np.ndarray]:
    """The fitted logistic regression of a logreg estimator, and ``X`` through the steps before."""
    check_is_fitted(fitted)
    pipeline: Pipeline = fitted.estimator_
    scaled = X
    for _, step in pipeline.steps[:-1]:
        if step is not None and step != "passthrough":
            scaled = step.transform(scaled)
    return pipeline[-1], scaled


def _linear_contributions(model: LogisticRegression, scaled: np.ndarray) -> np.ndarray:
    scaled = np.asarray(scaled, dtype=np.float64)
    bias = np.full((scaled.shape[0], 1), model.intercept_[0])
    return np.hstack([scaled * model.coef_[0], bias])


class _Hgb(ModelFamily):
    """scikit-learn's histogram gradient boosting, under :class:`ThreadCapped`. Refits on one
    training set bin it once (weighted binning is most of a weighted fit)."""

    def make(self, params: Params, seed: int, n_threads: int) -> BaseEstimator:
        return ThreadCapped(self.estimator_cls(random_state=seed, **params), n_threads=n_threads)

    def fit_predict(
        self,
        data: TrainingSet,
        params: Params | None,
        X_test: np.ndarray,
        *,
        seed: int,
        n_threads: int,
    ) -> np.ndarray:
        """What :class:`ThreadCapped` does, with the training set binned once per its settings."""
        model = clone(self.build(params, seed=seed, n_threads=n_threads).estimator)
        model._bin_data = _binned_once(model, data)  # shadows the method for this fit only
        weights = {} if data.sample_weight is None else {"sample_weight": data.sample_weight}
        with _THREADS.openmp(n_threads), blas_cap(n_threads):
            model.fit(data.X, data.y, **weights)
            del model._bin_data
            return model.predict_proba(X_test)[:, 1]

    def owns(self, fitted: BaseEstimator) -> bool:
        return isinstance(fitted, ThreadCapped) and isinstance(fitted.estimator, self.estimator_cls)

    def feature_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            "no per-row feature contributions for HistGradientBoosting: scikit-learn has no "
            "TreeSHAP for it. Use the lightgbm or xgboost family to explain predictions, or "
            "sklearn.inspection.permutation_importance for global importance."
        )


class _XGBoost(ModelFamily):
    """XGBoost, threads as ``n_jobs``. Refits on one training set share its quantile matrix."""

    def make(self, params: Params, seed: int, n_threads: int) -> BaseEstimator:
        return self.estimator_cls(random_state=seed, n_jobs=n_threads, **params)

    def fit_predict(
        self,
        data: TrainingSet,
        params: Params | None,
        X_test: np.ndarray,
        *,
        seed: int,
        n_threads: int,
    ) -> np.ndarray:
        """The wrapper's own fit, given the training matrix it built for ``data`` before."""
        model = self.build(params, seed=seed, n_threads=n_threads)
        model._create_dmatrix = _matrix_once(model, data)  # shadows the method for this fit only
        model.fit(data.X, data.y, sample_weight=data.sample_weight)
        del model._create_dmatrix
        return self.positive_probability(model, X_test)

    def feature_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """XGBoost's exact TreeSHAP."""
        booster = fitted.get_booster()
        matrix = xgb.DMatrix(X, feature_names=booster.feature_names, nthread=fitted.n_jobs)
        return booster.predict(matrix, pred_contribs=True)


class _LightGBM(ModelFamily):
    """LightGBM, threads as ``n_jobs``. Scores come from its booster directly: what the
    scikit-learn wrapper calls, after per-call checks that cost more than the trees of the one row
    live scoring predicts."""

    def make(self, params: Params, seed: int, n_threads: int) -> BaseEstimator:
        return self.estimator_cls(random_state=seed, n_jobs=n_threads, **params)

    def positive_probability(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        if (  # where the wrapper would only pass X on to the booster
            getattr(fitted, "n_classes_", 0) == 2
            and not callable(fitted.objective)
            and isinstance(fitted.n_jobs, int)
            and fitted.n_jobs > 0
        ):
            return np.asarray(fitted.booster_.predict(X, num_threads=fitted.n_jobs))
        return super().positive_probability(fitted, X)

    def feature_contributions(self, fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """LightGBM's exact TreeSHAP."""
        return np.asarray(fitted.booster_.predict(X, pred_contrib=True, num_threads=fitted.n_jobs))


def _binned_once(model: HistGradientBoostingClassifier, data: TrainingSet) -> Callable[..., Any]:
    """``model._bin_data`` that bins ``data``'s training rows once per binning setting (bins,
    seed, rows): the thresholds and binned rows of the first fit, as its own binning gives."""
    bin_data = model._bin_data

    def bin_once(X: np.ndarray, sample_weight: np.ndarray | None, is_training_data: bool):
        if not is_training_data:  # validation rows: binned by the training thresholds
            return bin_data(X, sample_weight, is_training_data)
        mapper = model._bin_mapper
        key = ("hgb-bins", mapper.n_bins, mapper.random_state, X.shape, model.do_early_stopping_)
        if key not in data.derived:
            data.derived[key] = (bin_data(X, sample_weight, is_training_data), mapper)
        binned, model._bin_mapper = data.derived[key]
        return binned

    return bin_once


def _matrix_once(model: xgb.XGBClassifier, data: TrainingSet) -> Callable[..., Any]:
    """``model._create_dmatrix`` that builds ``data``'s training matrix (its quantile sketch)
    once per the settings it depends on, and any other matrix as usual."""
    create = model._create_dmatrix

    def create_once(ref: Any, **kwargs: Any) -> Any:
        if ref is not None or kwargs.get("data") is not data.X:
            return create(ref, **kwargs)
        key = (
            "xgboost-matrix",
            model.max_bin,
            model.n_jobs,
            repr(model.missing),
            model.tree_method,
            model.device,
            model.booster,
            model.enable_categorical,
            repr(model.feature_types),
        )
        if key not in data.derived:
            data.derived[key] = create(ref, **kwargs)
        return data.derived[key]

    return create_once


def _log_float(low: float, high: float) -> FloatDistribution:
    return FloatDistribution(low, high, log=True)


def _log_int(low: int, high: int) -> IntDistribution:
    return IntDistribution(low, high, log=True)


# Shared by the three boosters: rounds and learning rate trade off, so both are searched.
# Fewer, larger boosting steps keep a tuning budget near a minute per symbol on 2 cores (a
# 13k × 86 fit: ~1.5 s at 300 rounds, one thread); rounds and rate are searched together.
_ROUNDS = IntDistribution(50, 250, step=25)
_LEARNING_RATE = _log_float(0.02, 0.3)
_L2 = _log_float(1e-3, 10.0)

# The one place that declares families, their defaults and their search spaces. Defaults are for
# noisy market data of ~20k rows × ~80 features: shallow trees, large leaves, row/column subsampling
# (seeded), 300 rounds at 0.05. Every default lies inside its family's search space.
FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(
    {
        "logreg": _Logreg(
            name="logreg",
            estimator_cls=LogisticRegression,
            # Newton-Cholesky: exact second-order steps on ~80 features converge in a few
            # iterations (lbfgs needed hundreds of gradient evaluations: ~5× slower here).
            default_params=MappingProxyType(
                {"C": 0.03, "max_iter": 100, "solver": "newton-cholesky"}
            ),
            # Strong regularisation: market features are noisy and collinear; a large C also
            # needs many L-BFGS iterations on them (seconds per fit, for nothing).
            space=MappingProxyType({"C": _log_float(1e-4, 0.1)}),
        ),
        # scikit-learn 1.9 bins weighted data with one weighted quantile per bin edge in Python:
        # with sample_weight, ~8 of ~9 s per fit at 20k × 80 (upstream fix: scikit-learn#34248).
        "hgb": _Hgb(
            name="hgb",
            estimator_cls=HistGradientBoostingClassifier,
            default_params=MappingProxyType(
                {
                    # "auto" turns early stopping on above 10k rows, on a shuffled holdout:
                    # look-ahead on time series. Rounds are tuned instead.
                    "early_stopping": False,
                    "max_bins": 63,  # coarse bins: noisy features gain nothing from 255
                    "max_iter": 150,
                    "learning_rate": 0.08,
                    "max_leaf_nodes": 15,
                    "min_samples_leaf": 100,
                    "l2_regularization": 1.0,
                    "max_features": 0.8,
                }
            ),
            space=MappingProxyType(
                {
                    "max_iter": _ROUNDS,
                    "learning_rate": _LEARNING_RATE,
                    "max_leaf_nodes": _log_int(4, 31),
                    "min_samples_leaf": _log_int(50, 500),
                    "l2_regularization": _L2,
                    "max_features": FloatDistribution(0.3, 1.0),
                }
            ),
        ),
        "xgboost": _XGBoost(
            name="xgboost",
            estimator_cls=xgb.XGBClassifier,
            default_params=MappingProxyType(
                {
                    "tree_method": "hist",
                    "max_bin": 63,
                    "n_estimators": 150,
                    "learning_rate": 0.08,
                    "max_depth": 4,
                    "min_child_weight": 5.0,
                    "subsample": 0.8,
                    "colsample_bytree": 0.8,
                    "reg_lambda": 1.0,
                }
            ),
            space=MappingProxyType(
                {
                    "n_estimators": _ROUNDS,
                    "learning_rate": _LEARNING_RATE,
                    "max_depth": IntDistribution(2, 6),
                    "min_child_weight": _log_float(1.0, 50.0),
                    "subsample": FloatDistribution(0.5, 1.0),
                    "colsample_bytree": FloatDistribution(0.3, 1.0),
                    "reg_lambda": _L2,
                }
            ),
        ),
        "lightgbm": _LightGBM(
            name="lightgbm",
            estimator_cls=lgb.LGBMClassifier,
            default_params=MappingProxyType(
                {
                    "verbose": -1,
                    # Stable results for a fixed seed and thread count; forcing col-wise also
                    # skips LightGBM's per-fit timing test of row- vs col-wise histograms.
                    "deterministic": True,
                    "force_col_wise": True,
                    "max_bin": 63,
                    "n_estimators": 150,
                    "learning_rate": 0.08,
                    "num_leaves": 15,
                    "min_child_samples": 100,
                    "subsample": 0.8,
                    "subsample_freq": 1,  # bagging is off unless this is > 0
                    "colsample_bytree": 0.8,
                    "reg_lambda": 1.0,
                }
            ),
            space=MappingProxyType(
                {
                    "n_estimators": _ROUNDS,
                    "learning_rate": _LEARNING_RATE,
                    "num_leaves": _log_int(4, 63),
                    "min_child_samples": _log_int(20, 500),
                    "subsample": FloatDistribution(0.5, 1.0),
                    "colsample_bytree": FloatDistribution(0.3, 1.0),
                    "reg_lambda": _L2,
                }
            ),
        ),
    }
)


def get_family(name: str) -> ModelFamily:
    """The family registered under ``name`` (a config key)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownModelFamilyError(
            f"unknown model family {name!r}; valid: {', '.join(sorted(FAMILIES))}"
        ) from None


# For an estimator no family built: the estimator contract only (predict_proba, no contributions).
_ANY_ESTIMATOR = ModelFamily("estimator", BaseEstimator, MappingProxyType({}), MappingProxyType({}))


def family_of(fitted: BaseEstimator) -> ModelFamily:
    """The family that built ``fitted``: the one whose scoring methods apply to it."""
    return next((f for f in FAMILIES.values() if f.owns(fitted)), _ANY_ESTIMATOR)


def positive_probability(fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """P(y = 1) per row: ``predict_proba(X)[:, 1]``, the same numbers, by the family's fastest
    route (:meth:`ModelFamily.positive_probability`)."""
    return family_of(fitted).positive_probability(fitted, X)


def probability_and_contributions(fitted: BaseEstimator, X: np.ndarray) -> Scores:
    """:func:`positive_probability` and :func:`feature_contributions` together (None where the
    family has none), the same numbers: what live scoring wants of each family for one row."""
    return family_of(fitted).probability_and_contributions(fitted, X)


def feature_contributions(fitted: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """Per-row additive contributions to the raw margin (log-odds of class 1): n × (features + 1),
    the last column being the bias, so each row sums to the model's margin for that row.

    Trees: LightGBM's and XGBoost's exact TreeSHAP. logreg: coefficient × standardised value, plus
    the intercept. hgb: not available (scikit-learn has no per-row attribution for it).
    """
    check_is_fitted(fitted)
    return family_of(fitted).feature_contributions(fitted, X)
