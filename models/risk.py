"""The decision layer's second half: exits from the label barriers, position sizing, exposure caps,
the daily-loss circuit breaker and the kill switches. Every refusal or reduction carries a reason a
person can read and a :class:`RiskEvent` for the risk-events table. Pure: no broker, no clock.

* **Exits** use the labels' barrier form, so live trades are the trades the model was trained on:
  a long's stop-loss is ``entry·exp(−sl·σ)``, its take-profit ``entry·exp(+pt·σ)`` (mirrored for a
  short), the time-out ``horizon`` bars; ``pt``, ``sl``, ``horizon`` come from the
  :class:`LabelSpec` unless ``[risk]`` overrides them. σ is that of ``features.labels.volatility``
  at the signal bar.
* **Sizing**, then × the signal's position multiplier, then the caps in order: max leverage (one
  position's notional / equity), max notional per symbol (open + new), max total exposure (all
  open notional + new, / equity). A binding cap reduces the order; a cap with no room left refuses
  it. Quantities round *down* to ``quantity_step``, so rounding never breaks a cap.
* **Halts** refuse every new order: the manual kill switch (``kill_switch`` or an existing
  ``kill_file``), the daily-loss circuit breaker (loss since the day-start equity ≥ the limit) and
  the drawdown kill switch (loss from the peak equity ≥ the limit). Also refused: a flat signal,
  an unknown σ (warm-up), ``max_open_positions`` already open (counted conservatively: an order on
  a symbol already held counts too), ``max_positions_per_symbol`` already open or pending on the
  symbol (one by default: the strategy the backtest evaluates trades one position at a time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.feature_spec import LabelSpec
from core.instruments import instrument
from core.settings_trading import RiskSettings
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe

logger = logging.getLogger(__name__)

Sizing = Literal["fixed_units", "percent_risk", "volatility_target"]
_DAYS_PER_YEAR = 365.25


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


@dataclass(frozen=True)
class Position:
    """An open position: its symbol and absolute notional in the account currency."""

    symbol: str
    notional: float
    side: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        object.__setattr__(self, "notional", abs(_finite("position notional", self.notional)))


@dataclass(frozen=True)
class AccountState:
    """What the risk layer needs to know about the account (the paper account supplies it).
    ``balance`` (cash, for percent-of-balance sizing) defaults to ``equity``."""

    equity: float
    day_start_equity: float
    peak_equity: float
    positions: tuple[Position, ...] = ()
    balance: float | None = None

    def __post_init__(self) -> None:
        _finite("equity", self.equity)
        for name in ("day_start_equity", "peak_equity"):
            if not _finite(name, getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.balance is not None:
            _finite("balance", self.balance)
        object.__setattr__(self, "positions", tuple(self.positions))

    @classmethod
    def from_history(
        cls,
        equity_history: Sequence[float],
        day_start_equity: float,
        positions: Sequence[Position] = (),
        balance: float | None = None,
    ) -> AccountState:
        """Current equity = the last of ``equity_history``, peak = its maximum."""
        if len(equity_history) == 0:
            raise ValueError("equity_history is empty")
        history = [_finite("equity", e) for e in equity_history]
        return cls(history[-1], day_start_equity, max(history), tuple(positions), balance)

    @property
    def cash(self) -> float:
        return self.equity if self.balance is None else self.balance

    @property
    def open_notional(self) -> float:
        return sum(p.notional for p in self.positions)

    def symbol_count(self, symbol: str) -> int:
        symbol = normalize_symbol(symbol)
        return sum(p.symbol == symbol for p in self.positions)

    def symbol_notional(self, symbol: str) -> float:
        symbol = normalize_symbol(symbol)
        return sum(p.notional for p in self.positions if p.symbol == symbol)


@dataclass(frozen=True)
class RiskEvent:
    """One row of the risk-events table: a halt, a refusal or a reduction."""

    kind: str
    action: Literal["halt", "reject", "reduce"]
    message: str
    symbol: str | None = None
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RiskState:
    """Loss-limit usage of the account. ``usage``: the larger of daily loss and drawdown, each as a
    share of its limit (≥ 1: breached); ``score`` = 1 − usage clipped to [0, 1], 0 when halted."""

    daily_loss_pct: float
    drawdown_pct: float
    usage: float
    halts: tuple[str, ...] = ()
    events: tuple[RiskEvent, ...] = ()

    @property
    def halted(self) -> bool:
        return bool(self.halts)

    @property
    def score(self) -> float:
        return 0.0 if self.halts else 1.0 - min(max(self.usage, 0.0), 1.0)


def _halt(kind: str, message: str, value: float | None = None, limit: float | None = None) -> Any:
    return RiskEvent(kind, "halt", message, None, value, limit)


def risk_state(
    account: AccountState, settings: RiskSettings, kill_file: Path | None = None
) -> RiskState:
    """Daily loss and drawdown against their limits, and every reason trading is halted."""
    daily = 100.0 * (account.day_start_equity - account.equity) / account.day_start_equity
    peak = max(account.peak_equity, account.equity)  # a stale peak cannot hide a new high
    drawdown = 100.0 * (peak - account.equity) / peak
    usage = max(daily / settings.max_daily_loss_pct, drawdown / settings.max_drawdown_pct, 0.0)
    events = []
    if settings.kill_switch:
        events.append(_halt("kill_switch", "manual kill switch is on (risk.kill_switch)"))
    if kill_file is not None and kill_file.exists():
        events.append(
            _halt("kill_file", f"kill file {kill_file} exists: delete it to resume trading")
        )
    if daily >= settings.max_daily_loss_pct:
        message = f"daily loss {daily:.2f}% ≥ {settings.max_daily_loss_pct:.2f}% limit"
        events.append(_halt("daily_loss", message, daily, settings.max_daily_loss_pct))
    if drawdown >= settings.max_drawdown_pct:
        message = f"drawdown {drawdown:.2f}% from peak ≥ {settings.max_drawdown_pct:.2f}% limit"
        events.append(_halt("max_drawdown", message, drawdown, settings.max_drawdown_pct))
    halts = tuple(e.message for e in events)
    return RiskState(daily, drawdown, usage, halts, tuple(events))


@dataclass(frozen=True)
class Exits:
    stop_loss: float
    take_profit: float
    timeout_bars: int


def exit_prices(
    entry_price: float, sigma: float, side: int, settings: RiskSettings, labels: LabelSpec
) -> Exits:
    """Stop-loss, take-profit and time-out in the labels' barrier form (module docstring)."""
    if side not in (1, -1):
        raise ValueError(f"side must be +1 or -1 to place exits, got {side}")
    sl = labels.sl if settings.stop_loss_sigma is None else settings.stop_loss_sigma
    pt = labels.pt if settings.take_profit_sigma is None else settings.take_profit_sigma
    timeout = labels.horizon if settings.timeout_bars is None else settings.timeout_bars
    stop = entry_price * math.exp(-side * sl * sigma)
    target = entry_price * math.exp(side * pt * sigma)
    return Exits(stop, target, timeout)


