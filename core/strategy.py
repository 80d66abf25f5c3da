"""The strategy's fills, exits and costs: one definition shared by the labels, the backtest
(``models.strategy``), the paper account (``brokers.paper``) and live orders (``models.risk``).

* **Barriers** of a position signalled on a bar closing at ``c``: take-profit ``c·exp(+pt·σ)``,
  stop-loss ``c·exp(−sl·σ)`` for a long (mirrored for a short), σ known at that bar; a time-out
  ``horizon`` bars after the signal bar.
* **Entry**: a market order filled at the open of the first candle after the signal candle has
  closed, moved against the order by half the spread and the slippage.
* **Exit** (:func:`exit_for_candle`), judged on every candle from the entry candle on, first
  match wins: the candle *opens* beyond the stop (filled at that open, a market order) or beyond
  the take-profit (filled at that open: a limit fills at the better price); its range touches the
  stop (at the stop, a market order); its range touches the take-profit (at the take-profit, a
  limit: no slippage). A candle touching both is read as the stop first (a candle does not say
  which came first). A candle opening at or after the time-out closes the position at its close
  (market). Every exit pays half the spread, market exits the slippage too.
* **Costs** (:class:`Costs`, basis points of price, per instrument from ``[costs]``): a fee per
  fill on its notional, the full bid-ask spread paid half on each fill, slippage per market fill.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from core.errors import CandleflowError

if TYPE_CHECKING:  # numpy loads where barriers are computed, not with the configuration
    import numpy as np

STOP_LOSS, TAKE_PROFIT, TIMEOUT = "STOP_LOSS", "TAKE_PROFIT", "TIMEOUT"
BPS = 10_000.0


class StrategyError(CandleflowError, ValueError):
    """A strategy input that cannot be used (names it and what is allowed)."""


@dataclass(frozen=True)
class Costs:
    """Trading costs of one instrument in basis points of price: ``fee_bps`` per fill (of its
    notional), ``spread_bps`` the full bid-ask spread (half paid on each fill), ``slippage_bps``
    per market fill (entries, stops, time-outs; take-profits are limits and do not slip)."""

    fee_bps: float = 0.0
    spread_bps: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise StrategyError(f"Costs.{name} must be a finite number ≥ 0, got {value}")

    @property
    def round_trip(self) -> float:
        """A round trip of market fills as a fraction of the price (fees on both notionals
        taken at the entry price): ``(2·fee + spread + 2·slippage) / 10 000``."""
        return (2 * self.fee_bps + self.spread_bps + 2 * self.slippage_bps) / BPS

    def fill_price(self, price: float, side: int, *, market: bool = True) -> float:
        """The price a fill of ``side`` (+1 buy, −1 sell) gets where the market trades at
        ``price``: half the spread against it, and the slippage for a market order."""
        cost = self.spread_bps / 2 + (self.slippage_bps if market else 0.0)
        return price * (1 + side * cost / BPS)

    def fee(self, price: float, quantity: float) -> float:
        """The fee of one fill of ``quantity`` at ``price``."""
        return abs(price * quantity) * self.fee_bps / BPS


def barrier_levels(
    reference: float | np.ndarray,
    sigma: float | np.ndarray,
    side: int | np.ndarray,
    pt: float | np.ndarray,
    sl: float | np.ndarray,
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """(stop-loss, take-profit) of a position of ``side`` signalled at ``reference`` (the signal
    bar's close) with σ ``sigma``: the labels' barriers, scalars or arrays alike."""
    import numpy as np

    stop = reference * np.exp(-side * sl * sigma)
    take = reference * np.exp(side * pt * sigma)
    return stop, take


class Candle(NamedTuple):
    ts: datetime
    open: float
    high: float
    low: float
    close: float


def exit_for_candle(
    side: int,
    stop_loss: float | None,
    take_profit: float | None,
    timeout_at: datetime | None,
    candle: Candle,
    costs: Costs,
) -> tuple[float, str] | None:
    """The exit fill price and reason of a position of ``side`` on ``candle``, or ``None`` (the
    rules are in the module docstring)."""
    o, stop, take = candle.open, stop_loss, take_profit
    out = -side  # an exit trades against the position
    if stop is not None and side * (o - stop) <= 0:
        return costs.fill_price(o, out), STOP_LOSS
    if take is not None and side * (o - take) >= 0:
        return costs.fill_price(o, out, market=False), TAKE_PROFIT
    if stop is not None and (candle.low <= stop if side > 0 else candle.high >= stop):
        return costs.fill_price(stop, out), STOP_LOSS
    if take is not None and (candle.high >= take if side > 0 else candle.low <= take):
        return costs.fill_price(take, out, market=False), TAKE_PROFIT
    if timeout_at is not None and candle.ts >= timeout_at:
        return costs.fill_price(candle.close, out), TIMEOUT
    return None
