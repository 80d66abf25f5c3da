from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.feature_spec import LabelSpec
from core.settings_trading import ComponentWeights, RiskSettings, SignalSettings
from models.ensemble import Ensemble, combine
from models.risk import AccountState, RiskState, decide
from models.signal import (
    AlertOpinion,
    RegimeReading,
    Side,
    Tier,
    alert_score,
    position_multiplier,
    recommend,
    regime_from_candles,
    regime_score,
    score_signal,
    volatility_regime,
    vote,
    vote_ensemble,
)

# The arithmetic below was worked out with a higher-timeframe weight of 0.15 (live's default is
# 0: the gate's backtest cannot see another model's vote).
WEIGHTS = ComponentWeights(higher_tf=0.15)
DEFAULTS = SignalSettings(weights=WEIGHTS)
CALM = RiskState(daily_loss_pct=0.0, drawdown_pct=0.0, usage=0.0)
MID_REGIME = RegimeReading(sigma=0.01, percentile=0.5, score=1.0, bars=100)


# --- vote --------------------------------------------------------------------------------------


def test_weighted_vote_and_its_weighted_agreement() -> None:
    probas = {"a": 0.9, "b": 0.4, "c": 0.5}
    result = vote(probas, {"a": 2.0, "b": 1.0, "c": 1.0}, "weighted", 0.55, 2)
    assert result.side is Side.BUY
    assert result.probability == pytest.approx(0.45 + 0.1 + 0.125)
    assert result.agreeing == ("a",)
    assert result.agreement == pytest.approx(0.5)  # a carries half the (normalised) weight


def test_majority_vote_needs_min_agree_and_counts_heads() -> None:
    probas = {"a": 0.9, "b": 0.4, "c": 0.5}
    flat = vote(probas, {}, "majority", 0.55, 2)
    assert flat.side is Side.FLAT and flat.probability == pytest.approx(0.6)
    assert flat.agreeing == ("b", "c") and flat.agreement == pytest.approx(2 / 3)
    buy = vote({"a": 0.6, "b": 0.7, "c": 0.1}, {}, "majority", 0.55, 2)
    assert buy.side is Side.BUY and buy.agreement == pytest.approx(2 / 3)
    # The same probabilities, weighted towards c: flat, and c's weight is the agreement.
    weighted = vote({"a": 0.6, "b": 0.7, "c": 0.1}, {"a": 1, "b": 1, "c": 8}, "weighted", 0.55, 2)
    assert weighted.side is Side.FLAT and weighted.agreement == pytest.approx(0.8)


def test_vote_ensemble_uses_the_trained_rule() -> None:
    ensemble = Ensemble(
        models={}, weights={"a": 0.5, "b": 0.5}, feature_columns=[], threshold=0.6, min_agree=2
    )
    result = vote_ensemble(ensemble, {"a": 0.7, "b": 0.52})
    assert result.side is Side.BUY and result.threshold == 0.6 and result.method == "weighted"
    ensemble.method = "majority"
    assert vote_ensemble(ensemble, {"a": 0.7, "b": 0.52}).side is Side.FLAT


_proba = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=200, deadline=None)
@given(
    probas=st.dictionaries(st.sampled_from("abcde"), _proba, min_size=1),
    raw_weights=st.lists(st.floats(min_value=0.01, max_value=10), min_size=5, max_size=5),
    method=st.sampled_from(["weighted", "majority"]),
    threshold=st.floats(min_value=0.05, max_value=0.95),
    min_agree=st.integers(min_value=1, max_value=6),
)
def test_vote_matches_the_ensemble_and_never_sells(
    probas: dict[str, float],
    raw_weights: list[float],
    method: str,
    threshold: float,
    min_agree: int,
) -> None:
    weights = dict(zip("abcde", raw_weights, strict=True))
    result = vote(probas, weights, method, threshold, min_agree)  # type: ignore[arg-type]
    arrays = {k: np.array([v]) for k, v in probas.items()}
    p, long = combine(arrays, weights, method, threshold, min_agree)  # type: ignore[arg-type]
    assert result.side is (Side.BUY if long[0] else Side.FLAT)
    assert result.probability == pytest.approx(p[0])
    assert 0.0 <= result.agreement <= 1.0 + 1e-12


