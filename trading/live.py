"""Live scoring of one symbol × timeframe: the champion scores the newest closed candle with its
*own* feature spec, the ensemble vote, signal weight and risk layer decide (counting the orders
not filled yet as exposure), an approved order goes to the execution broker exactly once (one order
per candle: a model version other than the one that ordered it is refused), and everything —
refusals included — is recorded in the ledger. Where a challenger exists it scores the same
candle in shadow (recorded, never executed).

Statuses: ``OK``; ``NO_MODEL`` (no champion); ``STALE`` (the last stored candle opened 2 × the
timeframe or more ago: no order); ``SPEC_MISMATCH`` (the model's spec does not rebuild to the hash
it was trained with, or yields other columns, or this code does not reproduce the model's code
fingerprint — features and probabilities of reference rows: refused); ``ERROR`` (features
undefined, …). A champion's records say how it was crowned (``champion_kind``: gate, manual,
rollback).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import sklearn

from brokers.execution import AccountSnapshot, ExecutionBroker
from core.config import Settings
from core.errors import CandleflowError
from core.feature_spec import LabelSpec
from core.settings_trading import SignalSettings
from core.store import CandleStore
from core.timeframes import as_utc, parse_timeframe
from features.build import compute_features
from features.dataset import load_inputs, recent, tail_bars
from features.labels import cusum_events, volatility
from models.ensemble import Ensemble
from models.registry import CHALLENGER, CHAMPION
from models.risk import AccountState, Position, RiskState, bars_per_year, decide, risk_state
from models.signal import (
    RegimeReading,
    Signal,
    Vote,
    regime_from_sigma,
    score_signal,
    vote_ensemble,
)
from models.tracking import registered_name
from models.zoo import probability_and_contributions
from trading.ledger import Ledger, OrderIntent
from trading.live_models import LiveModel, ModelCache
from trading.records import NEW, REJECTED, SUBMITTED

logger = logging.getLogger(__name__)

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
    explanation: dict[str, Any]
    regime: RegimeReading | None = None
    event: bool = True  # a bar of the kind the model was trained on (CUSUM filter, if any)


def score_last_candle(
    model: LiveModel,
    store: CandleStore,
    symbol: str,
    timeframe: str,
    now: datetime,
    signals: SignalSettings | None = None,
) -> tuple[Scored, pl.DataFrame]:
    """The model's vote on the newest closed candle (and the candles it came from), with the
    volatility regime of that candle when ``signals`` says how to read it."""
    meta = model.ensemble.metadata
    if model.spec_hash != meta["spec_hash"]:
        raise LiveError(
            SPEC_MISMATCH,
            f"v{model.version}: its feature spec hashes to {model.spec_hash} under this code, "
            f"not the {meta['spec_hash']} it was trained with",
        )
    mismatch = model.code_mismatch(store, symbol, timeframe)  # worked out once per model
    if mismatch is not None:
        raise LiveError(SPEC_MISMATCH, mismatch)
    tf = parse_timeframe(timeframe)
    inputs = load_inputs(store, symbol, timeframe, model.spec)
    last = as_utc(inputs.candles["ts"][-1])
    if as_utc(now) - last >= 2 * tf.duration:
        raise LiveError(STALE, f"last candle opened {last:%Y-%m-%d %H:%M} UTC, ≥ 2 × {tf.name} ago")
    _check_fresh(inputs, last, tf)
    inputs = recent(inputs, tail_bars(model.spec, tf))
    candles = inputs.candles
    features = compute_features(
        candles,
        model.spec,
        tf,
        symbol=symbol,
        higher=inputs.higher,
        correlated=inputs.correlated,
        last=1,
    )
    columns = model.ensemble.feature_columns
    if features.columns != columns:
        missing = sorted(set(columns) - set(features.columns))[:5]
        raise LiveError(SPEC_MISMATCH, f"v{model.version}: features differ (missing {missing})")
    X = np.array([features.frame.row(-1)[1:]], dtype=np.float64)  # ts, then the columns
    if not np.isfinite(X).all():
        bad = [c for c, v in zip(columns, X[0], strict=True) if not math.isfinite(v)][:5]
        raise LiveError(ERROR, f"features undefined at the last candle: {bad}")
    with sklearn.config_context(assume_finite=True):  # checked above, not again per family
        scores = {f: probability_and_contributions(m, X) for f, m in model.ensemble.models.items()}
    probas = {f: float(p[0]) for f, (p, _) in scores.items()}
    explanation = explain(
        model.ensemble, X, {f: c[0, :-1] for f, (_, c) in scores.items() if c is not None}
    )
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
        explanation,
        None if signals is None else regime_from_sigma(sigmas, signals),
        _is_event(window, sigmas, model.labels),
    )
    return scored, candles


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
    scored: Scored, settings: SignalSettings, state: RiskState, higher: Vote | None = None
) -> Signal:
    """The signal on a scored candle: weight, tier, multiplier (NEUTRAL off the model's events)."""
    off_event = None
    if not scored.event:
        off_event = "not a CUSUM event: the model was trained on event bars only"
    return score_signal(
        scored.vote, settings, state, regime=scored.regime, higher_tf=higher, off_event=off_event
    )


def _check_fresh(inputs: Any, last: datetime, tf: Any) -> None:
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


def explain(
    ensemble: Ensemble,
    X: np.ndarray,
    contributions_by_family: dict[str, np.ndarray],
    top: int = TOP_CONTRIBUTIONS,
) -> dict[str, Any]:
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


@dataclass
class LiveContext:
    """What one live run shares across symbols (thread-safe where it must be)."""

    settings: Settings
    store: CandleStore
    ledger: Ledger
    broker: ExecutionBroker
    cache: ModelCache
    account: AccountSnapshot
    now: datetime
    pending: tuple[Position, ...] = ()  # earlier runs' orders, not yet filled
    placed: list[Position] = field(default_factory=list)  # this run's orders, not yet filled
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def kill_file(self) -> Path:
        return self.settings.home / "KILL"

    def account_state(self) -> AccountState:
        """Held positions and unfilled orders (earlier runs' and this run's): all exposure."""
        a = self.account
        held = tuple(Position(p.symbol, p.notional, p.side) for p in a.positions)
        exposure = held + self.pending + tuple(self.placed)
        return AccountState(a.equity, a.day_start_equity, a.peak_equity, exposure, a.balance)


def pending_positions(ledger: Ledger, store: CandleStore) -> tuple[Position, ...]:
    """Orders not filled yet (NEW: the broker has not accepted them yet; SUBMITTED: accepted,
    waiting for a candle), each at its signal candle's close: the notional it was sized at."""
    frames = [ledger.orders(status=status) for status in (NEW, SUBMITTED)]
    pending = []
    for row in pl.concat(frames).iter_rows(named=True):
        end = as_utc(row["ts"]) + parse_timeframe(row["timeframe"]).duration
        close = store.read(row["symbol"], row["timeframe"], end=end)["close"].tail(1)
        if close.is_empty():  # no candle to price it: it still counts as an open position
            logger.warning("pending order %s: no candle to price it at", row["order_id"])
        notional = row["quantity"] * (float(close[0]) if close.len() else 0.0)
        pending.append(Position(row["symbol"], notional, row["side"]))
    return tuple(pending)


def run_symbol(ctx: LiveContext, symbol: str, timeframe: str) -> list[dict[str, Any]]:
    """The champion's decision (and the challenger's shadow signal) for the newest candle."""
    name = registered_name(symbol, timeframe)
    rows = []
    champion = ctx.cache.get(name, CHAMPION)
    if champion is None:
        rows.append(_record(ctx, symbol, timeframe, None, NO_MODEL, ["no champion"], name))
    else:
        rows.append(_decide(ctx, symbol, timeframe, champion, shadow=False))
    try:  # the shadow never costs the champion's decision (already recorded, maybe ordered)
        challenger = ctx.cache.get(name, CHALLENGER)
        if challenger is not None:
            rows.append(_decide(ctx, symbol, timeframe, challenger, shadow=True))
    except Exception as exc:
        logger.exception("%s %s: the challenger's shadow signal failed", symbol, timeframe)
        rows.append(
            _record(ctx, symbol, timeframe, None, ERROR, [f"shadow: {exc}"], name, shadow=True)
        )
    return rows


def _decide(
    ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel, shadow: bool
) -> dict[str, Any]:
    try:
        scored, _ = score_last_candle(
            model, ctx.store, symbol, timeframe, ctx.now, ctx.settings.signals
        )
    except LiveError as exc:
        reasons = [str(exc)]
        return _record(
            ctx, symbol, timeframe, None, exc.status, reasons, model.name, model, None, shadow
        )
    except CandleflowError as exc:
        reasons = [str(exc)]
        return _record(
            ctx, symbol, timeframe, None, ERROR, reasons, model.name, model, None, shadow
        )
    # Asked only when it counts: with a weight of 0 (the default, what the gate evaluated) the
    # higher timeframe's vote cannot change the signal.
    counts = ctx.settings.signals.weights.higher_tf > 0
    higher = _higher_vote(ctx, symbol, model) if counts and not shadow else None
    with ctx.lock:  # the risk state and the orders of this run move together
        state = risk_state(ctx.account_state(), ctx.settings.risk, ctx.kill_file)
        signal = signal_of(scored, ctx.settings.signals, state, higher)
        order: dict[str, Any] = {}
        reasons = list(signal.reasons)
        if state.halted and int(scored.vote.side) != 0 and not shadow:  # a refused trade
            for event in state.events:
                ctx.ledger.record_risk_event(
                    event.kind, event.message, symbol=symbol, details=event.to_dict(), ts=scored.ts
                )
        if signal.is_order and not shadow:
            order = _order(ctx, symbol, timeframe, model, scored, signal)
            reasons += order.pop("reasons")
    row = _record(ctx, symbol, timeframe, scored, OK, reasons, model.name, model, signal, shadow)
    return row | order


def _order(
    ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel, scored: Scored, signal: Any
) -> dict[str, Any]:
    """The risk layer's decision on the signal and, if approved, the order (placed once)."""
    taken = _candle_order(ctx.ledger, symbol, timeframe, scored.ts)
    if taken is not None and taken["model_version"] == str(model.version):
        return _same_order(ctx, taken)  # a re-run of this candle: its order, not a new decision
    if taken is not None:
        details = {k: taken[k] for k in ("order_id", "model_version", "status")}
        message = (
            f"candle already ordered by v{taken['model_version']} (order {taken['order_id']},"
            f" {taken['status']}): one order per candle, v{model.version} places none"
        )
        ctx.ledger.record_risk_event(
            "candle_ordered", message, symbol=symbol, details=details, ts=scored.ts
        )
        return {"reasons": [message]}
    request = signal.order(symbol, scored.close, scored.sigma)
    decision = decide(
        request,
        ctx.account_state(),
        ctx.settings.risk,
        model.labels,
        periods_per_year=bars_per_year(timeframe, symbol),
        kill_file=ctx.kill_file,
    )
    for event in decision.events:
        ctx.ledger.record_risk_event(
            event.kind, event.message, symbol=symbol, details=event.to_dict(), ts=scored.ts
        )
    if not decision.approved:
        return {"reasons": list(decision.reasons)}
    intent = OrderIntent(
        symbol,
        timeframe,
        scored.ts,
        model.version,
        decision.side,
        decision.quantity,
        decision.stop_loss,
        decision.take_profit,
        timeout_bars=decision.timeout_bars,
    )
    row, created = ctx.ledger.place_order_once(intent, ctx.broker)
    if created and row["status"] != "REJECTED":
        ctx.placed.append(Position(symbol, decision.notional, decision.side))
    return {
        "order_id": row["order_id"],
        "quantity": row["quantity"],
        "stop_loss": decision.stop_loss,
        "take_profit": decision.take_profit,
        "reasons": list(decision.reasons),
    }


def _same_order(ctx: LiveContext, row: dict[str, Any]) -> dict[str, Any]:
    """This version's order of this candle from an earlier run, through the ledger again (a NEW
    order left by a crash before the broker heard of it is submitted now; else nothing changes).
    The risk layer is not asked again: the order already counts in the exposure it would see."""
    intent = OrderIntent(
        row["symbol"],
        row["timeframe"],
        as_utc(row["ts"]),
        row["model_version"],
        row["side"],
        row["quantity"],
        row["stop_loss"],
        row["take_profit"],
        timeout_at=row["timeout_at"],
    )
    placed, _ = ctx.ledger.place_order_once(intent, ctx.broker)
    return {
        "order_id": placed["order_id"],
        "quantity": placed["quantity"],
        "stop_loss": placed["stop_loss"],
        "take_profit": placed["take_profit"],
        "reasons": [f"order {placed['order_id']} placed for this candle on an earlier run"],
    }


def _candle_order(
    ledger: Ledger, symbol: str, timeframe: str, ts: datetime
) -> dict[str, Any] | None:
    """The order (not rejected) of this candle, whichever model version placed it: one order
    per candle — a new champion must not open the candle's trade a second time."""
    orders = ledger.orders(since=ts, symbol=symbol).filter(
        (pl.col("ts") == as_utc(ts))
        & (pl.col("timeframe") == parse_timeframe(timeframe).name)
        & (pl.col("status") != REJECTED)
    )
    return None if orders.is_empty() else orders.row(0, named=True)


def _higher_vote(ctx: LiveContext, symbol: str, model: LiveModel) -> Vote | None:
    """The higher timeframe champion's vote on its newest closed candle, if one exists."""
    for higher in model.spec.higher_timeframes:
        other = ctx.cache.get(registered_name(symbol, higher), CHAMPION)
        if other is None:
            continue
        try:
            return score_last_candle(other, ctx.store, symbol, higher, ctx.now)[0].vote
        except CandleflowError as exc:
            logger.info("%s %s: no higher-timeframe confirmation (%s)", symbol, higher, exc)
    return None


def _record(
    ctx: LiveContext,
    symbol: str,
    timeframe: str,
    scored: Scored | None,
    status: str,
    reasons: list[str],
    name: str,
    model: LiveModel | None = None,
    signal: Any = None,
    shadow: bool = False,
) -> dict[str, Any]:
    ts = scored.ts if scored is not None else _last_ts(ctx.store, symbol, timeframe, ctx.now)
    version = "" if model is None else model.version
    kind = None if model is None or shadow else model.champion_kind
    reasons = reasons if model is None else reasons + model.notes
    components = None
    if signal is not None or model is not None:  # a refusal's reasons are stored too
        components = (signal.to_dict() if signal is not None else {}) | {"reasons": reasons}
        components |= {} if kind is None else {"champion_kind": kind}
    ctx.ledger.record_signal(
        symbol=symbol,
        timeframe=timeframe,
        ts=ts,
        model_name=name,
        model_version=version,
        status=status,
        shadow=shadow,
        action=None if signal is None else int(signal.side),
        probability=None if scored is None else scored.vote.probability,
        weight=None if signal is None else signal.weight,
        tier=None if signal is None else signal.tier.value,
        position_multiplier=None if signal is None else signal.multiplier,
        components=components,
        explanation=None if scored is None else scored.explanation,
    )
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "ts": ts,
        "status": status,
        "action": None if signal is None else signal.side.name,
        "probability": None if scored is None else scored.vote.probability,
        "weight": None if signal is None else round(signal.weight, 1),
        "tier": None if signal is None else signal.tier.value,
        "position_multiplier": None if signal is None else signal.multiplier,
        "order_id": None,
        "model_version": version or None,
        "champion_kind": kind,
        "shadow": shadow,
        "reasons": reasons,
        "stop_loss": None,
        "take_profit": None,
    }


def _last_ts(store: CandleStore, symbol: str, timeframe: str, now: datetime) -> datetime:
    """The candle a refusal is about: the newest stored one, else the current bar."""
    last = store.last_ts(symbol, timeframe)
    return as_utc(last) if last is not None else parse_timeframe(timeframe).floor(as_utc(now))
