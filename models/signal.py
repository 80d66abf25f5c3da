"""The decision layer's first half: the families' vote, a 0–100 signal weight from named
components, a recommendation tier and a position multiplier. Pure functions of plain inputs.

* **Vote** (:func:`vote`): ``models.ensemble.combine`` on one bar. The models are trained on
  "the long trade wins", so a vote is BUY or FLAT, never SELL; ``Side.SELL`` and the SELL tiers
  exist for a future symmetric model, which would build its own :class:`Vote`.
* **Weight** = 100 × Σ wᵢ·scoreᵢ / Σ wᵢ over the components (``[signals.weights]``), each score in
  [0, 1]: ``confidence`` = (p − threshold) / ``confidence_margin``; ``agreement`` = share of
  families whose own vote matches the decision (by training weight for ``weighted``, by count
  for ``majority``); ``regime`` (:func:`volatility_regime`); ``higher_tf`` = 0.5 + (p_htf −
  threshold_htf) / (2·margin), i.e. 0.5 when the higher timeframe's model sits at its threshold;
  ``risk`` = ``RiskState.score``; ``tradingview`` (:func:`alert_score`) = 0.5 + (hit rate −
  0.5) × agreement of the newest fresh TradingView alert, never an order on its own. All clipped
  to [0, 1]. An absent optional component (regime, higher timeframe, alert) is marked
  ``missing``; by default its weight is spread over the others (``renormalise``: no absent input
  pulls every signal towards the middle), or it scores 0.5.
* **Tier**: AVOID when trading is halted, or the risk or regime score is below its ``avoid_*``
  floor; else a flat vote, or a bar off the model's events (CUSUM filter), is NEUTRAL; else BUY
  from ``buy_weight``, STRONG_BUY from ``strong_weight`` (SELL tiers alike), and NEUTRAL below
  ``buy_weight``.
* **Multiplier** rises linearly from ``min_multiplier`` at ``buy_weight`` to ``max_multiplier`` at
  100; it is 0 on a signal that is not an order (NEUTRAL, AVOID).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import polars as pl

from core.feature_spec import LabelSpec
from core.settings_trading import SignalSettings
from features.labels import volatility
from models.ensemble import Ensemble, Method, combine
from models.risk import OrderRequest, RiskState

MIN_REGIME_BARS = 20  # fewer finite σ values than this: no regime reading


class Side(IntEnum):
    SELL = -1
    FLAT = 0
    BUY = 1


class Tier(StrEnum):
    STRONG_BUY = "STRONG_BUY"
    BUY = "BUY"
    NEUTRAL = "NEUTRAL"
    SELL = "SELL"
    STRONG_SELL = "STRONG_SELL"
    AVOID = "AVOID"


ORDER_TIERS = frozenset({Tier.STRONG_BUY, Tier.BUY, Tier.SELL, Tier.STRONG_SELL})


@dataclass(frozen=True)
class Vote:
    """The ensemble's decision on one bar. ``weights``: the families' weights as used for
    agreement (normalised training weights for ``weighted``, equal for ``majority``)."""

    side: Side
    probability: float
    threshold: float
    method: Method
    min_agree: int
    families: Mapping[str, float]
    weights: Mapping[str, float]
    agreeing: tuple[str, ...]

    @property
    def margin(self) -> float:
        """How far the combined probability is above the threshold (negative: below)."""
        return self.probability - self.threshold

    @property
    def agreement(self) -> float:
        """Share of the families (by ``weights``) whose own vote matches ``side``."""
        return sum(self.weights[name] for name in self.agreeing)


def _check_vote(
    probas: Mapping[str, float], weights: Mapping[str, float], method: str, threshold: float
) -> None:
    if not probas:
        raise ValueError("no family probabilities to vote with")
    if method not in ("weighted", "majority"):
        raise ValueError(f"unknown ensemble method {method!r} (allowed: weighted, majority)")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    bad = {n: p for n, p in probas.items() if not 0.0 <= float(p) <= 1.0}  # NaN fails too
    if bad:
        raise ValueError(f"family probabilities must be in [0, 1]: {bad}")
    if method == "weighted":
        missing = sorted(set(probas) - set(weights))
        if missing:
            raise ValueError(
                f"no training weight for family(ies) {missing}; have {sorted(weights)}"
            )
        used = [float(weights[n]) for n in probas]
        if not all(math.isfinite(w) and w >= 0 for w in used) or sum(used) <= 0:
            raise ValueError(f"weights must be ≥ 0 with a positive sum, got {dict(weights)}")


def vote(
    probas: Mapping[str, float],
    weights: Mapping[str, float],
    method: Method,
    threshold: float,
    min_agree: int,
) -> Vote:
    """BUY or FLAT from the families' P(long wins) (``models.ensemble.combine`` on one bar)."""
    _check_vote(probas, weights, method, threshold)
    if min_agree < 1:
        raise ValueError(f"min_agree must be ≥ 1, got {min_agree}")
    names = list(probas)
    p, long = combine(
        {n: np.array([float(probas[n])]) for n in names},
        dict(weights),
        method,
        threshold,
        min_agree,
    )
    side = Side.BUY if bool(long[0]) else Side.FLAT
    if method == "weighted":
        total = sum(float(weights[n]) for n in names)
        used = {n: float(weights[n]) / total for n in names}
    else:
        used = {n: 1.0 / len(names) for n in names}
    agreeing = tuple(n for n in names if (probas[n] >= threshold) == (side is Side.BUY))
    return Vote(
        side=side,
        probability=float(p[0]),
        threshold=threshold,
        method=method,
        min_agree=min_agree,
        families={n: float(probas[n]) for n in names},
        weights=used,
        agreeing=agreeing,
    )


