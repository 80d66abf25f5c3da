"""Scoring the newest closed candle with a registered model: its *own* feature spec rebuilt on
the stored candles, the code fingerprint and freshness checks, the ensemble's vote, the volatility
regime and CUSUM event of the candle, and the explanation of the prediction. No side effects:
``trading.live`` records and acts on what this returns."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import sklearn

from core.errors import CandleflowError
from core.feature_spec import LabelSpec
from core.settings_trading import SignalSettings
from core.store import CandleStore
from core.timeframes import Timeframe, as_utc, parse_timeframe
from features.build import FeatureError, compute_features
from features.dataset import Inputs, load_inputs, recent, tail_bars
from features.labels import cusum_events, volatility
from models.ensemble import Ensemble
from models.risk import RiskState
from models.signal import (
    AlertOpinion,
    RegimeReading,
    Signal,
    Vote,
    regime_from_sigma,
    score_signal,
    vote_ensemble,
)
from models.zoo import feature_contributions
from trading.live_models import LiveModel
from trading.records import Explanation

if TYPE_CHECKING:  # streams only in a long-running service: not imported by a run
    from features.incremental import FeatureStreams

OK, NO_MODEL, STALE, SPEC_MISMATCH, ERROR = "OK", "NO_MODEL", "STALE", "SPEC_MISMATCH", "ERROR"
TOP_CONTRIBUTIONS = 5


class LiveError(CandleflowError):
    """A symbol cannot be scored; ``status`` says which kind of refusal it is."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Scored:
    ts: datetime
    vote: Vote
    close: float
    sigma: float
    # The explanation's TreeSHAP costs more than the rest of the decision, which never reads it:
    # worked out when a record first asks for it (``explanation``).
    explain: Callable[[], Explanation] = field(repr=False, compare=False)
    regime: RegimeReading | None = None
    event: bool = True  # a bar of the kind the model was trained on (CUSUM filter, if any)

    @cached_property
    def explanation(self) -> Explanation:
        return self.explain()


def score_last_candle(
    model: LiveModel,
    store: CandleStore,
    symbol: str,
    timeframe: str,
    now: datetime,
    signals: SignalSettings | None = None,
    streams: FeatureStreams | None = None,
    memo: ScoredMemo | None = None,
) -> tuple[Scored, pl.DataFrame]:
    """The model's vote on the newest closed candle (and the candles it came from), with the
    volatility regime of that candle when ``signals`` says how to read it. ``streams``: a
    long-running process's feature streams (the same features, one step per new candle);
    ``memo``: its scorings, reused while the stored candles are unchanged."""
    _check_model(model, store, symbol, timeframe)
    tf = parse_timeframe(timeframe)
    inputs = load_inputs(store, symbol, timeframe, model.spec)
    last = as_utc(inputs.candles["ts"][-1])
    if as_utc(now) - last >= 2 * tf.duration:
        raise LiveError(STALE, f"last candle opened {last:%Y-%m-%d %H:%M} UTC, ≥ 2 × {tf.name} ago")
    _check_fresh(inputs, last, tf)
    if memo is not None:
        known = memo.get(model, inputs, signals)
        if known is not None:
            return known
    inputs_read = inputs
    inputs = recent(inputs, _tail_bars(model, tf))
    candles = inputs.candles
    X = _last_features(model, inputs, tf, symbol, streams)
    probas = model.probabilities(X)
    # σ of the labels (the barriers' unit) over the regime's window too: computed once. Its
    # recursive estimate starts 4 × its window back at least, where the start is forgotten.
    lookback = 0 if signals is None else signals.regime_lookback
    window = candles.tail(lookback + model.labels.vol_window * 4)
    sigmas = volatility(window, model.labels)
    scored = Scored(
        last,
        vote_ensemble(model.ensemble, probas),
        float(candles["close"][-1]),
        float(sigmas[-1]),
        partial(_explanation, model.ensemble, X),
        None if signals is None else regime_from_sigma(sigmas, signals),
        _is_event(window, sigmas, model.labels),
    )
    if memo is not None:
        memo.put(model, inputs_read, signals, (scored, candles))
    return scored, candles


