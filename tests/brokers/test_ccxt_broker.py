"""The ccxt adapter against a fake exchange (no network here): market mapping, paging by the
request limit, error translation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ccxt
import pytest

from brokers.base import MarketDataBroker, RetryBudget, is_transient
from brokers.ccxt_broker import CcxtBroker
from core.candles import CANDLE_SCHEMA
from core.errors import (
    BrokerError,
    TransientBrokerError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR_MS = 3_600_000
NOW_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)  # the venue's "now"


class FakeExchange:
    id = "fakex"

    def __init__(self, failures: list[Exception] | None = None, cap: int | None = None) -> None:
        self.cap = cap  # the most candles the venue returns, whatever was asked
        self.has = {"fetchOHLCV": True}
        self.timeframes = {"1m": "1m", "1h": "1h", "1d": "1d", "1w": "1w"}
        self.calls: list[tuple[str, str, int, int]] = []
        self.failures = failures or []

    def load_markets(self) -> dict:
        return {
            "BTC/USDT": {"base": "BTC", "quote": "USDT", "spot": True},
            "BTC/USDT:USDT": {"base": "BTC", "quote": "USDT", "spot": False},
            "ETH/BTC": {"base": "ETH", "quote": "BTC", "spot": True},
        }

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list]:
        self.calls.append((symbol, timeframe, since, limit))
        if self.failures:
            raise self.failures.pop(0)
        if symbol == "ETH/BTC":
            raise ccxt.BadSymbol("fakex does not have market symbol ETH/BTC")
        first = since - since % HOUR_MS
        return [
            [first + i * HOUR_MS, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0]
            for i in range(limit)
        ]


def test_protocol_capabilities_and_symbol_mapping() -> None:
    broker = CcxtBroker(FakeExchange(), max_candles_per_request=50)
    assert isinstance(broker, MarketDataBroker)
    assert broker.capabilities.timeframes == ("1m", "1h", "1d")
    assert broker.check_symbol("btc/usdt") == "BTCUSDT"
    with pytest.raises(UnknownSymbolError, match="no market BTC/EUR"):
        broker.check_symbol("BTCEUR")
    with pytest.raises(UnsupportedTimeframeError, match="serves 1m, 1h, 1d"):
        broker.fetch_candles("BTCUSDT", "4h", T0, T0 + timedelta(days=1))


def test_fetch_pages_by_the_request_limit_and_returns_the_schema() -> None:
    exchange = FakeExchange()
    broker = CcxtBroker(exchange, max_candles_per_request=50)
    frame = broker.fetch_candles("BTC-USDT", "1h", T0, T0 + timedelta(hours=120))
    assert dict(frame.schema) == CANDLE_SCHEMA
    assert frame.height == 120
    assert frame["ts"][0] == T0 and frame["ts"][-1] == T0 + timedelta(hours=119)
    assert [c[2] for c in exchange.calls] == [
        int((T0 + timedelta(hours=h)).timestamp() * 1000) for h in (0, 50, 100)
    ]
    assert {c[0] for c in exchange.calls} == {"BTC/USDT"}  # the spot market, not the swap


def test_network_errors_are_transient_and_bad_symbols_are_not() -> None:
    broker = CcxtBroker(FakeExchange([ccxt.RequestTimeout("timed out")]))
    broker.retry_budget = RetryBudget(retries=0)  # the error itself, not retried away
    with pytest.raises(TransientBrokerError) as info:
        broker.fetch_candles("BTCUSDT", "1h", T0, T0 + timedelta(hours=2))
    assert is_transient(info.value)
    broker = CcxtBroker(FakeExchange([ccxt.RequestTimeout("timed out")]))
    broker.retry_budget = RetryBudget(retries=1, delay=0)  # retried in place: served
    assert broker.fetch_candles("BTCUSDT", "1h", T0, T0 + timedelta(hours=2)).height == 2
    with pytest.raises(UnknownSymbolError) as bad:
        broker.fetch_candles("ETHBTC", "1h", T0, T0 + timedelta(hours=2))
    assert not is_transient(bad.value)


def test_unknown_exchange_id_is_a_clear_error() -> None:
    with pytest.raises(BrokerError, match="no exchange 'nosuchexchange'"):
        CcxtBroker("nosuchexchange")


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from brokers import create_broker
    from core.config import load_settings

    monkeypatch.setenv("CANDLEFLOW_BROKER__NAME", "ccxt")
    monkeypatch.setenv("CANDLEFLOW_CCXT__EXCHANGE", "kraken")
    broker = create_broker(load_settings())
    assert isinstance(broker, CcxtBroker) and broker.exchange.id == "kraken"
    assert "1h" in broker.capabilities.timeframes
