"""Live decisions of one symbol × timeframe: the champion scores the newest closed candle with its
*own* feature spec, the ensemble vote, signal weight and risk layer decide (counting the orders
not filled yet as exposure), an approved order goes to the execution broker exactly once (one order
per candle: a model version other than the one that ordered it is refused), and everything —
refusals included — is recorded in the ledger. Where a challenger exists it scores the same
candle in shadow (recorded, never executed).

A re-run of a candle this model version ordered already reports that order with the earlier
run's record (unchanged): the decision is not made again. A symbol whose candle file cannot be
read is ``ERROR`` on its own row; the other symbols go on.

Statuses: ``OK``; ``NO_MODEL`` (no champion); ``STALE`` (the last stored candle opened 2 × the
timeframe or more ago: no order); ``SPEC_MISMATCH`` (the model's spec does not rebuild to the hash
it was trained with, or yields other columns, or this code does not reproduce the model's code
fingerprint — features and probabilities of reference rows: refused); ``ERROR`` (features
undefined, …). A champion's records say how it was crowned (``champion_kind``: gate, manual,
rollback).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from brokers.execution import AccountSnapshot, ExecutionBroker
from core.config import Settings
from core.errors import CandleflowError
from core.reports import SignalReport
from core.store import CandleStore
from core.symbols import normalize_symbol
from core.timeframes import as_utc, parse_timeframe
from models.registry import CHALLENGER, CHAMPION
from models.risk import (
    AccountState,
    Position,
    RiskEvent,
    RiskState,
    bars_per_year,
    decide,
    risk_state,
)
from models.signal import Side, Signal
from models.tracking import registered_name
from trading.ledger import Ledger, OrderIntent
from trading.live_models import LiveModel, ModelCache
from trading.opinions import Outside, outside_opinions
from trading.orders import Recovery
from trading.reconcile import Reconciliation
from trading.records import NEW, REJECTED, Cell, OrderRow, SignalRecord
from trading.scoring import (
    ERROR,
    NO_MODEL,
    OK,
    LiveError,
    Scored,
    ScoredMemo,
    score_last_candle,
    signal_of,
)

if TYPE_CHECKING:  # streams only in a long-running service: not imported by a run
    from features.incremental import FeatureStreams

logger = logging.getLogger(__name__)


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
    unreadable: dict[str, str] = field(default_factory=dict)  # symbol → why not read
    recovery: Recovery = field(default_factory=Recovery)  # what became of unsent orders
    reconciliation: Reconciliation | None = None  # a venue's fills and positions (not paper)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A long-running process's feature streams (the signal service): the newest candle's
    # features in one step each instead of a rebuilt tail (``features.incremental``).
    features: FeatureStreams | None = None
    memo: ScoredMemo | None = None  # its scorings, while the stored candles are unchanged

    @property
    def kill_file(self) -> Path:
        return self.settings.home / "KILL"

    def account_state(self) -> AccountState:
        """Held positions and unfilled orders (earlier runs' and this run's): all exposure."""
        a = self.account
        held = tuple(Position(p.symbol, p.notional, p.side) for p in a.positions)
        exposure = held + self.pending + tuple(self.placed)
        return AccountState(a.equity, a.day_start_equity, a.peak_equity, exposure, a.balance)


@dataclass(frozen=True)
class OrderOutcome:
    """What became of an order signal: the order (placed once) and why, or only why not."""

    reasons: list[str]
    order_id: str | None = None
    quantity: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None


@dataclass(frozen=True)
class LiveDecision:
    """One model's decision on the newest candle (``model`` None: there is none), as recorded in
    the ledger and reported. ``reasons``: its own, the order's included."""

    symbol: str
    timeframe: str
    model_name: str
    status: str
    reasons: list[str]
    model: LiveModel | None = None
    shadow: bool = False
    scored: Scored | None = None
    signal: Signal | None = None
    order: OrderOutcome | None = None
    outside: Outside = field(default_factory=Outside)


def run_symbol(ctx: LiveContext, symbol: str, timeframe: str) -> list[SignalReport]:
    """The champion's decision (and the challenger's shadow signal) for the newest candle."""
    name = registered_name(symbol, timeframe)
    unreadable = ctx.unreadable.get(normalize_symbol(symbol))
    if unreadable is not None:  # whatever the models: someone must look at the file
        return [_record(ctx, LiveDecision(symbol, timeframe, name, ERROR, [unreadable]))]
    reports = []
    champion = ctx.cache.get(name, CHAMPION)
    if champion is None:
        reports.append(
            _record(ctx, LiveDecision(symbol, timeframe, name, NO_MODEL, ["no champion"]))
        )
    else:
        reports.append(_decide(ctx, symbol, timeframe, champion, shadow=False))
    try:  # the shadow never costs the champion's decision (already recorded, maybe ordered)
        challenger = ctx.cache.get(name, CHALLENGER)
        if challenger is not None:
            reports.append(_decide(ctx, symbol, timeframe, challenger, shadow=True))
    except Exception as exc:
        logger.exception("%s %s: the challenger's shadow signal failed", symbol, timeframe)
        reason = f"shadow: {one_line(exc)}"
        failed = LiveDecision(symbol, timeframe, name, ERROR, [reason], shadow=True)
        reports.append(_record(ctx, failed))
    return reports


