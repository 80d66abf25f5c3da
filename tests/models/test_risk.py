from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.feature_spec import LabelSpec
from core.settings_trading import RiskSettings
from models.risk import (
    AccountState,
    OrderRequest,
    Position,
    RiskState,
    bars_per_year,
    decide,
    exit_prices,
    risk_state,
)

LABELS = LabelSpec(pt=2.0, sl=1.0, horizon=24)
FLAT_DAY = AccountState(equity=10_000, day_start_equity=10_000, peak_equity=10_000)


def _order(side: int = 1, multiplier: float = 1.0, symbol: str = "EURUSD") -> OrderRequest:
    return OrderRequest(symbol, side, entry_price=100.0, sigma=0.01, multiplier=multiplier)


def _fixed(units: float, **caps: object) -> RiskSettings:
    return RiskSettings(sizing="fixed_units", fixed_units=units, **caps)


# --- exits -------------------------------------------------------------------------------------


def test_exits_follow_the_label_barriers_for_a_long_and_a_short() -> None:
    long = exit_prices(100.0, 0.01, 1, RiskSettings(), LABELS)
    assert long.stop_loss == pytest.approx(99.004983, abs=1e-6)  # 100·e^(−1·0.01)
    assert long.take_profit == pytest.approx(102.020134, abs=1e-6)  # 100·e^(+2·0.01)
    assert long.timeout_bars == 24
    short = exit_prices(100.0, 0.01, -1, RiskSettings(), LABELS)
    assert short.stop_loss == pytest.approx(101.005017, abs=1e-6)
    assert short.take_profit == pytest.approx(98.019867, abs=1e-6)


def test_exit_overrides_replace_the_label_multiples() -> None:
    custom = RiskSettings(stop_loss_sigma=3.0, take_profit_sigma=0.5, timeout_bars=5)
    exits = exit_prices(200.0, 0.02, 1, custom, LABELS)
    assert exits.stop_loss == pytest.approx(200 * math.exp(-0.06))
    assert exits.take_profit == pytest.approx(200 * math.exp(0.01))
    assert exits.timeout_bars == 5
    with pytest.raises(ValueError, match="side"):
        exit_prices(100.0, 0.01, 0, custom, LABELS)


# --- sizing ------------------------------------------------------------------------------------


def test_percent_risk_loses_the_risk_share_of_the_balance_at_the_stop() -> None:
    account = AccountState(10_000, 10_000, 10_000, balance=8_000)
    one_pct = RiskSettings(risk_per_trade_pct=1.0)
    decision = decide(_order(), account, one_pct, LABELS)
    per_unit = 100 - 100 * math.exp(-0.01)  # 0.995017
    assert decision.approved and decision.reasons == () and decision.events == ()
    assert decision.quantity == pytest.approx(80 / per_unit)  # 1 % of the 8 000 balance
    assert decision.quantity * (100 - decision.stop_loss) == pytest.approx(80.0)
    assert decision.notional == pytest.approx(decision.quantity * 100)
    assert decision.timeout_bars == 24 and decision.sizing == "percent_risk"
    boosted = decide(_order(multiplier=1.5), account, one_pct, LABELS)
    assert boosted.quantity == pytest.approx(1.5 * decision.quantity)
    assert boosted.base_quantity == pytest.approx(decision.quantity)


def test_fixed_units_times_the_multiplier() -> None:
    decision = decide(_order(multiplier=0.5), FLAT_DAY, _fixed(3.0), LABELS)
    assert decision.approved and decision.quantity == pytest.approx(1.5)
    assert decision.notional == pytest.approx(150.0)


def test_volatility_target_annualises_sigma() -> None:
    target = RiskSettings(sizing="volatility_target", target_volatility_pct=10.0)
    decision = decide(_order(), FLAT_DAY, target, LABELS, periods_per_year=8760)
    # 10 % of 10 000 / (0.01·√8760 = 0.935949) = 1 068.43 notional at price 100
    assert decision.notional == pytest.approx(1000 / (0.01 * math.sqrt(8760)))
    assert decision.quantity == pytest.approx(10.6843, abs=1e-4)
    with pytest.raises(ValueError, match="bars_per_year"):
        decide(_order(), FLAT_DAY, target, LABELS)


def test_bars_per_year_by_session() -> None:
    assert bars_per_year("1h", "BTCUSD") == pytest.approx(8766.0)
    assert bars_per_year("1h", "EURUSD") == pytest.approx(365.25 * 5 / 7 * 24)
    assert bars_per_year("1d", "ETH/USD") == pytest.approx(365.25)


def test_quantity_rounds_down_to_the_step_or_refuses() -> None:
    one_pct = {"risk_per_trade_pct": 1.0}
    stepped = decide(_order(), FLAT_DAY, RiskSettings(quantity_step=1.0, **one_pct), LABELS)
    assert stepped.quantity == 100.0  # 100.50 units → 100
    coarse = decide(_order(), FLAT_DAY, RiskSettings(quantity_step=1000.0, **one_pct), LABELS)
    assert not coarse.approved and coarse.quantity == 0
    assert "rounds down to 0" in coarse.reasons[0]


