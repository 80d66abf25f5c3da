"""Combining the families: weights fitted on out-of-fold probabilities only, weighted or majority
voting, and the fitted ensemble as one object the registry stores and the live stage scores.

* ``weighted``: ``p = Σ w_f · p_f`` with ``w`` on the simplex minimising the out-of-fold log loss
  (softmax-parametrised, L-BFGS from equal weights: deterministic). Long when ``p ≥ threshold``.
* ``majority``: equal weights for ``p``; long when at least ``min_agree`` families have
  ``p_f ≥ threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from pydantic import JsonValue
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss

from models.zoo import positive_probability

Method = Literal["weighted", "majority"]


class Combined(NamedTuple):
    """The combined families per row: the ensemble's probability, and whether it goes long."""

    probability: np.ndarray
    long: np.ndarray


def fit_weights(oof: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Simplex weights minimising the log loss of the weighted out-of-fold probability."""
    names = list(oof)
    if len(names) == 1:
        return {names[0]: 1.0}
    stacked = np.column_stack([np.clip(oof[n], 1e-6, 1 - 1e-6) for n in names])

    def loss(z: np.ndarray) -> float:
        w = np.exp(z - z.max())
        w /= w.sum()
        return log_loss(y, stacked @ w, labels=[0, 1])

    result = minimize(loss, np.zeros(len(names)), method="L-BFGS-B")
    w = np.exp(result.x - result.x.max())
    w /= w.sum()
    return {n: float(v) for n, v in zip(names, w, strict=True)}


@dataclass
class Ensemble:
    """Fitted family models and how to combine them (pickled into the registered model)."""

    models: dict[str, BaseEstimator]  # fitted, by family name
    weights: dict[str, float]
    feature_columns: list[str]
    method: Method = "weighted"
    threshold: float = 0.55
    min_agree: int = 2
    metadata: dict[str, JsonValue] = field(default_factory=dict)  # spec, labels, data range, …

    def family_probabilities(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {name: positive_probability(model, X) for name, model in self.models.items()}

    def combine(self, probas: dict[str, np.ndarray]) -> Combined:
        """The ensemble's probability and long signal from the families' probabilities."""
        return combine(probas, self.weights, self.method, self.threshold, self.min_agree)


def combine(
    probas: dict[str, np.ndarray],
    weights: dict[str, float],
    method: Method,
    threshold: float,
    min_agree: int,
) -> Combined:
    names = list(probas)
    if method == "weighted":
        w = np.array([weights[n] for n in names])
        p = np.column_stack([probas[n] for n in names]) @ (w / w.sum())
        return Combined(p, p >= threshold)
    p = np.mean([probas[n] for n in names], axis=0)
    votes = np.sum([probas[n] >= threshold for n in names], axis=0)
    return Combined(p, votes >= min(min_agree, len(names)))
