"""Training one symbol on a small dataset: deterministic, purged, every trial counted."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from core.strategy import Costs
from models.training import train_dataset
from tests.models.conftest import Small


def test_same_data_config_and_seed_give_the_same_metrics(small: Small, tmp_path: Path) -> None:
    dataset, candles, cfg = small
    first = train_dataset(dataset, candles, cfg, tmp_path / "a")
    second = train_dataset(dataset, candles, cfg, tmp_path / "b")  # a fresh journal
    assert first.metrics.keys() == second.metrics.keys()
    for key, value in first.metrics.items():
        assert value == pytest.approx(second.metrics[key], nan_ok=True), key
    assert first.ensemble.weights == second.ensemble.weights


def test_fitting_the_families_in_parallel_changes_nothing(small: Small, tmp_path: Path) -> None:
    """Families tuned, walked forward and refitted side by side (models.parallel) give exactly
    what one after the other gives: same parameters, probabilities, metrics; same study key."""
    dataset, candles, cfg = small
    families = ("logreg", "hgb", "lightgbm")
    alone = dataclasses.replace(cfg, families=families, workers=1)
    side = dataclasses.replace(cfg, families=families, workers=2)
    assert alone.study_key("d") == side.study_key("d")
    first = train_dataset(dataset, candles, alone, tmp_path / "a")
    second = train_dataset(dataset, candles, side, tmp_path / "b")
    assert {f: t.params for f, t in first.tuned.items()} == {
        f: t.params for f, t in second.tuned.items()
    }
    assert list(second.ensemble.models) == list(families)  # the configured order
    assert first.predictions.equals(second.predictions)
    for key, value in first.metrics.items():
        assert value == pytest.approx(second.metrics[key], nan_ok=True, rel=0, abs=0), key


def test_every_trial_counts_and_a_resumed_study_reuses_its_trials(
    small: Small, tmp_path: Path
) -> None:
    dataset, candles, cfg = small
    result = train_dataset(dataset, candles, cfg, tmp_path)
    assert result.metrics["trials"] == 6 == sum(t.trials for t in result.tuned.values())
    again = train_dataset(dataset, candles, cfg, tmp_path)  # same journal: budget spent
    assert again.metrics["trials"] == 6
    assert {f: t.params for f, t in again.tuned.items()} == {
        f: t.params for f, t in result.tuned.items()
    }
    assert again.metrics["trials_total"] == 6  # nothing new was tried
    # A retraining with another objective is a new draw: its trials add to the model's N.
    retrained = train_dataset(dataset, candles, dataclasses.replace(cfg, threshold=0.6), tmp_path)
    assert retrained.metrics["trials"] == 6 and retrained.metrics["trials_total"] == 12


def test_oos_is_after_development_and_rows_are_accounted(small: Small, tmp_path: Path) -> None:
    dataset, candles, cfg = small
    result = train_dataset(dataset, candles, cfg, tmp_path)
    preds = result.predictions
    dev = preds.filter(preds["set"] == "dev")
    oos = preds.filter(preds["set"] == "oos")
    assert dev["ts"].max() < oos["ts"].min()
    # Every event after the development period is predicted out of sample, once.
    assert oos.height == dataset.frame.height - round(dataset.frame.height * cfg.development)
    assert oos["ts"].is_unique().all() and oos["ts"].is_sorted()
    assert (
        dev.height + oos.height <= dataset.frame.height
    )  # the purge drops a few rows at the boundary
    steps = [f for f in result.folds if f.kind == "walk_forward"]
    assert len(steps) == result.metrics["refits"] >= 2
    assert result.metrics["oos_days"] >= (oos["ts"].max() - oos["ts"].min()).days
    assert result.metrics["trials_total"] == result.metrics["trials"]  # a fresh journal
    # Every completed trial's daily development returns feed the PBO.
    assert sum(len(t.trial_returns) for t in result.tuned.values()) >= 2
    assert 0 <= result.metrics["pbo"] <= 1
    assert preds["proba"].is_between(0, 1).all()


def test_a_changed_split_or_objective_never_reuses_a_study(small: Small) -> None:
    cfg = small.cfg
    key = cfg.study_key("data")
    costly = dataclasses.replace(cfg.strategy, costs=Costs(fee_bps=50.0))
    for change in (
        {"development": 0.4},
        {"folds": cfg.folds + 1},
        {"embargo": cfg.embargo * 2},
        {"threshold": 0.6},
        {"refit_every": cfg.refit_every * 2},
        {"strategy": costly},
        {"seed": cfg.seed + 1},
    ):
        assert dataclasses.replace(cfg, **change).study_key("data") != key, change
    assert cfg.study_key("other data") != key
    # The budget alone does not shape the folds or the objective: the study resumes.
    assert dataclasses.replace(cfg, trials=cfg.trials + 5).study_key("data") == key


def test_an_undefined_deflation_is_not_a_free_pass() -> None:
    """With N > 1 trials but fewer than 2 finite trial Sharpes the DSR's variance is unknown:
    NaN (the gate refuses), never 0 (which would deflate nothing)."""
    from models.training import _deflation, _Evidence
    from models.tuning import Tuned

    def evidence(sharpes: list[float], total: int, effective: float = 2.5) -> _Evidence:
        return _Evidence(None, None, None, None, {}, {}, 1, total, effective, sharpes)  # type: ignore[arg-type]

    tuned = {"logreg": Tuned("logreg", {}, 0.5, 3, [0.1], [np.zeros(100)])}
    d = _deflation(evidence([0.1, float("nan")], 7), tuned, 300)
    assert d.n == 7 and math.isnan(d.variance)
    d = _deflation(evidence([0.1, 0.3, 0.2], 7), tuned, 300)
    assert d.variance == pytest.approx(np.var([0.1, 0.3, 0.2], ddof=1) * 100 / 300)
    assert d.effective == 2.5
    assert _deflation(evidence([], 1, 1.0), tuned, 300).n == 3  # at least this training's trials
    # The effective number lies between 1 and N.
    assert _deflation(evidence([0.1, 0.3], 7, 0.2), tuned, 300).effective == 1.0
    assert _deflation(evidence([0.1, 0.3], 7, 9.0), tuned, 300).effective == 7.0