# --- caps --------------------------------------------------------------------------------------


def test_max_leverage_reduces_the_notional() -> None:
    decision = decide(_order(), FLAT_DAY, _fixed(500), LABELS)  # 50 000 notional on 10 000 equity
    assert decision.approved
    assert decision.notional == pytest.approx(20_000) and decision.quantity == pytest.approx(200)
    assert decision.reasons == ("max leverage 2×: notional reduced from 50000.00 to 20000.00",)
    (event,) = decision.events
    assert (event.kind, event.action, event.value, event.limit) == (
        "max_leverage",
        "reduce",
        50_000,
        20_000,
    )


def test_max_position_per_symbol_counts_what_is_held_in_that_symbol_only() -> None:
    account = AccountState(
        10_000, 10_000, 10_000, positions=(Position("EUR/USD", 3_000), Position("BTCUSD", 4_000))
    )
    capped = _fixed(100, max_position_notional=5_000, max_positions_per_symbol=5)
    decision = decide(_order(), account, capped, LABELS)
    assert decision.notional == pytest.approx(2_000)
    assert decision.events[0].kind == "max_position" and "3000 held" in decision.reasons[0]
    other = decide(_order(symbol="ETHUSD"), account, capped, LABELS)
    assert other.notional == pytest.approx(5_000)
    full = AccountState(10_000, 10_000, 10_000, positions=(Position("EURUSD", 5_000),))
    refused = decide(_order(), full, capped, LABELS)
    assert not refused.approved and refused.quantity == 0 and refused.stop_loss is None
    assert refused.reasons == ("max position 5000 in EURUSD (5000 held): no room left",)


def test_max_total_exposure_counts_every_open_position() -> None:
    account = AccountState(10_000, 10_000, 10_000, positions=(Position("BTCUSD", 9_000),))
    decision = decide(_order(), account, _fixed(50, max_total_exposure=1.0), LABELS)
    assert decision.notional == pytest.approx(1_000)
    assert decision.events[0].kind == "max_total_exposure"
    full = AccountState(10_000, 10_000, 10_000, positions=(Position("BTCUSD", 10_000),))
    refused = decide(_order(), full, _fixed(50, max_total_exposure=1.0), LABELS)
    assert not refused.approved and "no room left" in refused.reasons[0]


def test_caps_apply_in_turn_each_with_its_reason() -> None:
    account = AccountState(10_000, 10_000, 10_000, positions=(Position("BTCUSD", 25_000),))
    decision = decide(_order(), account, _fixed(500), LABELS)  # leverage 20 000, then room 5 000
    assert [e.kind for e in decision.events] == ["max_leverage", "max_total_exposure"]
    assert decision.notional == pytest.approx(5_000) and len(decision.reasons) == 2


def test_max_open_positions_refuses() -> None:
    positions = tuple(Position(s, 100) for s in ("A", "B", "C", "D", "E"))
    account = AccountState(10_000, 10_000, 10_000, positions=positions)
    refused = decide(_order(), account, RiskSettings(max_open_positions=5), LABELS)
    assert not refused.approved
    assert refused.reasons == ("max open positions 5 reached (5 open)",)
    assert decide(_order(), account, RiskSettings(max_open_positions=6), LABELS).approved


# --- halts -------------------------------------------------------------------------------------


def test_daily_loss_circuit_breaker() -> None:
    down = AccountState(equity=9_690, day_start_equity=10_000, peak_equity=10_000)
    refused = decide(_order(), down, RiskSettings(max_daily_loss_pct=3.0), LABELS)
    assert not refused.approved
    assert refused.reasons == ("daily loss 3.10% ≥ 3.00% limit",)
    assert refused.events[0].kind == "daily_loss" and refused.events[0].action == "halt"
    less = AccountState(equity=9_710, day_start_equity=10_000, peak_equity=10_000)
    assert decide(_order(), less, RiskSettings(max_daily_loss_pct=3.0), LABELS).approved


def test_drawdown_kill_switch_from_the_equity_history() -> None:
    account = AccountState.from_history([10_000, 12_000, 10_150], day_start_equity=10_150)
    assert account.peak_equity == 12_000 and account.equity == 10_150
    refused = decide(_order(), account, RiskSettings(max_drawdown_pct=15.0), LABELS)
    assert refused.reasons == ("drawdown 15.42% from peak ≥ 15.00% limit",)
    assert decide(_order(), account, RiskSettings(max_drawdown_pct=16.0), LABELS).approved


