"""Plausibility bounds of candles per asset class — a module of its own so that the configuration
loads them without importing the validation engine (polars, numpy)."""

from __future__ import annotations

from dataclasses import dataclass

from core.instruments import instrument


@dataclass(frozen=True)
class Plausibility:
    """Bounds past which a finite value is not believed: ``max_volume`` per candle, and
    ``max_price_jump``, the multiple a candle's high may be above (its low below) the median close
    of the candles around it."""

    max_volume: float = 1e15
    max_price_jump: float = 5.0


DEFAULT_PLAUSIBILITY = Plausibility()
# Hourly moves the market has made (the 2015 franc de-peg: about 1.4x within the hour; crypto
# crashes) stay inside; a price off by a decimal place or from another instrument does not.
PLAUSIBILITY_BY_ASSET_CLASS: dict[str, Plausibility] = {
    "fx": Plausibility(max_price_jump=1.5),
    "metal": Plausibility(max_price_jump=2.0),
    "index": Plausibility(max_price_jump=2.0),
    "crypto": Plausibility(max_price_jump=5.0),
}


def plausibility_for(symbol: str) -> Plausibility:
    """The built-in bounds of ``symbol``'s asset class (the configuration can override them)."""
    asset_class = instrument(symbol).asset_class.value
    return PLAUSIBILITY_BY_ASSET_CLASS.get(asset_class, DEFAULT_PLAUSIBILITY)