def vote_ensemble(ensemble: Ensemble, probas: Mapping[str, float]) -> Vote:
    """:func:`vote` with the trained ensemble's weights, method, threshold and ``min_agree``."""
    return vote(probas, ensemble.weights, ensemble.method, ensemble.threshold, ensemble.min_agree)


@dataclass(frozen=True)
class RegimeReading:
    """The current σ ranked among the last ``bars`` finite σ values (``percentile``: the share of
    them ≤ the current one) and the regime score from that rank."""

    sigma: float
    percentile: float
    score: float
    bars: int


def regime_score(percentile: float, low: float, high: float) -> float:
    """1 inside [low, high]; falling linearly to 0 at percentile 0 (a market too quiet for the
    costs) and at percentile 1 (volatility beyond anything recently seen)."""
    if percentile < low:
        return max(percentile / low, 0.0)
    if percentile > high:
        return max((1.0 - percentile) / (1.0 - high), 0.0)
    return 1.0


def volatility_regime(
    sigma: Sequence[float] | np.ndarray, lookback: int, low: float = 0.2, high: float = 0.8
) -> RegimeReading | None:
    """Regime of the last bar of ``sigma`` (per-bar σ, oldest first, e.g. from
    ``features.labels.volatility``) against the last ``lookback`` bars, itself included. None
    when the last σ is unknown or fewer than ``MIN_REGIME_BARS`` values are finite."""
    values = np.asarray(sigma, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values[-1]):
        return None
    window = values[-lookback:]
    window = window[np.isfinite(window)]
    if window.size < MIN_REGIME_BARS:
        return None
    current = float(values[-1])
    percentile = float(np.mean(window <= current))
    return RegimeReading(current, percentile, regime_score(percentile, low, high), window.size)


def regime_from_candles(
    frame: pl.DataFrame, labels: LabelSpec, settings: SignalSettings
) -> RegimeReading | None:
    """:func:`volatility_regime` of the labels' σ over ``frame`` (candles up to the signal bar;
    give it ``regime_lookback`` + ``labels.vol_window`` bars for a full window)."""
    return regime_from_sigma(volatility(frame, labels), settings)


def regime_from_sigma(
    sigma: Sequence[float] | np.ndarray, settings: SignalSettings
) -> RegimeReading | None:
    """:func:`volatility_regime` of ``sigma`` with the configured lookback and percentiles."""
    return volatility_regime(
        sigma, settings.regime_lookback, settings.regime_low_pct, settings.regime_high_pct
    )


@dataclass(frozen=True)
class AlertOpinion:
    """The newest TradingView alert of a symbol × timeframe still fresh at decision time, with its
    strategy's resolved BUY hit rate there (``trading.alerts.hit_rates``; NaN: none resolved)."""

    side: Side
    hit_rate: float
    resolved: int
    strategy: str
    at: datetime

    @property
    def raw(self) -> float | None:
        """The component's raw input: the hit rate signed by the alert's side (−0.6: a SELL
        alert from a strategy right 60 % of the time; 0: a flat / close alert)."""
        return int(self.side) * self.hit_rate if math.isfinite(self.hit_rate) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": int(self.side),
            "action": self.side.name,
            "hit_rate": self.hit_rate if math.isfinite(self.hit_rate) else None,
            "resolved": self.resolved,
            "strategy": self.strategy,
            "at": self.at.isoformat(),
        }


