"""Settings of the live decision layer: how the ensemble's vote becomes a weighted signal
(``[signals]``, see ``models.signal``) and how a signal becomes a sized, capped order or a refusal
(``[risk]``, see ``models.risk``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.settings_base import Section


class ComponentWeights(Section):
    """Relative weights of the signal-weight components (any scale; they are normalised)."""

    confidence: float = Field(
        default=0.35, ge=0, description="ensemble probability above the threshold"
    )
    agreement: float = Field(default=0.20, ge=0, description="share of families agreeing")
    regime: float = Field(default=0.15, ge=0, description="volatility regime")
    higher_tf: float = Field(
        default=0.0,
        ge=0,
        description="higher timeframe's model confirms; 0 by default: a per-model backtest cannot "
        "see another model, so a weight here trades something the gate did not evaluate",
    )
    risk: float = Field(default=0.15, ge=0, description="room left before the loss limits")
    tradingview: float = Field(
        default=0.0,
        ge=0,
        description="the newest fresh TradingView alert, scored by its strategy's resolved hit "
        "rate; 0 by default: the gate's backtest cannot see alerts, so a weight here trades a "
        "signal weight the evidence did not evaluate",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> ComponentWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one component weight must be > 0")
        return self


class SignalSettings(Section):
    """Signal weight (0–100), recommendation tier and position multiplier."""

    weights: ComponentWeights = Field(default_factory=ComponentWeights)
    confidence_margin: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description="probability above the threshold that scores full confidence",
    )
    missing_component: Literal["renormalise", "neutral"] = Field(
        default="renormalise",
        description="an absent optional component (higher timeframe, regime, TradingView): its "
        "weight is spread over the others ('renormalise') or it scores 0.5 ('neutral')",
    )
    alert_min_resolved: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="TradingView alerts count only from a strategy with at least this many "
        "resolved BUY alerts (of the symbol × timeframe)",
    )
    alert_max_age_bars: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="a TradingView alert older than this many bars of the timeframe at decision "
        "time does not count",
    )
    regime_lookback: int = Field(
        default=500, ge=20, le=100_000, description="bars of σ history the regime ranks against"
    )
    regime_low_pct: float = Field(
        default=0.2, gt=0, lt=1, description="σ percentile below which the regime score falls"
    )
    regime_high_pct: float = Field(
        default=0.8, gt=0, lt=1, description="σ percentile above which the regime score falls"
    )
    buy_weight: float = Field(default=40.0, ge=0, le=100, description="weight for BUY / SELL")
    strong_weight: float = Field(
        default=70.0, ge=0, le=100, description="weight for STRONG_BUY / STRONG_SELL"
    )
    avoid_regime_below: float = Field(
        default=0.1, ge=0, le=1, description="AVOID when the regime score is below this"
    )
    avoid_risk_below: float = Field(
        default=0.2, ge=0, le=1, description="AVOID when the risk-state score is below this"
    )
    min_multiplier: float = Field(
        default=0.25, gt=0, le=10, description="position multiplier at weight = buy_weight"
    )
    max_multiplier: float = Field(
        default=2.0, gt=0, le=10, description="position multiplier at weight = 100"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SignalSettings:
        if self.regime_low_pct >= self.regime_high_pct:
            raise ValueError(
                f"regime_low_pct ({self.regime_low_pct}) must be below regime_high_pct"
                f" ({self.regime_high_pct})"
            )
        if self.strong_weight < self.buy_weight:
            raise ValueError(
                f"strong_weight ({self.strong_weight}) must be ≥ buy_weight ({self.buy_weight})"
            )
        if self.min_multiplier > self.max_multiplier:
            raise ValueError(
                f"min_multiplier ({self.min_multiplier}) must be ≤ max_multiplier"
                f" ({self.max_multiplier})"
            )
        return self


class RiskSettings(Section):
    """Exits, sizing, exposure caps, loss limits and the manual kill switch."""

    sizing: Literal["fixed_units", "percent_risk", "volatility_target"] = Field(
        default="percent_risk",
        description="fixed_units: `fixed_units` units; percent_risk: lose `risk_per_trade_pct` "
        "of the balance at the stop; volatility_target: notional = equity × target / annual σ",
    )
    fixed_units: float = Field(default=1.0, gt=0, description="units per order (fixed_units)")
    risk_per_trade_pct: float = Field(
        default=0.5, gt=0, le=100, description="% of balance lost if the stop is hit"
    )
    target_volatility_pct: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description="annualised volatility of one position, % of equity",
    )
    stop_loss_sigma: float | None = Field(default=None, gt=0, description="None: labels.sl")
    take_profit_sigma: float | None = Field(default=None, gt=0, description="None: labels.pt")
    timeout_bars: int | None = Field(default=None, ge=1, description="None: labels.horizon")
    max_leverage: float = Field(
        default=2.0, gt=0, le=1000, description="one position's notional / equity"
    )
    max_position_notional: float | None = Field(
        default=None, gt=0, description="notional per symbol, account currency (None: no cap)"
    )
    max_total_exposure: float = Field(
        default=3.0, gt=0, le=1000, description="all open notional / equity"
    )
    max_open_positions: int = Field(
        default=5, ge=1, le=10_000, description="open positions at once, all symbols"
    )
    max_positions_per_symbol: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="open or pending positions per symbol (1: the backtest's one at a time)",
    )
    max_daily_loss_pct: float = Field(
        default=3.0, gt=0, le=100, description="circuit breaker: loss since the day's start"
    )
    max_drawdown_pct: float = Field(
        default=15.0, gt=0, le=100, description="kill switch: loss from the equity peak"
    )
    kill_switch: bool = Field(default=False, description="manual: refuse every new order")
    quantity_step: float = Field(
        default=0.0, ge=0, description="quantities round down to a multiple (0: no rounding)"
    )
