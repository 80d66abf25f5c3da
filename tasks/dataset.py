"""Tasks of the dataset stage: load the inputs from the store, build, write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.feature_spec import FeatureSpec, LabelSpec
from core.store import CandleStore
from features.dataset import DATASET_FIELDS, Inputs, build_dataset, load_inputs, write_dataset


@task(cache_policy=NO_CACHE, task_run_name="load-{symbol}-{timeframe}")
def load_dataset_inputs(home: Path, symbol: str, timeframe: str, spec: FeatureSpec) -> Inputs:
    """Read the candles the spec needs (the symbol's, a higher timeframe's, correlated ones)."""
    return load_inputs(CandleStore(home), symbol, timeframe, spec)


@task(cache_policy=NO_CACHE, task_run_name="build-{symbol}-{timeframe}")
def build_dataset_frame(
    inputs: Inputs, symbol: str, timeframe: str, feature_spec: FeatureSpec, label_spec: LabelSpec
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Labels + features, joined, warm-up and unlabeled rows dropped and counted."""
    return build_dataset(inputs, symbol, timeframe, feature_spec, label_spec)


@task(cache_policy=NO_CACHE, task_run_name="write-dataset")
def write_dataset_file(home: Path, built: tuple[pl.DataFrame, dict[str, Any]]) -> dict[str, Any]:
    """Write the dataset atomically; return its report row."""
    frame, metadata = built
    path = write_dataset(home, frame, metadata)
    return {key: metadata.get(key) for key in DATASET_FIELDS} | {"path": str(path)}
