"""Replaying a registered ensemble over a window of stored candles: the features rebuilt with the
model's *own* feature and label specs (never the current config's), scored, and backtested net of
costs. The promotion gate scores champion and challenger on the same window this way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from core.errors import CandleflowError
from core.feature_spec import FeatureSpec, LabelSpec
from core.store import CandleStore
from core.timeframes import as_utc
from features.dataset import build_dataset, load_inputs
from models.backtest import BacktestResult, Costs, backtest
from models.ensemble import Ensemble

PERIODS_PER_YEAR = 365  # as in training: the daily series holds every calendar day


class ReplayError(CandleflowError):
    """A model cannot be replayed on the stored data (names the model and the reason)."""


@dataclass(frozen=True)
class Replay:
    rows: int
    probabilities: dict[str, np.ndarray]
    result: BacktestResult


def replay(
    ensemble: Ensemble,
    store: CandleStore,
    start: datetime,
    end: datetime,
    costs: Costs,
    label: str = "model",
) -> Replay:
    """Score ``ensemble`` on its dataset rows with ``start ≤ ts ≤ end`` and backtest them."""
    meta = ensemble.metadata
    symbol, timeframe = meta["symbol"], meta["timeframe"]
    spec = FeatureSpec.model_validate(meta["feature_spec"])
    labels = LabelSpec.model_validate(meta["label_spec"])
    if spec.hash != meta["spec_hash"]:
        raise ReplayError(
            f"{label}: its feature spec hashes to {spec.hash} under this code, not the "
            f"{meta['spec_hash']} it was trained with; it cannot be rebuilt faithfully"
        )
    inputs = load_inputs(store, symbol, timeframe, spec)
    frame, _ = build_dataset(inputs, symbol, timeframe, spec, labels)
    window = frame.filter(pl.col("ts").is_between(as_utc(start), as_utc(end)))
    if window.is_empty():
        raise ReplayError(
            f"{label}: no labelled {symbol} {timeframe} rows between {start} and {end} in the store"
        )
    X = window.select(ensemble.feature_columns).to_numpy().astype(np.float64)
    probas = ensemble.family_probabilities(X)
    score, threshold = ensemble.score(probas)
    result = backtest(
        window,
        score,
        threshold,
        costs,
        periods_per_year=PERIODS_PER_YEAR,
        candles=inputs.candles,
    )
    return Replay(window.height, probas, result)