def test_vote_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no training weight"):
        vote({"a": 0.6, "b": 0.6}, {"a": 1.0}, "weighted", 0.55, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vote({"a": float("nan")}, {"a": 1.0}, "weighted", 0.55, 1)
    with pytest.raises(ValueError, match="no family"):
        vote({}, {}, "majority", 0.55, 1)
    with pytest.raises(ValueError, match="positive sum"):
        vote({"a": 0.6}, {"a": 0.0}, "weighted", 0.55, 1)
    with pytest.raises(ValueError, match="unknown ensemble method"):
        vote({"a": 0.6}, {"a": 1.0}, "mean", 0.55, 1)  # type: ignore[arg-type]


# --- regime ------------------------------------------------------------------------------------


def test_regime_ranks_the_last_sigma_in_its_window() -> None:
    history = np.arange(1, 101) / 1000  # 0.001 … 0.100
    middle = volatility_regime(np.append(history, 0.0505), lookback=101)
    assert middle is not None and middle.percentile == pytest.approx(51 / 101)
    assert middle.score == 1.0 and middle.bars == 101
    highest = volatility_regime(np.append(history, 0.5), lookback=101)
    assert highest is not None and highest.percentile == 1.0 and highest.score == 0.0
    quiet = volatility_regime(np.append(history, 0.0095), lookback=101)  # 10 of 101 ≤ it
    assert quiet is not None and quiet.score == pytest.approx(10 / 101 / 0.2)
    short = volatility_regime(np.append(history, 0.5), lookback=50)  # only the last 50 count
    assert short is not None and short.bars == 50


def test_regime_score_shape() -> None:
    assert regime_score(0.1, 0.2, 0.8) == pytest.approx(0.5)
    assert regime_score(0.9, 0.2, 0.8) == pytest.approx(0.5)
    assert regime_score(0.2, 0.2, 0.8) == regime_score(0.8, 0.2, 0.8) == 1.0


def test_regime_is_missing_without_enough_history() -> None:
    assert volatility_regime([0.01] * 10, lookback=100) is None
    assert volatility_regime([*[0.01] * 50, float("nan")], lookback=100) is None
    assert volatility_regime([], lookback=100) is None


def test_regime_from_candles_sees_a_volatility_burst() -> None:
    rng = np.random.default_rng(3)
    steps = np.concatenate([rng.normal(0, 0.001, 400), rng.normal(0, 0.02, 15)])
    frame = pl.DataFrame({"close": 100 * np.exp(np.cumsum(steps))})
    labels = LabelSpec(vol_window=20)
    burst = regime_from_candles(frame, labels, DEFAULTS)
    calm = regime_from_candles(frame.head(400), labels, DEFAULTS)
    assert burst is not None and burst.percentile > 0.98
    assert burst.score < DEFAULTS.avoid_regime_below
    assert calm is not None and calm.score > 0.5


# --- weight, components, tiers, multiplier ---------------------------------------------------


def _strong_vote() -> tuple:
    main = vote({"a": 0.7, "b": 0.6}, {"a": 0.5, "b": 0.5}, "weighted", 0.55, 2)  # p = 0.65
    higher = vote({"a": 0.6}, {"a": 1.0}, "weighted", 0.55, 1)  # 0.05 above its threshold
    return main, higher


def test_weight_is_the_weighted_sum_of_visible_components() -> None:
    main, higher = _strong_vote()
    risk = RiskState(1.5, 0.0, 0.5)
    signal = score_signal(main, DEFAULTS, risk, regime=MID_REGIME, higher_tf=higher)
    scores = {c.name: c.score for c in signal.components if c.name != "tradingview"}
    assert signal.component("tradingview").score is None  # no alert: missing
    assert scores == pytest.approx(
        {"confidence": 0.1 / 0.15, "agreement": 1.0, "regime": 1.0, "higher_tf": 2 / 3, "risk": 0.5}
    )
    expected = 100 * (0.35 * 2 / 3 + 0.2 + 0.15 + 0.15 * 2 / 3 + 0.15 * 0.5)
    assert signal.weight == pytest.approx(expected)  # 75.83
    assert signal.tier is Tier.STRONG_BUY and signal.is_order
    assert signal.multiplier == pytest.approx(0.25 + 1.75 * (expected - 40) / 60)
    assert signal.component("confidence").raw == pytest.approx(0.1)
    assert signal.component("risk").raw == 0.5
    data = json.loads(json.dumps(signal.to_dict()))
    assert set(data["components"]) == {
        *("confidence", "agreement", "regime", "higher_tf", "risk", "tradingview")
    }
    assert data["components"]["tradingview"]["missing"]  # no alert given
    assert data["components"]["agreement"] == {
        "name": "agreement",
        "raw": 1.0,
        "score": 1.0,
        "configured_weight": 0.2,
        "weight": 0.2,
        "missing": False,
        "points": pytest.approx(20.0),
    }
    assert data["tier"] == "STRONG_BUY" and data["action"] == "BUY"


def test_missing_higher_timeframe_renormalises_or_scores_neutral() -> None:
    main, _ = _strong_vote()
    risk = RiskState(1.5, 0.0, 0.5)
    signal = score_signal(main, DEFAULTS, risk, regime=MID_REGIME)
    htf = signal.component("higher_tf")
    assert htf.missing and htf.score is None and htf.weight == 0 and htf.configured_weight == 0.15
    assert sum(c.weight for c in signal.components) == pytest.approx(1.0)
    assert signal.component("confidence").weight == pytest.approx(0.35 / 0.85)
    assert signal.weight == pytest.approx(100 * (0.35 * 2 / 3 + 0.2 + 0.15 + 0.075) / 0.85)
    neutral = score_signal(
        main, SignalSettings(weights=WEIGHTS, missing_component="neutral"), risk, regime=MID_REGIME
    )
    assert neutral.component("higher_tf").score == 0.5
    assert neutral.component("higher_tf").missing and neutral.component("higher_tf").weight == 0.15
    assert neutral.weight == pytest.approx(100 * (0.35 * 2 / 3 + 0.2 + 0.15 + 0.075 + 0.075))
    no_regime = score_signal(main, DEFAULTS, risk)
    assert no_regime.component("regime").missing
    assert sum(c.weight for c in no_regime.components) == pytest.approx(1.0)


def test_higher_timeframe_confirmation_moves_the_weight() -> None:
    main, _ = _strong_vote()
    agree = vote({"a": 0.8}, {"a": 1.0}, "weighted", 0.55, 1)
    disagree = vote({"a": 0.3}, {"a": 1.0}, "weighted", 0.55, 1)
    up = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME, higher_tf=agree)
    down = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME, higher_tf=disagree)
    assert up.component("higher_tf").score == 1.0 and down.component("higher_tf").score == 0.0
    assert up.weight - down.weight == pytest.approx(15.0)