def alert_score(alert: AlertOpinion | None, side: Side, min_resolved: int) -> float | None:
    """The ``tradingview`` component: 0.5 + (hit_rate − 0.5) × agreement, where agreement is
    the alert's side × the vote's side: +1 on the same side, −1 on opposite sides, 0 for a flat
    / close alert (or a flat vote). An agreeing alert from a strategy right 60 % of the time
    scores 0.6, an opposing one 0.4; an agreeing alert from a strategy below 50 % lowers the
    weight. None (missing) without an alert, or when its strategy has fewer than
    ``min_resolved`` resolved alerts: a hit rate not yet learned is no evidence."""
    if alert is None or alert.resolved < min_resolved or not math.isfinite(alert.hit_rate):
        return None
    agreement = int(alert.side) * int(side)
    return _clip01(0.5 + (alert.hit_rate - 0.5) * agreement)


@dataclass(frozen=True)
class Component:
    """One named part of the signal weight: its raw input, its score in [0, 1], the configured
    weight and the effective one (normalised over the components that count)."""

    name: str
    raw: float | None
    score: float | None
    configured_weight: float
    weight: float
    missing: bool = False

    @property
    def points(self) -> float:
        """What it adds to the 0–100 signal weight."""
        return 100.0 * self.weight * (self.score or 0.0)


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _components(
    vote_: Vote,
    settings: SignalSettings,
    risk: RiskState,
    regime: RegimeReading | None,
    higher_tf: Vote | None,
    alert: AlertOpinion | None,
) -> tuple[Component, ...]:
    margin = settings.confidence_margin
    htf_raw = None if higher_tf is None else higher_tf.probability
    htf_score = None
    if higher_tf is not None:
        htf_score = _clip01(0.5 + higher_tf.margin / (2 * margin))
    parts = [  # name, raw, score (None: missing)
        ("confidence", vote_.margin, _clip01(vote_.margin / margin)),
        ("agreement", vote_.agreement, _clip01(vote_.agreement)),
        (
            "regime",
            None if regime is None else regime.percentile,
            None if regime is None else regime.score,
        ),
        ("higher_tf", htf_raw, htf_score),
        ("risk", risk.usage, risk.score),
        (
            "tradingview",
            None if alert is None else alert.raw,
            alert_score(alert, vote_.side, settings.alert_min_resolved),
        ),
    ]
    neutral = settings.missing_component == "neutral"
    weights = settings.weights.model_dump()
    counted = [neutral or score is not None for _, _, score in parts]
    total = sum(weights[name] for (name, _, _), c in zip(parts, counted, strict=True) if c)
    return tuple(
        Component(
            name=name,
            raw=raw,
            score=0.5 if score is None and neutral else score,
            configured_weight=weights[name],
            weight=weights[name] / total if c and total > 0 else 0.0,
            missing=score is None,
        )
        for (name, raw, score), c in zip(parts, counted, strict=True)
    )


def position_multiplier(weight: float, settings: SignalSettings) -> float:
    """``min_multiplier`` at ``buy_weight`` (and below) rising linearly to ``max_multiplier`` at
    100: monotone in the weight, always within the bounds."""
    span = 100.0 - settings.buy_weight
    x = 1.0 if span <= 0 else _clip01((weight - settings.buy_weight) / span)
    return settings.min_multiplier + (settings.max_multiplier - settings.min_multiplier) * x


def avoid_reasons(
    risk: RiskState, regime: RegimeReading | None, settings: SignalSettings
) -> tuple[str, ...]:
    """Why the signal must not trade whatever the vote: halts, risk state, regime."""
    reasons = list(risk.halts)
    if not risk.halted and risk.score < settings.avoid_risk_below:
        reasons.append(
            f"risk state {risk.score:.2f} < {settings.avoid_risk_below:.2f}: {risk.usage:.0%} of a"
            f" loss limit used (daily loss {risk.daily_loss_pct:.2f}%,"
            f" drawdown {risk.drawdown_pct:.2f}%)"
        )
    if regime is not None and regime.score < settings.avoid_regime_below:
        reasons.append(
            f"volatility regime {regime.score:.2f} < {settings.avoid_regime_below:.2f}: σ at the"
            f" {regime.percentile:.1%} percentile of the last {regime.bars} bars"
        )
    return tuple(reasons)


