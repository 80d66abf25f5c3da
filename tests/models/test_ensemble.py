from __future__ import annotations

import numpy as np
import pytest

from models.ensemble import combine, fit_weights


def test_weights_favour_the_informative_family_and_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    good = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.1, y.size), 0.01, 0.99)
    noise = rng.uniform(0.05, 0.95, y.size)
    weights = fit_weights({"good": good, "noise": noise}, y)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["good"] > 0.9
    assert fit_weights({"good": good, "noise": noise}, y) == weights  # deterministic


def test_single_family_weight_is_one() -> None:
    assert fit_weights({"only": np.array([0.2, 0.8])}, np.array([0, 1])) == {"only": 1.0}


def test_weighted_and_majority_decisions() -> None:
    probas = {
        "a": np.array([0.9, 0.6, 0.2]),
        "b": np.array([0.7, 0.4, 0.3]),
        "c": np.array([0.8, 0.58, 0.9]),
    }
    p, long = combine(probas, {"a": 0.5, "b": 0.25, "c": 0.25}, "weighted", 0.55, 2)
    assert p == pytest.approx([0.825, 0.545, 0.4])
    assert long.tolist() == [True, False, False]
    p, long = combine(probas, {}, "majority", 0.55, 2)
    assert long.tolist() == [True, True, False]  # a and c agree on the second row
    assert p == pytest.approx(np.mean(list(probas.values()), axis=0))