def bars_per_year(timeframe: str, symbol: str) -> float:
    """Bars in a year: 24/7 markets trade 365.25 days, session markets (FX, metals, indices) 5/7
    of them. For annualising a per-bar σ in volatility-targeted sizing."""
    days = _DAYS_PER_YEAR if instrument(symbol).is_24_7 else _DAYS_PER_YEAR * 5 / 7
    return days * 86_400 / parse_timeframe(timeframe).seconds


@dataclass(frozen=True)
class OrderRequest:
    """A signal that wants an order. ``sigma``: σ at the signal bar (as for the labels);
    ``multiplier``: the signal's position multiplier."""

    symbol: str
    side: int
    entry_price: float
    sigma: float
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        if self.side not in (-1, 0, 1):
            raise ValueError(f"side must be -1, 0 or +1, got {self.side}")
        if not _finite("entry_price", self.entry_price) > 0:
            raise ValueError(f"entry_price must be > 0, got {self.entry_price}")
        if not _finite("multiplier", self.multiplier) >= 0:
            raise ValueError(f"multiplier must be ≥ 0, got {self.multiplier}")


@dataclass(frozen=True)
class RiskDecision:
    """The risk layer's answer. Refused orders have quantity 0 and at least one reason."""

    approved: bool
    symbol: str
    side: int
    quantity: float
    notional: float
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    timeout_bars: int | None
    sizing: Sizing
    base_quantity: float = 0.0  # before the multiplier and the caps
    reasons: tuple[str, ...] = ()
    events: tuple[RiskEvent, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["events"] = [e.to_dict() for e in self.events]
        return data


def base_quantity(
    request: OrderRequest,
    exits: Exits,
    account: AccountState,
    settings: RiskSettings,
    periods_per_year: float | None = None,
) -> float:
    """Units before the multiplier and the caps, by ``settings.sizing`` (module docstring)."""
    if settings.sizing == "fixed_units":
        return settings.fixed_units
    if settings.sizing == "percent_risk":
        risk_per_unit = abs(request.entry_price - exits.stop_loss)
        if not risk_per_unit > 0:
            raise ValueError(f"{request.symbol}: the stop equals the entry (σ = {request.sigma})")
        return max(account.cash, 0.0) * settings.risk_per_trade_pct / 100.0 / risk_per_unit
    if periods_per_year is None or not periods_per_year > 0:
        raise ValueError("volatility_target sizing needs bars_per_year (see bars_per_year())")
    annual_sigma = request.sigma * math.sqrt(periods_per_year)
    notional = max(account.equity, 0.0) * settings.target_volatility_pct / 100.0 / annual_sigma
    return notional / request.entry_price


def _cap_room(symbol: str, account: AccountState, s: RiskSettings) -> list[tuple[str, float, str]]:
    """(kind, notional room, description) of each cap, in the order they apply."""
    equity, open_ = max(account.equity, 0.0), account.open_notional
    caps = [("max_leverage", s.max_leverage * equity, f"max leverage {s.max_leverage:g}×")]
    if s.max_position_notional is not None:
        held = account.symbol_notional(symbol)
        what = f"max position {s.max_position_notional:g} in {symbol} ({held:g} held)"
        caps.append(("max_position", s.max_position_notional - held, what))
    what = f"max total exposure {s.max_total_exposure:g}× equity ({open_:g} open)"
    caps.append(("max_total_exposure", s.max_total_exposure * equity - open_, what))
    return caps


def _apply_caps(
    notional: float, symbol: str, account: AccountState, settings: RiskSettings
) -> tuple[float, list[RiskEvent]]:
    """The notional after every cap; a cap with no room left makes it 0 (and says so)."""
    events: list[RiskEvent] = []
    for kind, room, what in _cap_room(symbol, account, settings):
        if room <= 0:
            events.append(
                RiskEvent(kind, "reject", f"{what}: no room left", symbol, notional, room)
            )
            return 0.0, events
        if notional > room:
            message = f"{what}: notional reduced from {notional:.2f} to {room:.2f}"
            events.append(RiskEvent(kind, "reduce", message, symbol, notional, room))
            notional = room
    return notional, events


def _round_down(quantity: float, step: float) -> float:
    if step <= 0:
        return quantity
    # The tiny relative slack keeps 3 × 0.1 from flooring to 0.2 on a float error.
    return math.floor(quantity / step * (1 + 1e-12)) * step


def _refusal(request: OrderRequest, settings: RiskSettings, events: list[RiskEvent]) -> Any:
    return RiskDecision(
        False,
        request.symbol,
        request.side,
        0.0,
        0.0,
        request.entry_price,
        None,
        None,
        None,
        settings.sizing,
        reasons=tuple(e.message for e in events),
        events=tuple(events),
    )


def _preconditions(
    request: OrderRequest, account: AccountState, settings: RiskSettings, kill_file: Path | None
) -> list[RiskEvent]:
    """Everything that refuses an order before it is sized."""
    events = list(risk_state(account, settings, kill_file).events)
    symbol = request.symbol
    if request.side == 0:
        events.append(RiskEvent("flat", "reject", "the signal is flat: no order", symbol))
    if not (math.isfinite(request.sigma) and request.sigma > 0):
        message = f"volatility at the signal bar is unknown or zero (σ = {request.sigma})"
        events.append(RiskEvent("volatility", "reject", message, symbol, request.sigma))
    held, per_symbol = account.symbol_count(symbol), settings.max_positions_per_symbol
    if held >= per_symbol:
        message = f"{symbol}: {held} position(s) open or pending, max {per_symbol} per symbol"
        events.append(RiskEvent("max_per_symbol", "reject", message, symbol, held, per_symbol))
    n_open, limit = len(account.positions), settings.max_open_positions
    if n_open >= limit:
        message = f"max open positions {limit} reached ({n_open} open)"
        events.append(RiskEvent("max_open_positions", "reject", message, symbol, n_open, limit))
    return events


def decide(
    request: OrderRequest,
    account: AccountState,
    settings: RiskSettings,
    labels: LabelSpec,
    *,
    periods_per_year: float | None = None,
    kill_file: Path | None = None,
) -> RiskDecision:
    """Approve (sized, capped, with exits) or refuse one order; see the module docstring."""
    refused = _preconditions(request, account, settings, kill_file)
    if refused:
        return _refusal(request, settings, refused)
    exits = exit_prices(request.entry_price, request.sigma, request.side, settings, labels)
    base = base_quantity(request, exits, account, settings, periods_per_year)
    notional, events = _apply_caps(
        base * request.multiplier * request.entry_price, request.symbol, account, settings
    )
    quantity = _round_down(notional / request.entry_price, settings.quantity_step)
    if notional > 0 and quantity <= 0:
        message = f"quantity {notional / request.entry_price:.6g} rounds down to 0"
        events.append(RiskEvent("quantity_step", "reject", message, request.symbol))
    if quantity <= 0:
        if not events:  # a zero multiplier or an empty balance
            events.append(RiskEvent("size", "reject", "the sized quantity is 0", request.symbol))
        return _refusal(request, settings, events)
    return RiskDecision(
        approved=True,
        symbol=request.symbol,
        side=request.side,
        quantity=quantity,
        notional=quantity * request.entry_price,
        entry_price=request.entry_price,
        stop_loss=exits.stop_loss,
        take_profit=exits.take_profit,
        timeout_bars=exits.timeout_bars,
        sizing=settings.sizing,
        base_quantity=base,
        reasons=tuple(e.message for e in events),
        events=tuple(events),
    )