def scored_decision(
    ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel, shadow: bool = False
) -> LiveDecision:
    """A decision's first steps, shared by live runs and predictions (``trading.predict``): the
    model scores the newest candle (else the refusal: ``scored`` None, status and reason), then
    the outside opinions whose weight counts are asked (``trading.opinions``)."""
    decision = LiveDecision(symbol, timeframe, model.name, OK, [], model, shadow)
    try:
        scored, _ = score_last_candle(
            *(model, ctx.store, symbol, timeframe, ctx.now),
            *(ctx.settings.signals, ctx.features, ctx.memo),
        )
    except LiveError as exc:
        return replace(decision, status=exc.status, reasons=[one_line(exc)])
    except CandleflowError as exc:
        return replace(decision, status=ERROR, reasons=[one_line(exc)])
    outside = outside_opinions(ctx, symbol, timeframe, model, shadow)
    return replace(decision, scored=scored, outside=outside)


def decision_signal(ctx: LiveContext, d: LiveDecision) -> tuple[RiskState, Signal]:
    """The account's risk state now and the signal of a scored decision under it."""
    assert d.scored is not None  # a scored decision
    state = risk_state(ctx.account_state(), ctx.settings.risk, ctx.kill_file)
    o = d.outside
    return state, signal_of(d.scored, ctx.settings.signals, state, o.higher, o.alert)


def _decide(
    ctx: LiveContext, symbol: str, timeframe: str, model: LiveModel, shadow: bool
) -> SignalReport:
    decision = scored_decision(ctx, symbol, timeframe, model, shadow)
    scored = decision.scored
    if scored is None:  # refused: recorded with its reason
        return _record(ctx, decision)
    with ctx.lock:  # the risk state and the orders of this run move together
        taken = None if shadow else ctx.ledger.candle_order(symbol, timeframe, scored.ts)
        if taken is not None and taken.model_version == str(model.version):
            return _rerun(ctx, decision, taken)
        state, signal = decision_signal(ctx, decision)
        reasons, order = list(signal.reasons), None
        if state.halted and int(scored.vote.side) != 0 and not shadow:  # a refused trade
            _risk_events(ctx.ledger, symbol, scored.ts, state.events)
        if signal.is_order and not shadow:
            order = _order(ctx, decision, signal, taken)
            reasons += order.reasons
    return _record(ctx, replace(decision, reasons=reasons, signal=signal, order=order))


def _risk_events(ledger: Ledger, symbol: str, ts: datetime, events: Iterable[RiskEvent]) -> None:
    for event in events:
        ledger.record_risk_event(
            event.kind, event.message, symbol=symbol, details=event.to_dict(), ts=ts
        )


def _order(
    ctx: LiveContext, d: LiveDecision, signal: Signal, taken: OrderRow | None
) -> OrderOutcome:
    """The risk layer's decision on the signal and, if approved, the order (placed once).
    ``taken``: the candle's order by another model version, if any (one order per candle)."""
    model, scored, symbol, timeframe = d.model, d.scored, d.symbol, d.timeframe
    assert model is not None and scored is not None  # a scored decision
    if taken is not None:  # a new champion must not open the candle's trade a second time
        details = {k: getattr(taken, k) for k in ("order_id", "model_version", "status")}
        message = (
            f"candle already ordered by v{taken.model_version} (order {taken.order_id},"
            f" {taken.status}): one order per candle, v{model.version} places none"
        )
        ctx.ledger.record_risk_event(
            "candle_ordered", message, symbol=symbol, details=details, ts=scored.ts
        )
        return OrderOutcome([message])
    decision = decide(
        signal.order(symbol, scored.close, scored.sigma),
        ctx.account_state(),
        ctx.settings.risk,
        model.labels,
        periods_per_year=bars_per_year(timeframe, symbol),
        kill_file=ctx.kill_file,
    )
    _risk_events(ctx.ledger, symbol, scored.ts, decision.events)
    if not decision.approved:
        return OrderOutcome(list(decision.reasons))
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
    if created and row.status != REJECTED:
        ctx.placed.append(Position(symbol, decision.notional, decision.side))
    return OrderOutcome(
        list(decision.reasons), row.order_id, row.quantity, decision.stop_loss, decision.take_profit
    )


