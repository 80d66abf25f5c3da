"""When a model should be retrained before its weekly schedule: enough newly labelled samples since
its newest training's data ended, or a champion whose live hit rate has decayed. The decision
(:func:`decide_retrain`) is a pure function of the evidence (:func:`gather_evidence`), which reads
the registry (versions and their data-end tags), the candle store and the live ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.feature_spec import LabelSpec
from core.reports import RetrainReport
from core.settings_orchestration import RetrainSettings
from core.store import CandleStore
from core.timeframes import as_utc
from models.registry import CHAMPION, alias_version
from models.tracking import registered_name
from trading.ledger import Ledger
from trading.shadow import BUY, known_outcomes, signal_outcomes

NEW_SAMPLES, DECAY, NO_MODEL, NONE = "new_samples", "decay", "no_model", "none"


@dataclass(frozen=True)
class RetrainEvidence:
    """What the decision looks at, for one symbol × timeframe."""

    symbol: str
    timeframe: str
    champion: str | None = None  # version
    newest: str | None = None  # the newest registered version (champion or not)
    data_end: datetime | None = None  # the newest version's last labelled sample
    trained_hours_ago: float | None = None  # since the newest version was registered
    new_samples: int = 0  # known outcomes after data_end (all of them without a version)
    live_resolved: int = 0  # the champion's live BUY signals whose outcome is known
    live_wins: int = 0

    @property
    def live_hit_rate(self) -> float | None:
        return self.live_wins / self.live_resolved if self.live_resolved else None


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: str  # new_samples | decay | no_model | none
    reasons: list[str] = field(default_factory=list)


def decide_retrain(evidence: RetrainEvidence, cfg: RetrainSettings) -> RetrainDecision:
    """Retrain on enough new samples or on live decay, never within the cooldown of the newest
    training (a refused challenger is not retrained every hour on the same data)."""
    e = evidence
    samples = f"{e.new_samples:,} labelled samples"
    if e.newest is None:
        if e.new_samples >= cfg.min_new_samples:
            return RetrainDecision(True, NO_MODEL, [f"no model yet; {samples} available"])
        return RetrainDecision(
            False, NONE, [f"no model yet; {samples} < {cfg.min_new_samples:,} to train on"]
        )
    if e.trained_hours_ago is not None and e.trained_hours_ago < cfg.cooldown_hours:
        return RetrainDecision(
            False,
            NONE,
            [
                f"v{e.newest} trained {e.trained_hours_ago:.1f} h ago"
                f" (cooldown {cfg.cooldown_hours:g} h)"
            ],
        )
    since = f"since v{e.newest}'s data ended" + (
        f" ({e.data_end:%Y-%m-%d %H:%M} UTC)" if e.data_end else ""
    )
    if e.new_samples >= cfg.min_new_samples:
        return RetrainDecision(True, NEW_SAMPLES, [f"{samples} {since} ≥ {cfg.min_new_samples:,}"])
    reasons = [f"{samples} {since} < {cfg.min_new_samples:,}"]
    rate = e.live_hit_rate
    if e.champion is None:
        reasons.append("no champion: no live hit rate")
    elif e.live_resolved < cfg.min_resolved_signals:
        reasons.append(
            f"champion v{e.champion}: {e.live_resolved} resolved live BUYs"
            f" < {cfg.min_resolved_signals} to judge its hit rate"
        )
    elif rate is not None and rate < cfg.min_live_hit_rate:
        reason = (
            f"champion v{e.champion}: live hit rate {rate:.1%} over {e.live_resolved} resolved"
            f" BUYs < {cfg.min_live_hit_rate:.0%}"
        )
        return RetrainDecision(True, DECAY, [reason])
    else:
        reasons.append(
            f"champion v{e.champion}: live hit rate {rate:.1%} over {e.live_resolved} resolved"
            f" BUYs ≥ {cfg.min_live_hit_rate:.0%}"
        )
    return RetrainDecision(False, NONE, reasons)


def gather_evidence(
    client: MlflowClient,
    store: CandleStore,
    ledger: Ledger | None,
    symbol: str,
    timeframe: str,
    labels: LabelSpec,
    now: datetime,
) -> RetrainEvidence:
    """The evidence for one symbol × timeframe: registry versions, new outcomes, live results.
    Samples are counted under ``labels`` (the label spec the next training will use)."""
    name = registered_name(symbol, timeframe)
    versions = _versions(client, name)
    champion = alias_version(client, name, CHAMPION) if versions else None
    newest = max(versions, key=lambda v: int(v.version)) if versions else None
    data_end = _data_end(newest) if newest is not None else None
    outcomes = known_outcomes(store.read(symbol, timeframe), timeframe, labels)
    if data_end is not None:
        outcomes = outcomes.filter(pl.col("ts") > data_end)
    resolved = wins = 0
    if champion is not None and ledger is not None:
        resolved, wins = _live_results(
            ledger, store, symbol, timeframe, str(champion.version), labels
        )
    hours = None
    if newest is not None and newest.creation_timestamp:
        hours = (as_utc(now).timestamp() * 1000 - newest.creation_timestamp) / 3_600_000
    return RetrainEvidence(
        symbol,
        timeframe,
        champion=None if champion is None else str(champion.version),
        newest=None if newest is None else str(newest.version),
        data_end=data_end,
        trained_hours_ago=None if hours is None else max(0.0, hours),
        new_samples=outcomes.height,
        live_resolved=resolved,
        live_wins=wins,
    )


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _data_end(version: ModelVersion) -> datetime | None:
    """The last labelled sample the version was trained and evaluated on (its holdout's end)."""
    text = (version.tags or {}).get("oos_end")
    return as_utc(datetime.fromisoformat(text)) if text else None


def _live_results(
    ledger: Ledger,
    store: CandleStore,
    symbol: str,
    timeframe: str,
    version: str,
    labels: LabelSpec,
) -> tuple[int, int]:
    """The champion version's resolved live BUYs and its wins (take-profit first)."""
    signals = ledger.signals(symbol=symbol, shadow=False)
    signals = signals.filter(
        (pl.col("timeframe") == timeframe) & (pl.col("model_version") == version)
    )
    if signals.is_empty():
        return 0, 0
    candles = {(symbol, timeframe): store.read(symbol, timeframe)}
    outcomes = signal_outcomes(signals, candles, labels)
    buys = outcomes.filter((pl.col("action") == BUY) & pl.col("label").is_not_null())
    return buys.height, int((buys["label"] == 1).sum())


def report_row(evidence: RetrainEvidence, decision: RetrainDecision) -> RetrainReport:
    """One row of the retrain check's report (CLI ``--json``, Prefect artifact)."""
    e, rate = evidence, evidence.live_hit_rate
    hours = e.trained_hours_ago
    return RetrainReport(
        symbol=e.symbol,
        timeframe=e.timeframe,
        champion=e.champion,
        newest=e.newest,
        data_end=e.data_end,
        new_samples=e.new_samples,
        live_resolved=e.live_resolved,
        live_hit_rate=None if rate is None else round(rate, 4),
        trained_hours_ago=None if hours is None else round(hours, 1),
        retrain=decision.retrain,
        trigger=decision.trigger,
        reasons=decision.reasons,
    )
