"""What candleflow knows about an instrument beyond its name: asset class, trading session and pip
size. Known symbols come from a small catalogue; any other symbol gets defaults inferred from its
name, so user-imported data works without registration."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.symbols import FIAT_CURRENCIES as _FIAT
from core.symbols import normalize_symbol, split_pair


class AssetClass(StrEnum):
    FX = "fx"
    METAL = "metal"
    CRYPTO = "crypto"
    INDEX = "index"
    EQUITY = "equity"
    OTHER = "other"


class Session(StrEnum):
    """When the market trades. ``FX`` closes Friday 22:00 UTC and opens Sunday 22:00 UTC."""

    ALWAYS = "24/7"
    FX = "fx"


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    asset_class: AssetClass
    session: Session
    pip_size: float

    @property
    def is_24_7(self) -> bool:
        return self.session is Session.ALWAYS


def _fx(symbol: str) -> Instrument:
    pip = 0.01 if symbol.endswith("JPY") else 0.0001
    return Instrument(symbol, AssetClass.FX, Session.FX, pip)


CATALOGUE: dict[str, Instrument] = {
    **{
        s: _fx(s)
        for s in (
            "EURUSD",
            "GBPUSD",
            "USDJPY",
            "USDCHF",
            "AUDUSD",
            "USDCAD",
            "NZDUSD",
            "EURJPY",
            "EURGBP",
        )
    },
    "XAUUSD": Instrument("XAUUSD", AssetClass.METAL, Session.FX, 0.01),
    "XAGUSD": Instrument("XAGUSD", AssetClass.METAL, Session.FX, 0.001),
    "BTCUSD": Instrument("BTCUSD", AssetClass.CRYPTO, Session.ALWAYS, 1.0),
    "ETHUSD": Instrument("ETHUSD", AssetClass.CRYPTO, Session.ALWAYS, 0.1),
    "SOLUSD": Instrument("SOLUSD", AssetClass.CRYPTO, Session.ALWAYS, 0.01),
    "US500": Instrument("US500", AssetClass.INDEX, Session.FX, 0.1),
    "US100": Instrument("US100", AssetClass.INDEX, Session.FX, 0.1),
    "DE40": Instrument("DE40", AssetClass.INDEX, Session.FX, 0.1),
}


def instrument(symbol: str) -> Instrument:
    """The catalogue entry for ``symbol``, or one inferred from its name (``XYZUSDT`` → crypto)."""
    canonical = normalize_symbol(symbol)
    if canonical in CATALOGUE:
        return CATALOGUE[canonical]
    pair = split_pair(canonical)
    if pair and pair[0] in _FIAT and pair[1] in _FIAT:
        return _fx(canonical)
    if pair and (pair[1] not in _FIAT or pair[0] not in _FIAT):
        return Instrument(canonical, AssetClass.CRYPTO, Session.ALWAYS, 0.01)
    return Instrument(canonical, AssetClass.OTHER, Session.FX, 0.01)