def _rerun(ctx: LiveContext, d: LiveDecision, taken: OrderRow) -> SignalReport:
    """A re-run of a candle this model version ordered on an earlier run: its order (sent now if
    a stopped run left it unsent), reported with the earlier run's record, which stays as it was.
    Neither the signal nor the risk layer decides again (the order would count as exposure
    against itself, and a halt since then would log refusals of a trade already made)."""
    order = _same_order(ctx, taken)
    key: dict[str, Cell] = {
        "symbol": taken.symbol,
        "timeframe": taken.timeframe,
        "ts": as_utc(taken.ts),
        "model_version": taken.model_version,
        "shadow": False,
    }
    earlier = ctx.ledger.signal(key)
    if earlier is not None:
        return _earlier_report(earlier, order)
    # The earlier run stopped before recording its signal: recorded now, with its order.
    _, signal = decision_signal(ctx, d)
    reasons = list(signal.reasons) + order.reasons
    return _record(ctx, replace(d, reasons=reasons, signal=signal, order=order))


def _earlier_report(row: dict[str, Cell], order: OrderOutcome) -> SignalReport:
    """The report of a stored champion signal, with its order as it stands now."""
    components = row["components"] if isinstance(row["components"], dict) else {}
    stored = components.get("reasons")
    reasons = [str(r) for r in stored] if isinstance(stored, list) else []
    kind = components.get("champion_kind")
    action, weight = row["action"], row["weight"]
    return SignalReport(
        symbol=str(row["symbol"]),
        timeframe=str(row["timeframe"]),
        ts=row["ts"],
        status=row["status"],
        action=None if action is None else Side(action).name,
        probability=row["probability"],
        weight=None if weight is None else round(float(weight), 1),
        tier=row["tier"],
        position_multiplier=row["position_multiplier"],
        order_id=order.order_id,
        quantity=order.quantity,
        stop_loss=order.stop_loss,
        take_profit=order.take_profit,
        model_version=str(row["model_version"]) or None,
        champion_kind=None if kind is None else str(kind),
        shadow=False,
        reasons=reasons + order.reasons,
    )


def _same_order(ctx: LiveContext, row: OrderRow) -> OrderOutcome:
    """This version's order of this candle from an earlier run, sent again under its client order
    id if that run stopped before the broker confirmed it (else nothing changes)."""
    if row.submission_status == NEW:
        row = ctx.ledger.resubmit(row, ctx.broker)
    return OrderOutcome(
        [f"order {row.order_id} placed for this candle on an earlier run ({row.status})"],
        row.order_id,
        row.quantity,
        row.stop_loss,
        row.take_profit,
    )


def _record(ctx: LiveContext, decision: LiveDecision) -> SignalReport:
    """Store the decision in the ledger (a refusal too); its row of the report."""
    record, report = signal_rows(ctx, decision)
    ctx.ledger.record_signal(record)
    return report


def signal_rows(ctx: LiveContext, decision: LiveDecision) -> tuple[SignalRecord, SignalReport]:
    """A decision's ledger row and report row (``trading.predict`` reports without storing)."""
    d, model, scored, signal = decision, decision.model, decision.scored, decision.signal
    ts = scored.ts if scored is not None else _last_ts(ctx.store, d.symbol, d.timeframe, ctx.now)
    kind = None if model is None or d.shadow else model.champion_kind
    reasons = d.reasons if model is None else d.reasons + model.notes
    components = None
    if signal is not None or model is not None:  # a refusal's reasons are stored too
        components = (signal.to_dict() if signal is not None else {}) | {"reasons": reasons}
        components |= {} if kind is None else {"champion_kind": kind}
    probability = None if scored is None else scored.vote.probability
    record = SignalRecord(
        d.symbol,
        d.timeframe,
        ts,
        d.model_name,
        "" if model is None else model.version,
        d.status,
        d.shadow,
        action=None if signal is None else int(signal.side),
        probability=probability,
        weight=None if signal is None else signal.weight,
        tier=None if signal is None else signal.tier.value,
        position_multiplier=None if signal is None else signal.multiplier,
        components=components,
        explanation=None if scored is None else scored.explanation,
    )
    order = d.order or OrderOutcome([])
    return record, SignalReport(
        symbol=d.symbol,
        timeframe=d.timeframe,
        ts=ts,
        status=d.status,
        action=None if signal is None else signal.side.name,
        probability=probability,
        weight=None if signal is None else round(signal.weight, 1),
        tier=None if signal is None else signal.tier.value,
        position_multiplier=None if signal is None else signal.multiplier,
        order_id=order.order_id,
        quantity=order.quantity,
        stop_loss=order.stop_loss,
        take_profit=order.take_profit,
        model_version=None if model is None else model.version or None,
        champion_kind=kind,
        shadow=d.shadow,
        reasons=reasons,
    )


def _last_ts(store: CandleStore, symbol: str, timeframe: str, now: datetime) -> datetime:
    """The candle a refusal is about: the newest stored one, else (none, or the file cannot be
    read: the refusal says why) the current bar."""
    try:
        last = store.last_ts(symbol, timeframe)
    except CandleflowError:
        last = None
    return as_utc(last) if last is not None else parse_timeframe(timeframe).floor(as_utc(now))


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a report's reason, a table cell)."""
    return " ".join(str(exc).split()) or type(exc).__name__
