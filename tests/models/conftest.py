"""Shared fixtures of the model tests."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import polars as pl
import pytest

from core.config import Settings, load_settings
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.training import TrainingConfig, TrainingResult, train_dataset
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


class Trained(NamedTuple):
    """A training recorded by the registry tests: its settings (the home holds the candles),
    result, config, dataset metadata and the dataset frame itself."""

    settings: Settings
    result: TrainingResult
    cfg: TrainingConfig
    meta: dict
    frame: pl.DataFrame


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    CandleStore(home).upsert("BTCUSD", "1h", market("BTCUSD", days=150))
    inputs = load_inputs(CandleStore(home), "BTCUSD", "1h", settings.features)
    frame, meta = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    cfg = dataclasses.replace(
        TrainingConfig.from_settings(settings, "BTCUSD", "1h"),
        families=("logreg", "lightgbm"),
        folds=3,
        trials=2,
    )
    result = train_dataset(frame, meta, inputs.candles, cfg, home / "optuna")
    return Trained(settings, result, cfg, meta, frame)
