"""Compiled inference: an ensemble's families as plain arrays scored by numpy alone — every tree
of the three boosters in one node table walked level by level for all trees at once, the logistic
regression as its affine map — for the one row live scoring asks about, without the libraries'
per-call checks and thread hand-offs. The probabilities equal ``predict_proba(X)[:, 1]`` to 1e-6
(tests/models/test_compiled.py). A family it cannot compile (categorical splits, another link, an
estimator of no known family) is left out and scored by its library.

Stored beside the ensemble at registration (``COMPILED_ARTIFACT``, an ``.npz`` of arrays: no
pickle, no code); a model registered without one is compiled when it loads.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.preprocessing import StandardScaler

from models.ensemble import Ensemble
from models.zoo import family_of, positive_probability

logger = logging.getLogger(__name__)

COMPILED_ARTIFACT = "artifacts/compiled.npz"  # in the registered model, beside the ensemble
FORMAT = 1
TOLERANCE = 1e-6  # |compiled − library| of a probability, at most
_LEAF = -1


class NotCompilable(ValueError):
    """A fitted estimator this runtime does not reproduce (it stays with its library)."""


@dataclass(frozen=True)
class _Trees:
    """One family's trees: nodes (``feature``, ``threshold``, children) with leaves marked by
    ``left == -1`` and their value in ``value``; ``x <= threshold`` goes left. ``float32``: the
    library compares and sums in single precision (XGBoost), its ``threshold`` then strict (<)."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    base: float
    float32: bool = False


