"""Shared fixtures of the model tests."""

from __future__ import annotations

import dataclasses

import pytest

from core.config import load_settings
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.training import TrainingConfig
from tests.features.test_features import market


@pytest.fixture(scope="session")
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
