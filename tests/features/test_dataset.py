"""Datasets: every candle is accounted for, labels never become features, metadata round-trips."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import polars as pl
import pytest

from core.config import load_settings
from core.feature_spec import LabelSpec
from core.store import CandleStore
from features.dataset import (
    DatasetError,
    build_dataset,
    load_inputs,
    read_dataset,
    write_dataset,
)
from tests.features.test_features import market


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    store = CandleStore(tmp_path / "home")
    for symbol in ("EURUSD", "BTCUSD"):
        store.upsert(symbol, "1h", market(symbol))
    return store


def test_every_candle_is_accounted_for(store: CandleStore) -> None:
    settings = load_settings()
    inputs = load_inputs(store, "btc-usd", "1h", settings.features)
    frame, meta = astuple(build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels))
    dropped = meta.dropped
    assert meta.rows == frame.height
    assert meta.rows + sum(dropped.values()) == meta.candles == inputs.candles.height
    assert dropped["unlabeled"] == settings.labels.horizon  # the last bars: never filled
    assert frame["ts"].max() < inputs.candles["ts"][-settings.labels.horizon]
    assert (
        dropped["warmup"] > 0
        and frame.select(meta.feature_columns).null_count().sum_horizontal()[0] == 0
    )
    assert sum(meta.label_counts.values()) == frame.height
    assert set(meta.label_counts) <= {"-1", "0", "1"}


def test_labels_are_never_features(store: CandleStore) -> None:
    settings = load_settings()
    dataset = build_dataset(
        load_inputs(store, "EURUSD", "1h", settings.features),
        "EURUSD",
        "1h",
        settings.features,
        settings.labels,
    )
    meta = dataset.meta
    assert not set(meta.feature_columns) & set(meta.label_columns)
    assert all(c.startswith("label") for c in meta.label_columns)
    assert not any(c.startswith("label") for c in meta.feature_columns)
    assert dataset.frame.columns == ["ts", *meta.feature_columns, *meta.label_columns]


def test_cusum_events_drop_non_event_rows(store: CandleStore) -> None:
    settings = load_settings()
    labels = LabelSpec(cusum=2.0)
    meta = build_dataset(
        load_inputs(store, "EURUSD", "1h", settings.features),
        "EURUSD",
        "1h",
        settings.features,
        labels,
    ).meta
    assert meta.dropped["non_event"] > 0
    assert meta.label_spec.cusum == 2.0


def test_write_and_read_back(store: CandleStore) -> None:
    settings = load_settings()
    dataset = build_dataset(
        load_inputs(store, "EURUSD", "1h", settings.features),
        "EURUSD",
        "1h",
        settings.features,
        settings.labels,
    )
    path = write_dataset(store.home, dataset)
    assert path == store.home / "datasets" / "1h" / "EURUSD.parquet"
    again = read_dataset(path)
    assert again.frame.equals(dataset.frame) and again.meta == dataset.meta
    assert again.meta.feature_spec.hash == again.meta.spec_hash  # the spec itself round-trips
    assert path.with_suffix(".json").is_file()
    assert pl.read_parquet(path).height == dataset.meta.rows  # any Parquet reader works


def test_no_candles_is_a_clear_error(store: CandleStore) -> None:
    with pytest.raises(DatasetError, match="XAUUSD 1h: no candles in the store"):
        load_inputs(store, "XAUUSD", "1h", load_settings().features)


def test_too_little_history_is_a_clear_error(store: CandleStore) -> None:
    settings = load_settings()
    inputs = load_inputs(store, "EURUSD", "1h", settings.features)
    short = inputs.__class__(inputs.candles.head(100), {}, {})
    with pytest.raises(DatasetError, match="no rows left from 100 candles"):
        build_dataset(short, "EURUSD", "1h", settings.features, settings.labels)
