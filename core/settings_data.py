"""Settings of the candle data itself: the plausibility bounds validation applies before a candle
is stored, by asset class (``core.plausibility`` owns the built-in values, ``core.validation``
the rules)."""

from __future__ import annotations

from pydantic import Field

from core.instruments import instrument
from core.plausibility import DEFAULT_PLAUSIBILITY, PLAUSIBILITY_BY_ASSET_CLASS, Plausibility
from core.settings_base import Section


class PlausibilitySpec(Section):
    """Bounds past which a finite candle value is quarantined as implausible."""

    max_volume: float = Field(
        default=DEFAULT_PLAUSIBILITY.max_volume,
        gt=0,
        description="a candle's volume above this is quarantined",
    )
    max_price_jump: float = Field(
        default=DEFAULT_PLAUSIBILITY.max_price_jump,
        gt=1,
        le=1_000_000,
        description="a candle's high above this multiple of the median close of the candles "
        "around it (or its low below that median divided by it) is quarantined",
    )

    def to_bounds(self) -> Plausibility:
        return Plausibility(self.max_volume, self.max_price_jump)


def _spec(bounds: Plausibility) -> PlausibilitySpec:
    return PlausibilitySpec(max_volume=bounds.max_volume, max_price_jump=bounds.max_price_jump)


class ValidationSettings(Section):
    """Plausibility bounds by the symbol's asset class, else ``default``."""

    default: PlausibilitySpec = Field(default_factory=lambda: _spec(DEFAULT_PLAUSIBILITY))
    by_asset_class: dict[str, PlausibilitySpec] = Field(
        default_factory=lambda: {k: _spec(v) for k, v in PLAUSIBILITY_BY_ASSET_CLASS.items()}
    )

    def bounds(self, symbol: str) -> Plausibility:
        """The bounds the candles of ``symbol`` are validated against."""
        asset_class = instrument(symbol).asset_class.value
        return self.by_asset_class.get(asset_class, self.default).to_bounds()