class ScoredMemo:
    """A long-running process's scorings of the newest candle, one per registered model (a new
    version replaces its predecessor's), kept while the
    candles they came from are the very frames the store hands out again (its read cache gives
    the same frame until the file changes): a service asked about one candle many times scores
    it once — features, families, vote, σ, regime, and the explanation when first asked for.
    The staleness and freshness checks still run on every call. Thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[LiveModel, Inputs, object, tuple[Scored, pl.DataFrame]]]
        self._entries = {}
        self._lock = threading.Lock()
        self.hits = 0

    def get(
        self, model: LiveModel, inputs: Inputs, signals: SignalSettings | None
    ) -> tuple[Scored, pl.DataFrame] | None:
        with self._lock:
            entry = self._entries.get(model.name)
            if entry is None or entry[0] is not model or entry[2] is not signals:
                return None
            if not _same_frames(entry[1], inputs):
                return None
            self.hits += 1
            return entry[3]

    def put(
        self,
        model: LiveModel,
        inputs: Inputs,
        signals: SignalSettings | None,
        scored: tuple[Scored, pl.DataFrame],
    ) -> None:
        with self._lock:
            self._entries[model.name] = (model, inputs, signals, scored)


def _same_frames(a: Inputs, b: Inputs) -> bool:
    """The same frame objects (an absent series: empty in both)."""

    def same(x: pl.DataFrame | None, y: pl.DataFrame | None) -> bool:
        if x is y:
            return True
        return (x is None or x.is_empty()) and (y is None or y.is_empty())

    if not same(a.candles, b.candles) or a.higher.keys() != b.higher.keys():
        return False
    if a.correlated.keys() != b.correlated.keys():
        return False
    pairs = [(a.higher[k], b.higher[k]) for k in a.higher]
    pairs += [(a.correlated[k], b.correlated[k]) for k in a.correlated]
    return all(same(x, y) for x, y in pairs)


_TAILS: dict[tuple[str, str], int] = {}


def _tail_bars(model: LiveModel, tf: Timeframe) -> int:
    """``tail_bars`` of the model's spec, worked out once per spec and timeframe."""
    key = (model.spec_hash, tf.name)
    if key not in _TAILS:
        _TAILS[key] = tail_bars(model.spec, tf)
    return _TAILS[key]


def _check_model(model: LiveModel, store: CandleStore, symbol: str, timeframe: str) -> None:
    """Refuse a model whose spec or code this code does not reproduce."""
    trained_hash = model.ensemble.metadata["spec_hash"]
    if model.spec_hash != trained_hash:
        raise LiveError(
            SPEC_MISMATCH,
            f"v{model.version}: its feature spec hashes to {model.spec_hash} under this code, "
            f"not the {trained_hash} it was trained with",
        )
    mismatch = model.code_mismatch(store, symbol, timeframe)  # worked out once per model
    if mismatch is not None:
        raise LiveError(SPEC_MISMATCH, mismatch)


def _last_features(
    model: LiveModel,
    inputs: Inputs,
    tf: Timeframe,
    symbol: str,
    streams: FeatureStreams | None = None,
) -> np.ndarray:
    """The model's features of the last candle, as one row (all finite, else refused): from the
    feature streams when there are some, else built on the tail."""
    columns = model.ensemble.feature_columns
    if streams is not None:
        from features.incremental import ColumnsDiffer  # loaded with the streams already

        try:
            X = streams.last_row(
                *(inputs.candles, inputs.higher, inputs.correlated),
                *(model.spec, tf, symbol, columns, model.spec_hash),
            )
        except ColumnsDiffer as exc:
            raise LiveError(SPEC_MISMATCH, f"v{model.version}: features differ ({exc})") from None
        except FeatureError as exc:
            raise LiveError(ERROR, f"{symbol} {tf.name}: {exc}") from None
        return _finite(X, columns)
    features = compute_features(
        inputs.candles,
        model.spec,
        tf,
        symbol=symbol,
        higher=inputs.higher,
        correlated=inputs.correlated,
        last=1,
    )
    if features.columns != columns:
        missing = sorted(set(columns) - set(features.columns))[:5]
        raise LiveError(SPEC_MISMATCH, f"v{model.version}: features differ (missing {missing})")
    X = np.array([features.frame.row(-1)[1:]], dtype=np.float64)  # ts, then the columns
    return _finite(X, columns)