def test_manual_kill_switch_flag_and_file(tmp_path: Path) -> None:
    refused = decide(_order(), FLAT_DAY, RiskSettings(kill_switch=True), LABELS)
    assert not refused.approved and "kill switch" in refused.reasons[0]
    kill_file = tmp_path / "KILL"
    assert decide(_order(), FLAT_DAY, RiskSettings(), LABELS, kill_file=kill_file).approved
    kill_file.touch()
    refused = decide(_order(), FLAT_DAY, RiskSettings(), LABELS, kill_file=kill_file)
    assert not refused.approved and str(kill_file) in refused.reasons[0]
    assert refused.events[0].kind == "kill_file"


def test_flat_side_unknown_sigma_and_zero_multiplier_are_refused() -> None:
    flat = decide(_order(side=0), FLAT_DAY, RiskSettings(), LABELS)
    assert not flat.approved and flat.reasons == ("the signal is flat: no order",)
    warm_up = OrderRequest("EURUSD", 1, 100.0, float("nan"))
    assert "unknown" in decide(warm_up, FLAT_DAY, RiskSettings(), LABELS).reasons[0]
    zero = decide(_order(multiplier=0.0), FLAT_DAY, RiskSettings(), LABELS)
    assert not zero.approved and zero.reasons == ("the sized quantity is 0",)


def test_risk_state_usage_and_score() -> None:
    account = AccountState(equity=9_400, day_start_equity=9_543.15, peak_equity=10_000)
    state = risk_state(account, RiskSettings(max_daily_loss_pct=3.0, max_drawdown_pct=15.0))
    assert state.daily_loss_pct == pytest.approx(1.5, abs=1e-3)
    assert state.drawdown_pct == pytest.approx(6.0)
    assert state.usage == pytest.approx(0.5, abs=1e-3)  # 1.5/3 beats 6/15
    assert state.score == pytest.approx(0.5, abs=1e-3) and not state.halted
    up_day = AccountState(equity=10_500, day_start_equity=10_000, peak_equity=10_000)
    assert risk_state(up_day, RiskSettings()).score == 1.0  # a stale peak is not a drawdown
    assert RiskState(0.0, 0.0, 0.0, halts=("x",)).score == 0.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="entry_price"):
        OrderRequest("EURUSD", 1, 0.0, 0.01)
    with pytest.raises(ValueError, match="side"):
        OrderRequest("EURUSD", 2, 1.0, 0.01)
    with pytest.raises(ValueError, match="day_start_equity"):
        AccountState(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        AccountState.from_history([], 1.0)
    with pytest.raises(ValidationError):
        RiskSettings(max_open_positions=0)
    with pytest.raises(ValidationError):
        RiskSettings(max_leverage_typo=1.0)  # type: ignore[call-arg]


def test_decision_to_dict_is_json() -> None:
    decision = decide(_order(), FLAT_DAY, _fixed(500), LABELS)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["approved"] is True and data["events"][0]["kind"] == "max_leverage"
    assert data["reasons"] == list(decision.reasons)


# --- property: no approved order breaks a cap ---------------------------------------------------

_money = st.floats(min_value=1.0, max_value=1e7)


@settings(max_examples=300, deadline=None)
@given(
    equity=_money,
    held=st.lists(st.tuples(st.sampled_from(["EURUSD", "BTCUSD", "XAUUSD"]), _money), max_size=6),
    units=st.floats(min_value=1e-3, max_value=1e6),
    multiplier=st.floats(min_value=0.25, max_value=2.0),
    leverage=st.floats(min_value=0.1, max_value=50),
    per_symbol=st.none() | _money,
    exposure=st.floats(min_value=0.1, max_value=50),
    max_open=st.integers(min_value=1, max_value=8),
    side=st.sampled_from([1, -1]),
)
def test_no_approved_order_violates_a_cap(
    equity: float,
    held: list[tuple[str, float]],
    units: float,
    multiplier: float,
    leverage: float,
    per_symbol: float | None,
    exposure: float,
    max_open: int,
    side: int,
) -> None:
    account = AccountState(equity, equity, equity, tuple(Position(s, n) for s, n in held))
    caps = _fixed(
        units,
        max_leverage=leverage,
        max_position_notional=per_symbol,
        max_total_exposure=exposure,
        max_open_positions=max_open,
    )
    decision = decide(_order(side, multiplier), account, caps, LABELS)
    tol = 1e-9 * max(decision.notional, 1.0)
    if not decision.approved:
        assert decision.quantity == 0 and decision.reasons
        return
    assert 0 < decision.notional <= units * multiplier * 100 + tol
    assert decision.notional <= leverage * equity + tol
    assert account.open_notional + decision.notional <= exposure * equity + tol
    if per_symbol is not None:
        assert account.symbol_notional("EURUSD") + decision.notional <= per_symbol + tol
    assert len(held) < max_open
    assert (decision.stop_loss - 100) * side < 0 < (decision.take_profit - 100) * side