def _alert(side: Side, hit_rate: float = 0.6, resolved: int = 25) -> AlertOpinion:
    return AlertOpinion(side, hit_rate, resolved, "breakout", datetime(2024, 5, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("alert_side", "vote_side", "hit_rate", "score"),
    [
        (Side.BUY, Side.BUY, 0.6, 0.6),  # agrees: its hit rate
        (Side.SELL, Side.BUY, 0.6, 0.4),  # opposes: its miss rate
        (Side.FLAT, Side.BUY, 0.6, 0.5),  # a close / flat alert says nothing about the side
        (Side.BUY, Side.FLAT, 0.9, 0.5),  # nor does a flat vote
        (Side.BUY, Side.BUY, 0.4, 0.4),  # a strategy wrong more often than right lowers it
        (Side.SELL, Side.BUY, 0.3, 0.7),  # … and raises it when it opposes
        (Side.BUY, Side.BUY, 1.0, 1.0),
    ],
)
def test_alert_score_is_its_hit_rate_signed_by_agreement(
    alert_side: Side, vote_side: Side, hit_rate: float, score: float
) -> None:
    assert alert_score(_alert(alert_side, hit_rate), vote_side, 20) == pytest.approx(score)


def test_alert_score_is_missing_without_an_alert_or_a_learned_hit_rate() -> None:
    assert alert_score(None, Side.BUY, 20) is None
    assert alert_score(_alert(Side.BUY, resolved=19), Side.BUY, 20) is None
    assert alert_score(_alert(Side.BUY, resolved=20), Side.BUY, 20) == pytest.approx(0.6)
    assert alert_score(_alert(Side.BUY, math.nan, 0), Side.BUY, 1) is None


def test_an_alert_moves_the_weight_only_when_weighted_and_learned() -> None:
    main, _ = _strong_vote()
    weighted = SignalSettings(weights=ComponentWeights(tradingview=0.3))
    signals = {
        name: score_signal(main, weighted, CALM, regime=MID_REGIME, alert=alert)
        for name, alert in {
            "none": None,
            "agree": _alert(Side.BUY, 0.8),
            "oppose": _alert(Side.SELL, 0.8),
            "unlearned": _alert(Side.BUY, 0.8, resolved=3),
        }.items()
    }
    tv = {name: s.component("tradingview") for name, s in signals.items()}
    assert tv["none"].missing and tv["unlearned"].missing and tv["unlearned"].raw == 0.8
    assert signals["unlearned"].weight == pytest.approx(signals["none"].weight)  # renormalised
    assert (tv["agree"].raw, tv["agree"].score) == pytest.approx((0.8, 0.8))
    assert (tv["oppose"].raw, tv["oppose"].score) == pytest.approx((-0.8, 0.2))
    share = 0.3 / 1.15  # the component's normalised weight
    assert signals["agree"].weight - signals["oppose"].weight == pytest.approx(100 * share * 0.6)
    data = json.loads(json.dumps(signals["agree"].to_dict()))
    assert data["components"]["tradingview"]["alert"] == {
        "side": 1,
        "action": "BUY",
        "hit_rate": 0.8,
        "resolved": 25,
        "strategy": "breakout",
        "at": "2024-05-01T12:00:00+00:00",
    }
    assert "alert" not in data["components"]["agreement"]
    # The default weight 0: an alert given changes nothing.
    plain = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME)
    given_ = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME, alert=_alert(Side.SELL, 0.9))
    assert given_.weight == pytest.approx(plain.weight) and given_.tier is plain.tier


