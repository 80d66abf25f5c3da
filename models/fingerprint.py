"""A training's code fingerprint: the last rows of the dataset it was trained on (timestamps,
exact feature values) and the ensemble's per-family probabilities on them, stored beside the
ensemble in the registered model. Before a model trades, live recomputes both — the features
from the candle store with the model's own spec, the probabilities on the stored rows — which
catches what the spec hash cannot: a change in the feature code, TA-Lib or a model library.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
from mlflow.exceptions import MlflowException

from core.errors import CandleflowError
from core.feature_spec import FeatureSpec
from core.store import CandleStore
from core.timeframes import as_utc, parse_timeframe
from features.build import compute_features, epoch_us
from features.dataset import Inputs, load_inputs, recent, tail_bars
from models.ensemble import Ensemble
from models.zoo import positive_probability, probability_and_contributions

logger = logging.getLogger(__name__)

FINGERPRINT_ARTIFACT = "artifacts/fingerprint.json"  # in the registered model, beside the ensemble
REFERENCE_ROWS = 3
# Recomputed values agree when within these of the stored ones: TA-Lib and numpy are
# deterministic, so anything beyond rounding noise is a change of code or library.
RTOL, ATOL = 1e-9, 1e-12
# Libraries whose version a mismatch message names when it differs from the training's.
LIBRARIES = ("ta-lib", "numpy", "polars", "scikit-learn", "lightgbm", "xgboost-cpu", "scipy")
FORMAT = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FingerprintError(CandleflowError):
    """The fingerprint cannot be checked here (e.g. its candles are not in the store)."""


@dataclass(frozen=True)
class Fingerprint:
    ts: tuple[datetime, ...]
    columns: tuple[str, ...]
    features: tuple[tuple[float, ...], ...]  # one row per ``ts``, in ``columns`` order
    probabilities: dict[str, tuple[float, ...]]  # family → one per ``ts``
    libraries: dict[str, str]  # distribution → version at training

    def to_json(self) -> str:
        """JSON whose floats read back exactly (shortest round-trip form)."""
        document = {
            "format": FORMAT,
            "ts": [t.isoformat() for t in self.ts],
            "columns": list(self.columns),
            "features": [list(row) for row in self.features],
            "probabilities": {f: list(p) for f, p in self.probabilities.items()},
            "libraries": self.libraries,
        }
        return json.dumps(document, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        d = json.loads(text)
        return cls(
            tuple(as_utc(datetime.fromisoformat(t)) for t in d["ts"]),
            tuple(d["columns"]),
            tuple(tuple(float(v) for v in row) for row in d["features"]),
            {f: tuple(float(v) for v in p) for f, p in d["probabilities"].items()},
            dict(d.get("libraries", {})),
        )


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def take(ensemble: Ensemble, dataset: pl.DataFrame, rows: int = REFERENCE_ROWS) -> Fingerprint:
    """The fingerprint of ``ensemble`` on the last ``rows`` rows of the dataset it was trained on
    (every feature of a dataset row is defined: warm-up rows were dropped)."""
    tail = dataset.tail(rows)
    X = tail.select(ensemble.feature_columns).to_numpy().astype(np.float64)
    return Fingerprint(
        tuple(as_utc(t) for t in tail["ts"].to_list()),
        tuple(ensemble.feature_columns),
        tuple(tuple(float(v) for v in row) for row in X),
        {f: tuple(positive_probability(m, X).tolist()) for f, m in ensemble.models.items()},
        library_versions(),
    )


def load_fingerprint(uri: str) -> Fingerprint | None:
    """The fingerprint stored with a registered version (``uri``: its download URI); None for a
    version registered before fingerprints were recorded."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri}/{FINGERPRINT_ARTIFACT}", dst_path=tmp
            )
        except (MlflowException, OSError):
            return None
        return Fingerprint.from_json(Path(path).read_text())