def _finite(X: np.ndarray, columns: list[str]) -> np.ndarray:
    if not np.isfinite(X).all():
        bad = [c for c, v in zip(columns, X[0], strict=True) if not math.isfinite(v)][:5]
        raise LiveError(ERROR, f"features undefined at the last candle: {bad}")
    return X


def _is_event(window: pl.DataFrame, sigmas: np.ndarray, labels: LabelSpec) -> bool:
    """Whether the last bar passes the labels' CUSUM filter (always, without one): a model
    trained on event bars only says nothing about the others. The filter runs over the window
    from its start; its sums reset at each event, so after the first few events it agrees with
    the filter run over the whole history (tests/trading/test_live.py checks)."""
    if labels.cusum is None:
        return True
    close = window["close"].to_numpy().astype(np.float64)
    return bool(cusum_events(close, sigmas, labels.cusum)[-1])


def signal_of(
    scored: Scored,
    settings: SignalSettings,
    state: RiskState,
    higher: Vote | None = None,
    alert: AlertOpinion | None = None,
) -> Signal:
    """The signal on a scored candle: weight, tier, multiplier (NEUTRAL off the model's events)."""
    off_event = None
    if not scored.event:
        off_event = "not a CUSUM event: the model was trained on event bars only"
    return score_signal(
        scored.vote,
        settings,
        state,
        regime=scored.regime,
        higher_tf=higher,
        alert=alert,
        off_event=off_event,
    )


def _check_fresh(inputs: Inputs, last: datetime, tf: Timeframe) -> None:
    """Correlated symbols and stored higher-timeframe series must be as recent as the candle
    scored: an as-of join would otherwise quietly use old values that training never saw."""
    for symbol, frame in inputs.correlated.items():
        if frame is not None and not frame.is_empty() and as_utc(frame["ts"][-1]) < last:
            raise LiveError(
                STALE,
                f"correlated {symbol}: last candle {frame['ts'][-1]:%Y-%m-%d %H:%M} UTC"
                f" is older than the scored one ({last:%Y-%m-%d %H:%M}); collect it too",
            )
    for name, frame in inputs.higher.items():
        if frame is None or frame.is_empty():
            continue  # resampled from the base candles: as fresh as they are
        duration = parse_timeframe(name).duration
        if as_utc(frame["ts"][-1]) + 2 * duration <= last + tf.duration:
            raise LiveError(STALE, f"stored {name} candles end at {frame['ts'][-1]}; collect them")


def _explanation(ensemble: Ensemble, X: np.ndarray) -> Explanation:
    """:func:`explain` of the row ``X``, with the contributions of every family that has them."""
    contributions = {}
    with sklearn.config_context(assume_finite=True):  # checked already, not again per family
        for name, fitted in ensemble.models.items():
            try:
                contributions[name] = feature_contributions(fitted, X)[0, :-1]
            except NotImplementedError:  # e.g. histogram GBM: no TreeSHAP
                continue
    return explain(ensemble, X, contributions)


def explain(
    ensemble: Ensemble,
    X: np.ndarray,
    contributions_by_family: dict[str, np.ndarray],
    top: int = TOP_CONTRIBUTIONS,
) -> Explanation:
    """The largest contributions to this prediction (one row ``X``), in log-odds: TreeSHAP for
    LightGBM and XGBoost, coefficient × standardised value for the linear model
    (``models.zoo.feature_contributions``, bias left out, by family), averaged with the
    ensemble's weights over the families that have them (histogram GBM has none)."""
    total, weight, used = np.zeros(len(ensemble.feature_columns)), 0.0, []
    for name in ensemble.models:
        if name not in contributions_by_family:
            continue
        contributions = contributions_by_family[name]
        w = ensemble.weights.get(name, 0.0)
        total, weight = total + w * contributions, weight + w
        used.append(name)
    if not used or weight <= 0:
        return {"method": "none", "families": [], "top": []}
    total /= weight
    order = np.argsort(-np.abs(total))[:top]
    return {
        "method": "log-odds contributions (TreeSHAP / linear), ensemble-weighted",
        "families": used,
        "top": [
            {
                "feature": ensemble.feature_columns[i],
                "value": float(X[0, i]),
                "contribution": float(total[i]),
            }
            for i in order
        ],
    }