def test_an_alert_never_trades_on_its_own() -> None:
    flat = vote({"a": 0.3}, {"a": 1}, "weighted", 0.55, 1)
    only_alerts = SignalSettings(
        weights=ComponentWeights(confidence=0, agreement=0, regime=0, risk=0, tradingview=1.0)
    )
    signal = score_signal(flat, only_alerts, CALM, alert=_alert(Side.BUY, 1.0, 500))
    assert signal.tier is Tier.NEUTRAL and not signal.is_order and signal.multiplier == 0.0
    assert signal.order("EURUSD", 1.1, 0.001) is None


def test_flat_vote_is_neutral_and_not_an_order() -> None:
    flat = vote({"a": 0.5, "b": 0.4}, {"a": 1, "b": 1}, "weighted", 0.55, 1)
    signal = score_signal(flat, DEFAULTS, CALM, regime=MID_REGIME)
    assert signal.tier is Tier.NEUTRAL and signal.multiplier == 0.0 and not signal.is_order
    assert signal.component("confidence").score == 0.0
    assert signal.reasons[0].startswith("flat: probability 0.450 vs threshold 0.550")
    assert signal.order("EURUSD", 1.1, 0.001) is None


def test_weak_buy_stays_neutral_with_a_reason() -> None:
    weak = vote({"a": 0.56, "b": 0.40}, {"a": 1, "b": 1}, "majority", 0.45, 1)
    high_bar = SignalSettings(buy_weight=90, strong_weight=95)
    signal = score_signal(weak, high_bar, CALM, regime=MID_REGIME)
    assert signal.side is Side.BUY and signal.tier is Tier.NEUTRAL
    assert "needed to trade" in signal.reasons[0]


def test_a_bar_off_the_models_events_is_neutral_with_its_reason() -> None:
    main, _ = _strong_vote()
    assert score_signal(main, DEFAULTS, CALM, regime=MID_REGIME).is_order
    off = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME, off_event="not a CUSUM event")
    assert off.tier is Tier.NEUTRAL and off.multiplier == 0.0 and not off.is_order
    assert off.reasons == ("not a CUSUM event",) and off.side is Side.BUY  # the vote is kept
    halted = RiskState(0.0, 0.0, 1.0, halts=("kill switch",))
    avoid = score_signal(main, DEFAULTS, halted, regime=MID_REGIME, off_event="not a CUSUM event")
    assert avoid.tier is Tier.AVOID and avoid.reasons == ("kill switch",)