def _hgb(fitted: BaseEstimator) -> _Trees:
    model = fitted.estimator_
    if model.n_trees_per_iteration_ != 1 or type(model._loss).__name__ != "HalfBinomialLoss":
        raise NotCompilable("hgb: only binary log-loss models")
    nodes = [p[0].nodes for p in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise NotCompilable("hgb: categorical splits")
    parts = []
    for n in nodes:
        leaf = n["is_leaf"].astype(bool)
        parts.append(
            (
                n["feature_idx"].astype(np.int64),
                n["num_threshold"].astype(np.float64),
                np.where(leaf, _LEAF, n["left"].astype(np.int64)),
                np.where(leaf, _LEAF, n["right"].astype(np.int64)),
                np.where(leaf, n["value"], 0.0).astype(np.float64),
            )
        )
    return _concat(parts, float(model._baseline_prediction.ravel()[0]))


def _lightgbm(fitted: BaseEstimator) -> _Trees:
    dump = fitted.booster_.dump_model()
    if dump["objective"] != "binary sigmoid:1" or dump.get("average_output"):
        raise NotCompilable(f"lightgbm: objective {dump['objective']!r}")
    if dump["num_tree_per_iteration"] != 1:
        raise NotCompilable("lightgbm: more than one tree per iteration")
    return _concat([_lightgbm_tree(t["tree_structure"]) for t in dump["tree_info"]], 0.0)


def _lightgbm_tree(root: dict) -> tuple[np.ndarray, ...]:
    """One dumped tree as node arrays, depth first (its root first)."""
    feature, threshold, left, right, value = [], [], [], [], []

    def visit(node: dict) -> int:
        i = len(feature)
        feature.append(0)
        threshold.append(0.0)
        left.append(_LEAF)
        right.append(_LEAF)
        value.append(0.0)
        if "leaf_value" in node:
            value[i] = float(node["leaf_value"])
            return i
        if node["decision_type"] != "<=" or node["missing_type"] == "Zero":
            raise NotCompilable("lightgbm: categorical or zero-as-missing splits")
        feature[i], threshold[i] = int(node["split_feature"]), float(node["threshold"])
        left[i] = visit(node["left_child"])
        right[i] = visit(node["right_child"])
        return i

    visit(root)
    return tuple(np.asarray(a) for a in (feature, threshold, left, right, value))


def _xgboost(fitted: BaseEstimator) -> _Trees:
    learner = json.loads(fitted.get_booster().save_raw(raw_format="json"))["learner"]
    booster = learner["gradient_booster"]
    if learner["objective"]["name"] != "binary:logistic" or booster["name"] != "gbtree":
        raise NotCompilable("xgboost: only binary:logistic gbtree models")
    if getattr(fitted, "best_iteration", None) is not None:
        raise NotCompilable("xgboost: early-stopped models predict with a tree subset")
    parts = []
    for tree in booster["model"]["trees"]:
        if any(tree.get("split_type", [])) or int(tree["tree_param"]["size_leaf_vector"]) > 1:
            raise NotCompilable("xgboost: categorical or vector-leaf trees")
        left = np.asarray(tree["left_children"], dtype=np.int64)
        leaf = left == -1
        conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
        parts.append(
            (
                np.asarray(tree["split_indices"], dtype=np.int64),
                conditions.astype(np.float64),
                np.where(leaf, _LEAF, left),
                np.where(leaf, _LEAF, np.asarray(tree["right_children"], dtype=np.int64)),
                np.where(leaf, conditions, np.float32(0)).astype(np.float64),
            )
        )
    score = float(np.float32(json.loads(learner["learner_model_param"]["base_score"])[0]))
    base = float(np.log(np.float32(score) / (np.float32(1) - np.float32(score))))
    return _concat(parts, base, float32=True)


def _concat(parts: list[tuple[np.ndarray, ...]], base: float, float32: bool = False) -> _Trees:
    """Trees' node arrays as one table, children re-indexed into it."""
    sizes = np.array([p[0].size for p in parts], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    feature, threshold, left, right, value = (np.concatenate(a) for a in zip(*parts, strict=True))
    shift = np.repeat(offsets, sizes)
    left = np.where(left == _LEAF, _LEAF, left + shift)
    right = np.where(right == _LEAF, _LEAF, right + shift)
    return _Trees(offsets, feature, threshold, left, right, value, base, float32)


@dataclass(frozen=True)
class _Linear:
    """Standardisation, then a logistic regression: ``expit(((x − mean) / scale) · coef + b)``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float


def _logreg(fitted: BaseEstimator) -> _Linear:
    pipeline = fitted.estimator_
    *steps, (_, model) = pipeline.steps
    if len(steps) != 1 or not isinstance(steps[0][1], StandardScaler) or model.coef_.shape[0] != 1:
        raise NotCompilable("logreg: only a StandardScaler and a binary logistic regression")
    scaler = steps[0][1]
    n = model.coef_.shape[1]
    mean = scaler.mean_ if scaler.with_mean else np.zeros(n)
    scale = scaler.scale_ if scaler.with_std else np.ones(n)
    return _Linear(mean, scale, model.coef_[0].copy(), float(model.intercept_[0]))


# Family name (models.zoo) → how its fitted estimator becomes arrays.
_COMPILERS: dict[str, Callable[[BaseEstimator], _Trees | _Linear]] = {
    "hgb": _hgb,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "logreg": _logreg,
}


class CompiledEnsemble:
    """The compiled families of one ensemble. ``probabilities(X)`` gives P(y = 1) per row for
    each of them (``families``); the others are the library's to score."""

    def __init__(self, trees: dict[str, _Trees], linear: dict[str, _Linear], n_features: int):
        self.trees, self.linear, self.n_features = trees, linear, n_features
        self.families = tuple([*trees, *linear])
        self._table()

    def _table(self) -> None:
        """All trees in one table; a leaf points at itself, so a walk of the deepest tree's
        length ends every tree on its leaf. Single-precision families read the inputs rounded
        to float32 (a second copy of the row, after the first) and compare strictly: for a
        float32-exact x, x < t ⇔ x ≤ the double just below t."""
        features, thresholds, children, values, roots, segments = [], [], [], [], [], []
        offset = 0
        for trees in self.trees.values():
            n = trees.feature.size
            is_leaf = trees.left == _LEAF
            own = np.arange(offset, offset + n)
            feature = trees.feature + (self.n_features if trees.float32 else 0)
            threshold = trees.threshold
            if trees.float32:
                threshold = np.nextafter(threshold, -np.inf)
            features.append(np.where(is_leaf, 0, feature))
            thresholds.append(np.where(is_leaf, np.inf, threshold))  # a leaf "goes left": itself
            left = np.where(is_leaf, own, trees.left + offset)
            right = np.where(is_leaf, own, trees.right + offset)
            children.append(np.column_stack([left, right]))
            values.append(trees.value)
            roots.append(trees.roots + offset)
            segments.append(trees.roots.size)
            offset += n
        empty = not features
        self._feature = np.zeros(0, np.int64) if empty else np.concatenate(features)
        self._threshold = np.zeros(0) if empty else np.concatenate(thresholds)
        self._children = np.zeros(0, np.int64) if empty else np.concatenate(children).ravel()
        self._value = np.zeros(0) if empty else np.concatenate(values)
        self._roots = np.zeros(0, np.int64) if empty else np.concatenate(roots)
        self._bounds = np.r_[0, np.cumsum(segments)].astype(np.int64)
        self._depth = self._max_depth()
        self._float32 = any(t.float32 for t in self.trees.values())

    def _max_depth(self) -> int:
        """Steps from the roots until every walk stands on a leaf (the deepest leaf's depth)."""
        depth, node = 0, np.unique(self._roots)
        while node.size:
            children = np.unique(self._children.reshape(-1, 2)[node].ravel())
            node = children[self._children[2 * children] != children]  # not leaves yet
            depth += 1
        return depth

    def probabilities(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """P(y = 1) of each row of ``X`` (finite values) for every compiled family."""
        X = np.asarray(X, dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        if self._roots.size:
            leaves = self._walk(X)
            for k, (name, trees) in enumerate(self.trees.items()):
                values = leaves[:, self._bounds[k] : self._bounds[k + 1]]
                out[name] = _sigmoid_of_sum(values, trees.base, trees.float32)
        for name, lin in self.linear.items():
            scaled = (X - lin.mean) / lin.scale
            out[name] = expit(scaled @ lin.coef + lin.intercept)
        return out

    def _walk(self, X: np.ndarray) -> np.ndarray:
        """Leaf values of every tree for each row (rows × trees)."""
        inputs = np.hstack([X, X.astype(np.float32).astype(np.float64)]) if self._float32 else X
        node = np.broadcast_to(self._roots, (X.shape[0], self._roots.size)).copy()
        rows = np.arange(X.shape[0])[:, None] * inputs.shape[1]
        flat = inputs.ravel()
        for _ in range(self._depth):
            right = flat[rows + self._feature[node]] > self._threshold[node]
            node = self._children[2 * node + right]
        return self._value[node]

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        for name, t in self.trees.items():
            for field in ("roots", "feature", "threshold", "left", "right", "value"):
                arrays[f"trees/{name}/{field}"] = getattr(t, field)
            arrays[f"trees/{name}/base"] = np.array([t.base, float(t.float32)])
        for name, lin in self.linear.items():
            for field in ("mean", "scale", "coef"):
                arrays[f"linear/{name}/{field}"] = getattr(lin, field)
            arrays[f"linear/{name}/intercept"] = np.array([lin.intercept])
        arrays["meta"] = np.array([FORMAT, self.n_features])
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledEnsemble:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fmt, n_features = (int(v) for v in arrays.pop("meta"))
        if fmt != FORMAT:
            raise NotCompilable(f"compiled format {fmt}, this code reads {FORMAT}")
        trees: dict[str, _Trees] = {}
        linear: dict[str, _Linear] = {}
        names = list(dict.fromkeys(tuple(k.split("/")[:2]) for k in arrays))
        for kind, name in names:
            a = {k.split("/")[2]: v for k, v in arrays.items() if k.startswith(f"{kind}/{name}/")}
            if kind == "trees":
                base, float32 = a.pop("base")
                trees[name] = _Trees(**a, base=float(base), float32=bool(float32))
            else:
                linear[name] = _Linear(a["mean"], a["scale"], a["coef"], float(a["intercept"][0]))
        return cls(trees, linear, n_features)


def _sigmoid_of_sum(values: np.ndarray, base: float, float32: bool) -> np.ndarray:
    """The link of the trees' sum, added up tree after tree from the base as the library does."""
    dtype = np.float32 if float32 else np.float64
    start = np.full((values.shape[0], 1), base, dtype=dtype)
    margin = np.cumsum(np.hstack([start, values.astype(dtype)]), axis=1, dtype=dtype)[:, -1]
    if float32:
        return (np.float32(1) / (np.float32(1) + np.exp(-margin))).astype(np.float64)
    return expit(margin)


def compile_ensemble(ensemble: Ensemble) -> CompiledEnsemble:
    """Every family of ``ensemble`` that can be compiled (possibly none)."""
    trees: dict[str, _Trees] = {}
    linear: dict[str, _Linear] = {}
    for name, fitted in ensemble.models.items():
        compiler = _COMPILERS.get(family_of(fitted).name)
        if compiler is None:
            continue
        try:
            part = compiler(fitted)
        except NotCompilable as exc:
            logger.info("%s stays with its library: %s", name, exc)
            continue
        (trees if isinstance(part, _Trees) else linear)[name] = part
    return CompiledEnsemble(trees, linear, len(ensemble.feature_columns))


def load_compiled(uri: str) -> CompiledEnsemble | None:
    """The compiled form stored with a registered version (``uri``: its download URI); None for
    a version registered without one (or in a format this code does not read)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri}/{COMPILED_ARTIFACT}", dst_path=tmp
            )
            return CompiledEnsemble.from_bytes(Path(path).read_bytes())
        except (MlflowException, OSError, NotCompilable) as exc:
            logger.info("%s: no compiled form read (%s)", uri, exc)
            return None


def disagreement(
    compiled: CompiledEnsemble, X: np.ndarray, expected: Mapping[str, Sequence[float]]
) -> str | None:
    """Where ``compiled`` does not give the ``expected`` probabilities of the rows ``X`` (the
    fingerprint's, recorded by the libraries at training) to ``TOLERANCE``; None: it does."""
    got = compiled.probabilities(X)
    for name, values in got.items():
        if name in expected and not np.allclose(values, expected[name], rtol=0, atol=TOLERANCE):
            worst = float(np.max(np.abs(values - np.asarray(expected[name]))))
            return f"compiled {name} differs from its library by {worst:.2g}"
    return None


def compile_checked(ensemble: Ensemble, X: np.ndarray) -> CompiledEnsemble:
    """:func:`compile_ensemble`, keeping only the families whose compiled probabilities of the
    rows ``X`` (e.g. the dataset's newest, the holdout among them) equal their library's to
    ``TOLERANCE``; a family that does not stays with its library (logged)."""
    compiled = compile_ensemble(ensemble)
    got = compiled.probabilities(X)
    wrong = set()
    for name, values in got.items():
        worst = float(np.max(np.abs(values - positive_probability(ensemble.models[name], X))))
        if worst > TOLERANCE:
            logger.warning("%s: compiled probabilities differ by %.2g; not compiled", name, worst)
            wrong.add(name)
    if not wrong:
        return compiled
    trees = {k: v for k, v in compiled.trees.items() if k not in wrong}
    linear = {k: v for k, v in compiled.linear.items() if k not in wrong}
    return CompiledEnsemble(trees, linear, compiled.n_features)
