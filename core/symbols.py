"""Symbol normalisation in one place: ``BTCUSD``, ``btc/usd`` and ``BTC-USD`` are one symbol.

The canonical form is upper case without separators (``EURUSD``, ``XAUUSD``, ``US500``): safe as a
file name and what the store, MLflow model names and the config use. ``to_pair`` gives the
``BASE/QUOTE`` form exchanges such as ccxt expect.
"""

from __future__ import annotations

import re

from core.errors import InvalidSymbolError

_SEPARATORS = re.compile(r"[\s/\-_:]+")
_VALID = re.compile(r"^[A-Z0-9^][A-Z0-9.^=!&]*$")

FIAT_CURRENCIES: frozenset[str] = frozenset(
    [
        "USD",
        "EUR",
        "JPY",
        "GBP",
        "CHF",
        "AUD",
        "CAD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "HKD",
        "SGD",
        "MXN",
        "ZAR",
        "TRY",
        "CNH",
        "KRW",
    ]
)
# Longest first, so USDT wins over USD and "BTCUSDT" splits as BTC / USDT.
QUOTE_CURRENCIES: tuple[str, ...] = tuple(
    sorted(
        {"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "BTC", "ETH"} | FIAT_CURRENCIES,
        key=lambda code: (-len(code), code),
    )
)


def normalize_symbol(value: str) -> str:
    """Canonical form of a symbol: ``"btc/usd"`` → ``"BTCUSD"``; invalid input raises."""
    if not isinstance(value, str):
        raise InvalidSymbolError(f"symbol must be a string, got {type(value).__name__}")
    canonical = _SEPARATORS.sub("", value.strip().upper())
    if not canonical or not _VALID.match(canonical):
        raise InvalidSymbolError(
            f"invalid symbol {value!r}: use letters, digits and . ^ = ! & "
            "(separators / - _ : and spaces are dropped)"
        )
    return canonical


def split_pair(symbol: str) -> tuple[str, str] | None:
    """``"EURUSD"`` → ``("EUR", "USD")``; ``None`` where no known quote currency ends the symbol."""
    canonical = normalize_symbol(symbol)
    for quote in QUOTE_CURRENCIES:
        base = canonical[: -len(quote)]
        if canonical.endswith(quote) and len(base) >= 2 and base.isalnum():
            return base, quote
    return None


def to_pair(symbol: str) -> str:
    """``"EURUSD"`` → ``"EUR/USD"``; a symbol without a quote currency (``US500``) stays as is."""
    pair = split_pair(symbol)
    return f"{pair[0]}/{pair[1]}" if pair else normalize_symbol(symbol)
