from datetime import UTC, datetime, timedelta

import pytest

from core.errors import InvalidSymbolError, UnknownTimeframeError
from core.instruments import AssetClass, Session, instrument
from core.symbols import normalize_symbol, split_pair, to_pair
from core.timeframes import TIMEFRAMES, parse_timeframe


@pytest.mark.parametrize("raw", ["BTCUSD", "btc/usd", "BTC-USD", " btc_usd ", "BTC:USD", "btc usd"])
def test_spellings_of_one_symbol_normalise_to_one_form(raw: str) -> None:
    assert normalize_symbol(raw) == "BTCUSD"


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [
        ("EURUSD", "EUR/USD"),
        ("eur/usd", "EUR/USD"),
        ("USDJPY", "USD/JPY"),
        ("BTCUSDT", "BTC/USDT"),
        ("ETHBTC", "ETH/BTC"),
        ("XAUUSD", "XAU/USD"),
        ("US500", "US500"),
    ],
)
def test_pair_form(symbol: str, pair: str) -> None:
    assert to_pair(symbol) == pair
    assert normalize_symbol(to_pair(symbol)) == normalize_symbol(symbol)


def test_symbol_without_quote_currency_does_not_split() -> None:
    assert split_pair("US500") is None
    assert split_pair("DE40") is None


@pytest.mark.parametrize("bad", ["", "   ", "/", "EUR USD;DROP", "a*b", ".hidden"])
def test_invalid_symbols_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidSymbolError):
        normalize_symbol(bad)


def test_instrument_catalogue_and_inference() -> None:
    assert instrument("eur/usd").asset_class is AssetClass.FX
    assert instrument("USDJPY").pip_size == 0.01
    assert instrument("BTC-USD").session is Session.ALWAYS
    assert instrument("US500").asset_class is AssetClass.INDEX
    assert instrument("NZDCHF").asset_class is AssetClass.FX  # not catalogued: inferred
    assert instrument("DOGEUSDT").asset_class is AssetClass.CRYPTO
    assert instrument("ACME").asset_class is AssetClass.OTHER


def test_timeframes_and_durations() -> None:
    assert list(TIMEFRAMES) == ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
    assert parse_timeframe("1h").duration == timedelta(hours=1)
    assert parse_timeframe("H4").duration == timedelta(hours=4)
    assert parse_timeframe("60m").name == "1h"
    assert parse_timeframe("1D").seconds == 86400


def test_unknown_timeframe_lists_allowed() -> None:
    with pytest.raises(UnknownTimeframeError, match="allowed: 1m, 5m"):
        parse_timeframe("2h")


def test_floor_and_alignment_naive_is_utc() -> None:
    tf = parse_timeframe("4h")
    ts = datetime(2024, 5, 6, 13, 59, tzinfo=UTC)
    assert tf.floor(ts) == datetime(2024, 5, 6, 12, tzinfo=UTC)
    assert tf.is_aligned(datetime(2024, 5, 6, 8, tzinfo=UTC))
    assert not tf.is_aligned(datetime(2024, 5, 6, 9, tzinfo=UTC))
    assert tf.floor(ts.replace(tzinfo=None)) == datetime(2024, 5, 6, 12, tzinfo=UTC)