def recompute(
    fp: Fingerprint, spec: FeatureSpec, store: CandleStore, symbol: str, timeframe: str
) -> pl.DataFrame:
    """The features of the reference candles, computed as live computes them: the model's spec,
    the store's candles up to the last reference candle, a tail of ``tail_bars`` before the
    first (tests/trading/test_live.py checks that this tail reproduces the whole history)."""
    tf = parse_timeframe(timeframe)
    inputs = load_inputs(store, symbol, timeframe, spec)
    micros = epoch_us(inputs.candles["ts"])
    wanted = np.array([(t - _EPOCH) // timedelta(microseconds=1) for t in fp.ts], dtype=np.int64)
    index = np.searchsorted(micros, wanted)
    found = (index < micros.size) & (micros[np.minimum(index, micros.size - 1)] == wanted)
    if not found.all():
        missing = fp.ts[int(np.flatnonzero(~found)[0])]
        raise FingerprintError(
            f"the store has no {symbol} {tf.name} candle at {missing:%Y-%m-%d %H:%M} UTC, a "
            "reference row of the training: import that history to check the model"
        )
    span = int(index[-1] - index[0]) + 1
    upto = Inputs(inputs.candles.head(int(index[-1]) + 1), inputs.higher, inputs.correlated)
    cut = recent(upto, tail_bars(spec, tf) + span - 1)
    features = compute_features(
        cut.candles,
        spec,
        tf,
        symbol=symbol,
        higher=cut.higher,
        correlated=cut.correlated,
        last=span,
    )
    return features.frame[index - index[0]]


def verify(
    fp: Fingerprint,
    ensemble: Ensemble,
    spec: FeatureSpec,
    store: CandleStore,
    symbol: str,
    timeframe: str,
) -> str | None:
    """None when this code reproduces the fingerprint; else what differs first: the feature
    column (with both values), else the family whose probability differs. Raises
    :class:`FingerprintError` when it cannot be checked here."""
    if list(fp.columns) != list(ensemble.feature_columns):
        return "the fingerprint's columns are not the model's"
    frame = recompute(fp, spec, store, symbol, timeframe)
    missing = [c for c in fp.columns if c not in frame.columns]
    if missing:
        return f"feature {missing[0]} is no longer computed by this code"
    here = frame.select(fp.columns).to_numpy().astype(np.float64)
    problem = _first_feature_difference(fp, here) or _first_probability_difference(fp, ensemble)
    if problem is None:
        return None
    return f"code fingerprint differs: {problem}{_library_changes(fp.libraries)}"


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=False)


def _first_feature_difference(fp: Fingerprint, here: np.ndarray) -> str | None:
    stored = np.array(fp.features, dtype=np.float64)
    bad = ~_close(here, stored)
    if not bad.any():
        return None
    column = int(np.flatnonzero(bad.any(axis=0))[0])
    row = int(np.flatnonzero(bad[:, column])[0])
    return (
        f"feature {fp.columns[column]} at {fp.ts[row]:%Y-%m-%d %H:%M} UTC is "
        f"{float(here[row, column])!r} here, {float(stored[row, column])!r} at training "
        "(the feature code, a library or the stored candles changed since)"
    )


def _first_probability_difference(fp: Fingerprint, ensemble: Ensemble) -> str | None:
    """The families' probabilities on the stored rows, through the live scoring path."""
    X = np.array(fp.features, dtype=np.float64)
    if set(fp.probabilities) != set(ensemble.models):
        return "the fingerprint's families are not the model's"
    for family, model in ensemble.models.items():
        here = np.asarray(probability_and_contributions(model, X)[0], dtype=np.float64)
        stored = np.array(fp.probabilities[family], dtype=np.float64)
        bad = np.flatnonzero(~_close(here, stored))
        if bad.size:
            i = int(bad[0])
            return (
                f"family {family}: probability at {fp.ts[i]:%Y-%m-%d %H:%M} UTC is "
                f"{float(here[i])!r} here, {float(stored[i])!r} at training "
                "(on the same feature row)"
            )
    return None


def _library_changes(trained: dict[str, str]) -> str:
    here = library_versions()
    changed = [f"{k} {v} → {here.get(k)}" for k, v in trained.items() if here.get(k) != v]
    return f" (libraries changed since training: {', '.join(changed)})" if changed else ""
