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

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from core.errors import CandleflowError
from core.feature_spec import FeatureSpec, LabelSpec
from core.instruments import instrument
from core.reports import DatasetReport
from core.store import CandleStore, write_parquet_atomic
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, parse_timeframe
from features.build import Features, compute_features, correlated_symbols, epoch_us
from features.indicators import ZSCORE_WINDOW
from features.labels import triple_barrier

METADATA_KEY = "candleflow"
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


class DatasetMeta(BaseModel):
    """What a dataset was built from and what was dropped, stored with it (and read back)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    symbol: str
    timeframe: str
    spec_hash: str
    feature_spec: FeatureSpec
    label_spec: LabelSpec
    candles: int
    candle_first: datetime
    candle_last: datetime
    rows: int
    features: int
    feature_columns: list[str]
    label_columns: list[str]
    label_counts: dict[str, int]  # -1 / 0 / +1 → rows
    dropped: dict[str, int]  # warm-up / unlabeled / non-event → rows
    skipped: list[str]  # what the feature spec asked for and was not built
    created_at: datetime

    def to_json(self) -> str:
        """The stored text: the feature spec in its canonical form, keys sorted."""
        data = self.model_dump(mode="json")
        data["feature_spec"] = json.loads(self.feature_spec.canonical_json())
        return json.dumps(data, indent=2, sort_keys=True)

    def model_metadata(self) -> dict[str, object]:
        """What a trained model keeps of its dataset: the specs live rebuilds features with."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "spec_hash": self.spec_hash,
            "feature_spec": json.loads(self.feature_spec.canonical_json()),
            "label_spec": self.label_spec.model_dump(mode="json"),
        }

    def report(self, path: Path | None = None) -> DatasetReport:
        return DatasetReport(
            symbol=self.symbol,
            timeframe=self.timeframe,
            rows=self.rows,
            features=self.features,
            spec_hash=self.spec_hash,
            label_counts=self.label_counts,
            dropped=self.dropped,
            skipped=self.skipped,
            candle_first=self.candle_first,
            candle_last=self.candle_last,
            path=None if path is None else str(path),
        )


@dataclass(frozen=True)
class Dataset:
    """Features and labels of every kept row (``ts``, features, ``label…`` columns) + metadata."""

    frame: pl.DataFrame
    meta: DatasetMeta


@dataclass(frozen=True)
class Labels:
    """Triple-barrier outcomes of every candle (``ts``, ``label…`` columns, ``event``)."""

    frame: pl.DataFrame
    spec: LabelSpec

    @property
    def labelled(self) -> int:
        return self.frame.height - self.frame["label"].null_count()

    @property
    def events(self) -> int:
        return int(
            self.frame.select((pl.col("label").is_not_null() & pl.col("event")).sum()).item()
        )


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


def label_candles(candles: pl.DataFrame, symbol: str, spec: LabelSpec) -> Labels:
    """Stage 2: the triple-barrier label of every candle, columns named ``label…``."""
    frame = triple_barrier(candles, spec, pip_size=instrument(normalize_symbol(symbol)).pip_size)
    return Labels(frame.rename(LABEL_RENAMES), spec)


def build_features(inputs: Inputs, symbol: str, timeframe: str, spec: FeatureSpec) -> Features:
    """Stage 3: the features of every candle (NaN during warm-up), no look-ahead."""
    return compute_features(
        inputs.candles,
        spec,
        parse_timeframe(timeframe),
        symbol=normalize_symbol(symbol),
        higher=inputs.higher,
        correlated=inputs.correlated,
    )


def join_dataset(features: Features, labels: Labels, symbol: str, timeframe: str) -> Dataset:
    """Features and labels of the same candles, joined. Rows are dropped, and counted, in this
    order: warm-up (a feature undefined), no complete label (the last ``horizon`` bars), not an
    event (CUSUM)."""
    symbol, tf = normalize_symbol(symbol), parse_timeframe(timeframe)
    ts = labels.frame["ts"]
    if not ts.equals(features.frame["ts"]):
        raise DatasetError(f"{symbol} {tf}: features and labels are not of the same candles")
    frame = pl.concat([features.frame, labels.frame.drop("ts")], how="horizontal")
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
            f"{symbol} {tf}: no rows left from {ts.len()} candles (warm-up "
            f"{counts['warmup']}, unlabeled {counts['unlabeled']}); collect more history"
        )
    meta = DatasetMeta(
        symbol=symbol,
        timeframe=tf.name,
        spec_hash=features.spec.hash,
        # The spec in its canonical form (defaults resolved): what is stored and read back.
        feature_spec=FeatureSpec.model_validate_json(features.spec.canonical_json()),
        label_spec=labels.spec,
        candles=ts.len(),
        candle_first=ts[0],
        candle_last=ts[-1],
        rows=kept.height,
        features=len(cols),
        feature_columns=cols,
        label_columns=[c for c in kept.columns if c.startswith("label")],
        label_counts={str(k): v for k, v in kept["label"].value_counts().sort("label").iter_rows()},
        dropped=counts,
        skipped=features.skipped,
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    return Dataset(kept, meta)


def build_dataset(
    inputs: Inputs, symbol: str, timeframe: str, feature_spec: FeatureSpec, label_spec: LabelSpec
) -> Dataset:
    """Labels + features of ``inputs``, joined (the three steps the dataset flow runs as tasks)."""
    features = build_features(inputs, symbol, timeframe, feature_spec)
    return join_dataset(
        features, label_candles(inputs.candles, symbol, label_spec), symbol, timeframe
    )


def dataset_path(home: Path, symbol: str, timeframe: str) -> Path:
    return (
        Path(home)
        / "datasets"
        / parse_timeframe(timeframe).name
        / f"{normalize_symbol(symbol)}.parquet"
    )


def write_dataset(home: Path, dataset: Dataset) -> Path:
    """Atomic write of the dataset and its JSON sidecar; returns the Parquet path."""
    meta = dataset.meta
    path = dataset_path(home, meta.symbol, meta.timeframe)
    text = meta.to_json()
    write_parquet_atomic(dataset.frame, path, metadata={METADATA_KEY: text})
    sidecar = path.with_suffix(".json")
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(sidecar)
    return path


def read_dataset(path: Path) -> Dataset:
    """A dataset and its metadata (from the Parquet file itself)."""
    text = pl.read_parquet_metadata(path).get(METADATA_KEY)
    if text is None:
        raise DatasetError(f"{path} is not a candleflow dataset (no '{METADATA_KEY}' metadata)")
    return Dataset(pl.read_parquet(path), DatasetMeta.model_validate_json(text))


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