def recommend(side: Side, weight: float, avoid: bool, settings: SignalSettings) -> Tier:
    """The tier from the side, the 0–100 weight and whether anything forbids trading."""
    if avoid:
        return Tier.AVOID
    if side is Side.FLAT or weight < settings.buy_weight:
        return Tier.NEUTRAL
    strong = weight >= settings.strong_weight
    if side is Side.BUY:
        return Tier.STRONG_BUY if strong else Tier.BUY
    return Tier.STRONG_SELL if strong else Tier.SELL


@dataclass(frozen=True)
class Signal:
    """The decision on one bar, with every component visible (``to_dict`` for the signals table)."""

    vote: Vote
    weight: float
    tier: Tier
    multiplier: float
    components: tuple[Component, ...]
    reasons: tuple[str, ...]
    alert: AlertOpinion | None = None  # the TradingView alert the weight was given, if any

    @property
    def side(self) -> Side:
        return self.vote.side

    @property
    def is_order(self) -> bool:
        return self.tier in ORDER_TIERS

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"no component {name!r}; have {[c.name for c in self.components]}")

    def order(self, symbol: str, entry_price: float, sigma: float) -> OrderRequest | None:
        """The order for ``models.risk.decide``, or None when the signal is not an order."""
        if not self.is_order:
            return None
        return OrderRequest(symbol, int(self.side), entry_price, sigma, self.multiplier)

    def to_dict(self) -> dict[str, Any]:
        v = self.vote
        components = {c.name: asdict(c) | {"points": c.points} for c in self.components}
        if self.alert is not None:  # which alert, from which strategy, on what record
            components["tradingview"]["alert"] = self.alert.to_dict()
        return {
            "side": int(v.side),
            "action": v.side.name,
            "tier": self.tier.value,
            "weight": self.weight,
            "multiplier": self.multiplier,
            "probability": v.probability,
            "threshold": v.threshold,
            "method": v.method,
            "min_agree": v.min_agree,
            "families": dict(v.families),
            "agreeing": list(v.agreeing),
            "components": components,
            "reasons": list(self.reasons),
        }


def _neutral_reason(vote_: Vote, weight: float, settings: SignalSettings) -> str | None:
    if vote_.side is Side.FLAT:
        n = len(vote_.families)
        votes = sum(p >= vote_.threshold for p in vote_.families.values())
        return (
            f"flat: probability {vote_.probability:.3f} vs threshold {vote_.threshold:.3f},"
            f" {votes} of {n} families at or above it ({vote_.method}, min_agree"
            f" {vote_.min_agree})"
        )
    if weight < settings.buy_weight:
        return f"weight {weight:.1f} < {settings.buy_weight:g} needed to trade"
    return None


def score_signal(
    vote_: Vote,
    settings: SignalSettings,
    risk: RiskState,
    *,
    regime: RegimeReading | None = None,
    higher_tf: Vote | None = None,
    alert: AlertOpinion | None = None,
    off_event: str | None = None,
) -> Signal:
    """Weight, tier and multiplier of a vote (module docstring). ``higher_tf``: the vote of the
    higher timeframe's model on its latest closed bar, if there is one; ``alert``: the newest
    fresh TradingView alert, if there is one (it only weighs the vote: a flat vote stays
    NEUTRAL whatever the alert). ``off_event``: why the bar is not one the model was trained to
    score (a CUSUM filter's non-event): NEUTRAL."""
    components = _components(vote_, settings, risk, regime, higher_tf, alert)
    weight = min(max(sum(c.points for c in components), 0.0), 100.0)
    avoid = avoid_reasons(risk, regime, settings)
    tier = recommend(vote_.side, weight, bool(avoid), settings)
    reasons = list(avoid)
    if off_event and not avoid:
        tier = Tier.NEUTRAL
        reasons.append(off_event)
    neutral = _neutral_reason(vote_, weight, settings)
    if neutral and not avoid:
        reasons.append(neutral)
    multiplier = position_multiplier(weight, settings) if tier in ORDER_TIERS else 0.0
    return Signal(vote_, weight, tier, multiplier, components, tuple(reasons), alert)
