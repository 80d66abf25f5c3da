"""Tasks of stages 2 and 3: load the candles from the store, label them, build the features, join
and write the dataset — each a task of its own, with its state and its row counts in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.feature_spec import FeatureSpec, LabelSpec
from core.reports import DatasetReport
from core.store import CandleStore
from features.build import Features
from features.dataset import (
    Inputs,
    Labels,
    build_features,
    join_dataset,
    label_candles,
    load_inputs,
    write_dataset,
)


@task(cache_policy=NO_CACHE, task_run_name="load-{symbol}-{timeframe}")
def load_dataset_inputs(home: Path, symbol: str, timeframe: str, spec: FeatureSpec) -> Inputs:
    """Read the candles the spec needs (the symbol's, a higher timeframe's, correlated ones)."""
    return load_inputs(CandleStore(home), symbol, timeframe, spec)


@task(cache_policy=NO_CACHE, task_run_name="label-{symbol}-{timeframe}")
def label(inputs: Inputs, symbol: str, timeframe: str, spec: LabelSpec) -> Labels:
    """Triple-barrier outcomes (take-profit / stop-loss / time-out) of every candle."""
    labels = label_candles(inputs.candles, symbol, spec)
    get_run_logger().info(
        "%s %s: %d candles, %d with a complete label, %d events",
        symbol,
        timeframe,
        labels.frame.height,
        labels.labelled,
        labels.events,
    )
    return labels


@task(cache_policy=NO_CACHE, task_run_name="features-{symbol}-{timeframe}")
def features(inputs: Inputs, symbol: str, timeframe: str, spec: FeatureSpec) -> Features:
    """The spec's features of every candle, no look-ahead."""
    built = build_features(inputs, symbol, timeframe, spec)
    get_run_logger().info(
        "%s %s: %d candles × %d features (spec %s)%s",
        symbol,
        timeframe,
        built.frame.height,
        len(built.columns),
        built.spec.hash,
        f"; skipped: {', '.join(built.skipped)}" if built.skipped else "",
    )
    return built


@task(cache_policy=NO_CACHE, task_run_name="dataset-{symbol}-{timeframe}")
def dataset(
    home: Path, built: Features, labels: Labels, symbol: str, timeframe: str
) -> DatasetReport:
    """Join features and labels (warm-up, unlabeled and non-event rows dropped and counted) and
    write the dataset atomically."""
    joined = join_dataset(built, labels, symbol, timeframe)
    return joined.meta.report(write_dataset(home, joined))
