"""Shared fixtures of the model tests."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import polars as pl
import pytest

from core.config import Settings, load_settings
from core.store import CandleStore
from features.dataset import Dataset, build_dataset, load_inputs
from models.training import TrainingConfig, TrainingResult, train_dataset
from tests.features.test_features import market


class Small(NamedTuple):
    """A small dataset, the candles it came from and a quick training configuration."""

    dataset: Dataset
    candles: pl.DataFrame
    cfg: TrainingConfig


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Small:
    settings = load_settings()
    candles = market("BTCUSD", days=150)
    store = CandleStore(tmp_path_factory.mktemp("store"))
    store.upsert("BTCUSD", "1h", candles)
    inputs = load_inputs(store, "BTCUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    cfg = dataclasses.replace(
        TrainingConfig.from_settings(settings, "BTCUSD", "1h"),
        families=("logreg", "lightgbm"),
        folds=3,
        trials=3,
    )
    return Small(dataset, inputs.candles, cfg)


class Trained(NamedTuple):
    """A training recorded by the registry tests: its settings (the home holds the candles),
    result, config and dataset."""

    settings: Settings
    result: TrainingResult
    cfg: TrainingConfig
    dataset: Dataset


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    CandleStore(home).upsert("BTCUSD", "1h", market("BTCUSD", days=150))
    inputs = load_inputs(CandleStore(home), "BTCUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    cfg = dataclasses.replace(
        TrainingConfig.from_settings(settings, "BTCUSD", "1h"),
        families=("logreg", "lightgbm"),
        folds=3,
        trials=2,
    )
    result = train_dataset(dataset, inputs.candles, cfg, home / "optuna")
    return Trained(settings, result, cfg, dataset)