def test_risk_state_and_regime_can_forbid_trading() -> None:
    main, _ = _strong_vote()
    stretched = RiskState(2.7, 0.0, 0.9)  # risk score 0.1 < 0.2
    signal = score_signal(main, DEFAULTS, stretched, regime=MID_REGIME)
    assert signal.tier is Tier.AVOID and signal.multiplier == 0.0
    assert signal.reasons[0].startswith("risk state 0.10 < 0.20: 90% of a loss limit used")
    halted = RiskState(3.1, 0.0, 1.03, halts=("daily loss 3.10% ≥ 3.00% limit",))
    assert score_signal(main, DEFAULTS, halted).reasons == ("daily loss 3.10% ≥ 3.00% limit",)
    wild = RegimeReading(0.05, 0.995, regime_score(0.995, 0.2, 0.8), 500)
    avoided = score_signal(main, DEFAULTS, CALM, regime=wild)
    assert (
        avoided.tier is Tier.AVOID and "99.5% percentile of the last 500 bars" in avoided.reasons[0]
    )
    flat = vote({"a": 0.1}, {"a": 1}, "weighted", 0.55, 1)
    assert score_signal(flat, DEFAULTS, stretched).tier is Tier.AVOID


@pytest.mark.parametrize(
    ("side", "weight", "tier"),
    [
        (Side.BUY, 39.999, Tier.NEUTRAL),
        (Side.BUY, 40.0, Tier.BUY),
        (Side.BUY, 69.999, Tier.BUY),
        (Side.BUY, 70.0, Tier.STRONG_BUY),
        (Side.SELL, 40.0, Tier.SELL),
        (Side.SELL, 70.0, Tier.STRONG_SELL),
        (Side.SELL, 10.0, Tier.NEUTRAL),
        (Side.FLAT, 100.0, Tier.NEUTRAL),
    ],
)
def test_tier_boundaries(side: Side, weight: float, tier: Tier) -> None:
    assert recommend(side, weight, False, DEFAULTS) is tier
    assert recommend(side, weight, True, DEFAULTS) is Tier.AVOID


def test_multiplier_endpoints() -> None:
    assert position_multiplier(0.0, DEFAULTS) == 0.25
    assert position_multiplier(40.0, DEFAULTS) == 0.25
    assert position_multiplier(70.0, DEFAULTS) == pytest.approx(1.125)
    assert position_multiplier(100.0, DEFAULTS) == 2.0
    custom = SignalSettings(min_multiplier=0.5, max_multiplier=1.0, buy_weight=50)
    assert position_multiplier(75.0, custom) == pytest.approx(0.75)


@given(
    a=st.floats(min_value=-10, max_value=110),
    b=st.floats(min_value=-10, max_value=110),
    buy=st.floats(min_value=0, max_value=100),
)
def test_multiplier_is_bounded_and_monotone(a: float, b: float, buy: float) -> None:
    s = SignalSettings(buy_weight=buy, strong_weight=max(buy, 70.0))
    low, high = sorted((a, b))
    m_low, m_high = position_multiplier(low, s), position_multiplier(high, s)
    assert 0.25 <= m_low <= m_high <= 2.0


def test_signal_to_order_to_risk_decision() -> None:
    main, higher = _strong_vote()
    signal = score_signal(main, DEFAULTS, CALM, regime=MID_REGIME, higher_tf=higher)
    order = signal.order("eur/usd", 100.0, 0.01)
    assert order is not None and order.multiplier == signal.multiplier and order.side == 1
    account = AccountState(10_000, 10_000, 10_000)
    sized = decide(order, account, RiskSettings(sizing="fixed_units"), LabelSpec())
    assert sized.approved and sized.quantity == pytest.approx(signal.multiplier)


def test_signal_settings_validation() -> None:
    with pytest.raises(ValidationError, match="strong_weight"):
        SignalSettings(buy_weight=80, strong_weight=60)
    with pytest.raises(ValidationError, match="regime_low_pct"):
        SignalSettings(regime_low_pct=0.8, regime_high_pct=0.5)
    with pytest.raises(ValidationError, match="min_multiplier"):
        SignalSettings(min_multiplier=3.0, max_multiplier=2.0)
    with pytest.raises(ValidationError, match="at least one"):
        ComponentWeights(confidence=0, agreement=0, regime=0, higher_tf=0, risk=0)
    ComponentWeights(confidence=0, agreement=0, regime=0, risk=0, tradingview=0.5)  # counts too
    for bad in ({"alert_min_resolved": 0}, {"alert_max_age_bars": 0}):
        with pytest.raises(ValidationError):
            SignalSettings(**bad)
    with pytest.raises(ValidationError):
        SignalSettings(treshold=0.5)  # type: ignore[call-arg]
    assert sum(DEFAULTS.weights.model_dump().values()) == pytest.approx(1.0)
