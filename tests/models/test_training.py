"""Training one symbol on a small dataset: deterministic, purged, every trial counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.config import load_settings
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.training import TrainingConfig, train_dataset
from tests.features.test_features import market


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    settings = load_settings()
    candles = market("BTCUSD", days=150)
    store = CandleStore(tmp_path_factory.mktemp("store"))
    store.upsert("BTCUSD", "1h", candles)
    inputs = load_inputs(store, "BTCUSD", "1h", settings.features)
    frame, meta = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    cfg = dataclasses.replace(
        TrainingConfig.from_settings(settings, "BTCUSD", "1h"),
        families=("logreg", "lightgbm"),
        folds=3,
        trials=3,
    )
    return frame, meta, inputs.candles, cfg


def test_same_data_config_and_seed_give_the_same_metrics(small: tuple, tmp_path: Path) -> None:
    frame, meta, candles, cfg = small
    first = train_dataset(frame, meta, candles, cfg, tmp_path / "a")
    second = train_dataset(frame, meta, candles, cfg, tmp_path / "b")  # a fresh journal
    assert first.metrics.keys() == second.metrics.keys()
    for key, value in first.metrics.items():
        assert value == pytest.approx(second.metrics[key], nan_ok=True), key
    assert first.ensemble.weights == second.ensemble.weights


def test_every_trial_counts_and_a_resumed_study_reuses_its_trials(
    small: tuple, tmp_path: Path
) -> None:
    frame, meta, candles, cfg = small
    result = train_dataset(frame, meta, candles, cfg, tmp_path)
    assert result.metrics["trials"] == 6 == sum(t.trials for t in result.tuned.values())
    again = train_dataset(frame, meta, candles, cfg, tmp_path)  # same journal: budget spent
    assert again.metrics["trials"] == 6
    assert {f: t.params for f, t in again.tuned.items()} == {
        f: t.params for f, t in result.tuned.items()
    }


def test_holdout_is_after_development_and_rows_are_accounted(small: tuple, tmp_path: Path) -> None:
    frame, meta, candles, cfg = small
    result = train_dataset(frame, meta, candles, cfg, tmp_path)
    preds = result.predictions
    dev = preds.filter(preds["set"] == "dev")
    hold = preds.filter(preds["set"] == "holdout")
    assert dev["ts"].max() < hold["ts"].min()
    assert hold.height == round(frame.height * cfg.holdout)
    assert dev.height + hold.height <= frame.height  # the purge drops a few rows at the boundary
    assert preds["proba"].is_between(0, 1).all()
