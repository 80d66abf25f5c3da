"""One contract every market-data broker honours, run over each of them (no network)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from brokers.base import BaseBroker, MarketDataBroker, is_transient
from brokers.ccxt_broker import CcxtBroker
from brokers.files import FileBroker
from brokers.simulated import SimulatedBroker
from core.candles import CANDLE_SCHEMA, COLUMNS, TRACE_COLUMNS
from core.errors import (
    DataFormatError,
    TransientBrokerError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from tests.brokers.test_ccxt_broker import FakeExchange

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
END = START + timedelta(days=3)


def _simulated(tmp_path: Path) -> tuple[BaseBroker, str]:
    return SimulatedBroker(seed=3, edge=0.1, now=lambda: datetime(2024, 6, 1, tzinfo=UTC)), "EURUSD"


def _files(tmp_path: Path) -> tuple[BaseBroker, str]:
    lines = ["Date,Open,High,Low,Close,Volume"]
    for h in range(24 * 7):
        ts = START - timedelta(days=2) + timedelta(hours=h)
        lines.append(f"{ts:%Y-%m-%d %H:%M},1.10,1.12,1.09,1.11,{h}")
    (tmp_path / "EURUSD_1h.csv").write_text("\n".join(lines) + "\n")
    return FileBroker(tmp_path), "EURUSD"


def _ccxt(tmp_path: Path) -> tuple[BaseBroker, str]:
    return CcxtBroker(FakeExchange(), max_candles_per_request=25), "BTCUSDT"


BROKERS: dict[str, Callable[[Path], tuple[BaseBroker, str]]] = {
    "simulated": _simulated,
    "files": _files,
    "ccxt": _ccxt,
}


@pytest.fixture(params=list(BROKERS))
def broker_and_symbol(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[BaseBroker, str]:
    return BROKERS[request.param](tmp_path)


def test_is_a_market_data_broker(broker_and_symbol: tuple[BaseBroker, str]) -> None:
    broker, _ = broker_and_symbol
    assert isinstance(broker, MarketDataBroker)
    assert broker.name and "1h" in broker.capabilities.timeframes
    assert broker.capabilities.needs_credentials is False


def test_fetch_returns_sorted_candles_of_the_window_in_the_schema(
    broker_and_symbol: tuple[BaseBroker, str],
) -> None:
    broker, symbol = broker_and_symbol
    frame = broker.fetch_candles(symbol.lower(), "1h", START, END)
    assert dict(frame.select(COLUMNS).schema) == CANDLE_SCHEMA
    assert set(frame.columns) - set(COLUMNS) <= set(TRACE_COLUMNS)
    assert frame.height > 0
    assert frame["ts"].is_sorted() and frame["ts"].is_unique().all()
    assert frame["ts"].min() >= START and frame["ts"].max() < END
    assert (frame["ts"].dt.minute() == 0).all()


def test_naive_datetimes_are_utc(broker_and_symbol: tuple[BaseBroker, str]) -> None:
    broker, symbol = broker_and_symbol
    aware = broker.fetch_candles(symbol, "1h", START, END)
    naive = broker.fetch_candles(symbol, "1h", START.replace(tzinfo=None), END.replace(tzinfo=None))
    assert aware.equals(naive)


def test_empty_window_is_an_empty_frame(broker_and_symbol: tuple[BaseBroker, str]) -> None:
    broker, symbol = broker_and_symbol
    frame = broker.fetch_candles(symbol, "1h", END, START)
    assert frame.is_empty() and dict(frame.select(COLUMNS).schema) == CANDLE_SCHEMA


def test_unknown_symbol_and_timeframe(broker_and_symbol: tuple[BaseBroker, str]) -> None:
    broker, _ = broker_and_symbol
    with pytest.raises(UnknownSymbolError, match="NOSUCHTHING"):
        broker.check_symbol("NOSUCHTHING")
    with pytest.raises(UnknownSymbolError, match="NOSUCHTHING"):
        broker.fetch_candles("NOSUCHTHING", "1h", START, END)


def test_unserved_timeframe_names_what_is_served(tmp_path: Path) -> None:
    broker, symbol = _ccxt(tmp_path)  # the fake exchange has no 4h candles
    with pytest.raises(UnsupportedTimeframeError, match="serves 1m, 1h, 1d"):
        broker.fetch_candles(symbol, "4h", START, END)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientBrokerError("x"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectError("refused"), True),
        (DataFormatError("bad"), False),
        (UnknownSymbolError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_transient_classification(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (500, True), (503, True), (400, False), (404, False)]
)
def test_http_status_classification(status: int, transient: bool) -> None:
    request = httpx.Request("GET", "https://venue.invalid/candles")
    response = httpx.Response(status, request=request)
    error = httpx.HTTPStatusError("status", request=request, response=response)
    assert is_transient(error) is transient
