"""Training datasets: candles → triple-barrier labels + features → one Parquet file per symbol ×
timeframe, with its metadata (spec hash, label spec, candle range, rows dropped and why).

Layout under the state directory: ``datasets/<tf>/<SYMBOL>.parquet`` (metadata embedded under the
key ``candleflow``) and ``datasets/<tf>/<SYMBOL>.json`` (the same metadata, for people and tools).
Columns: ``ts``, the features (listed in ``feature_columns``), then the label columns, all named
``label…`` (listed in ``label_columns``): labels look forward and are never features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.errors import CandleflowError
from core.feature_spec import FeatureSpec, LabelSpec
from core.instruments import instrument
from core.store import CandleStore, write_parquet_atomic
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, parse_timeframe
from features.build import compute_features, correlated_symbols, epoch_us
from features.indicators import ZSCORE_WINDOW
from features.labels import triple_barrier

METADATA_KEY = "candleflow"
# One row of a dataset report (CLI ``--json``, Prefect artifact), in this order.
DATASET_FIELDS = (
    "symbol",
    "timeframe",
    "rows",
    "features",
    "spec_hash",
    "label_counts",
    "dropped",
    "skipped",
    "candle_first",
    "candle_last",
    "path",
    "error",
)
LABEL_RENAMES = {
    "label": "label",
    "t1": "label_t1",
    "barrier": "label_barrier",
    "ret": "label_ret",
    "pips": "label_pips",
    "bars": "label_bars",
    "sigma": "label_sigma",
}


class DatasetError(CandleflowError):
    """A dataset could not be built (e.g. no candles, or too few for the spec's warm-up)."""


@dataclass(frozen=True)
class Inputs:
    candles: pl.DataFrame
    higher: dict[str, pl.DataFrame | None] = field(default_factory=dict)
    correlated: dict[str, pl.DataFrame | None] = field(default_factory=dict)


def load_inputs(store: CandleStore, symbol: str, timeframe: str, spec: FeatureSpec) -> Inputs:
    """Everything the spec needs from the store for ``symbol`` × ``timeframe``."""
    symbol = normalize_symbol(symbol)
    candles = store.read(symbol, timeframe)
    if candles.is_empty():
        raise DatasetError(
            f"{symbol} {timeframe}: no candles in the store; collect or import them first"
        )
    higher = {tf: store.read(symbol, tf) for tf in spec.higher_timeframes}
    correlated = {s: store.read(s, timeframe) for s in correlated_symbols(symbol, spec.correlated)}
    return Inputs(candles, higher, correlated)


def build_dataset(
    inputs: Inputs, symbol: str, timeframe: str, feature_spec: FeatureSpec, label_spec: LabelSpec
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The dataset frame and its metadata. Rows are dropped, and counted, in this order: warm-up
    (a feature undefined), no complete label (the last ``horizon`` bars), not an event (CUSUM)."""
    symbol, tf = normalize_symbol(symbol), parse_timeframe(timeframe)
    candles = inputs.candles
    features = compute_features(
        candles, feature_spec, tf, symbol=symbol, higher=inputs.higher, correlated=inputs.correlated
    )
    labels = triple_barrier(candles, label_spec, pip_size=instrument(symbol).pip_size)
    frame = pl.concat([features.frame, labels.drop("ts").rename(LABEL_RENAMES)], how="horizontal")
    cols = features.columns
    warm = pl.any_horizontal([pl.col(c).is_nan() | pl.col(c).is_null() for c in cols])
    counts = frame.select(
        warmup=warm.sum(),
        unlabeled=(~warm & pl.col("label").is_null()).sum(),
        non_event=(~warm & pl.col("label").is_not_null() & ~pl.col("event")).sum(),
    ).row(0, named=True)
    kept = frame.filter(~warm & pl.col("label").is_not_null() & pl.col("event")).drop("event")
    if kept.is_empty():
        raise DatasetError(
            f"{symbol} {tf}: no rows left from {candles.height} candles (warm-up "
            f"{counts['warmup']}, unlabeled {counts['unlabeled']}); collect more history"
        )
    label_counts = {str(k): v for k, v in kept["label"].value_counts().sort("label").iter_rows()}
    metadata = {
        "symbol": symbol,
        "timeframe": tf.name,
        "spec_hash": features.spec.hash,
        "feature_spec": json.loads(features.spec.canonical_json()),
        "label_spec": label_spec.model_dump(mode="json"),
        "candles": candles.height,
        "candle_first": candles["ts"][0].isoformat(),
        "candle_last": candles["ts"][-1].isoformat(),
        "rows": kept.height,
        "features": len(cols),
        "feature_columns": cols,
        "label_columns": [c for c in kept.columns if c.startswith("label")],
        "label_counts": label_counts,
        "dropped": counts,
        "skipped": features.skipped,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return kept, metadata


def dataset_path(home: Path, symbol: str, timeframe: str) -> Path:
    return (
        Path(home)
        / "datasets"
        / parse_timeframe(timeframe).name
        / f"{normalize_symbol(symbol)}.parquet"
    )


def write_dataset(home: Path, frame: pl.DataFrame, metadata: dict[str, Any]) -> Path:
    """Atomic write of the dataset and its JSON sidecar; returns the Parquet path."""
    path = dataset_path(home, metadata["symbol"], metadata["timeframe"])
    text = json.dumps(metadata, indent=2, sort_keys=True)
    write_parquet_atomic(frame, path, metadata={METADATA_KEY: text})
    sidecar = path.with_suffix(".json")
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(sidecar)
    return path


def read_dataset(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A dataset and its metadata (from the Parquet file itself)."""
    metadata = pl.read_parquet_metadata(path).get(METADATA_KEY)
    if metadata is None:
        raise DatasetError(f"{path} is not a candleflow dataset (no '{METADATA_KEY}' metadata)")
    return pl.read_parquet(path), json.loads(metadata)


def tail_bars(spec: FeatureSpec, timeframe: Timeframe) -> int:
    """Bars of history the last candle's features need to equal those computed on the whole
    history, in bars of ``timeframe``: TA-Lib's recursive indicators (EMA, Wilder smoothing) forget
    their start as ~e^(-n/period), so 25 × the longest period leaves under 1e-10; rolling windows
    (families, z-scores of cumulative series) need their length, taken 3 × for safety; both scaled
    by the slowest (higher) timeframe used, at least 1 000 bars.
    tests/trading/test_live.py checks the parity on the default spec."""
    periods = [
        float(v) for i in spec.indicators for k, v in i.resolved_params.items() if "period" in k
    ]
    f = spec.families
    windows = [*f.returns, *f.volatility, *f.zscore, f.volume_zscore or 0, ZSCORE_WINDOW]
    slowest = max(
        [timeframe.duration, *(parse_timeframe(t).duration for t in spec.higher_timeframes)]
    )
    factor = max(1, round(slowest / timeframe.duration))
    return max(1000, int(max(25 * max(periods, default=50), 3 * max(windows)) * factor))


def recent(inputs: Inputs, bars: int) -> Inputs:
    """The last ``bars`` candles and the higher-timeframe / correlated candles of that span."""
    candles = inputs.candles.tail(bars)
    start = epoch_us(candles["ts"].head(1))[0]

    def since(frame: pl.DataFrame | None) -> pl.DataFrame | None:
        # Frames are sorted by ts (as stored): a slice from the first ts ≥ start, no scan (a
        # numpy binary search: polars' search_sorted runs a query, ~0.1 ms a frame).
        if frame is None:
            return None
        return frame.slice(int(np.searchsorted(epoch_us(frame["ts"]), start, "left")))

    return Inputs(
        candles,
        {k: since(v) for k, v in inputs.higher.items()},
        {k: since(v) for k, v in inputs.correlated.items()},
    )
