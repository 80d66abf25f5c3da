"""One contract every market-data broker honours, run over each of them (no network): the REST
venues (OANDA, Capital.com, Alpaca) answer from recorded responses through ``httpx.MockTransport``
(``tests/brokers/venues.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from brokers.alpaca import AlpacaBroker
from brokers.base import BaseBroker, MarketDataBroker, RetryBudget, is_transient
from brokers.capital import CapitalBroker
from brokers.ccxt_broker import CcxtBroker
from brokers.files import FileBroker
from brokers.oanda import OandaBroker
from brokers.rest import BrokerAuthError, RateLimitedError
from brokers.simulated import SimulatedBroker
from core.candles import CANDLE_SCHEMA, COLUMNS, TRACE_COLUMNS
from core.errors import (
    DataFormatError,
    TransientBrokerError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from tests.brokers.test_ccxt_broker import FakeExchange
from tests.brokers.venues import SECRET, FakeAlpaca, FakeCapital, FakeOanda

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


def _no_sleep(seconds: float) -> None:
    """The REST venues' request pace, without waiting."""


def _oanda(tmp_path: Path) -> tuple[BaseBroker, str]:
    return OandaBroker(SECRET, transport=FakeOanda().transport(), sleep=_no_sleep), "EURUSD"


def _capital(tmp_path: Path) -> tuple[BaseBroker, str]:
    transport = FakeCapital().transport()
    return CapitalBroker(SECRET, SECRET, SECRET, transport=transport, sleep=_no_sleep), "EURUSD"


def _alpaca(tmp_path: Path) -> tuple[BaseBroker, str]:
    transport = FakeAlpaca().transport()
    return AlpacaBroker(SECRET, SECRET, transport=transport, sleep=_no_sleep), "BTCUSD"


BROKERS: dict[str, Callable[[Path], tuple[BaseBroker, str]]] = {
    "simulated": _simulated,
    "files": _files,
    "ccxt": _ccxt,
    "oanda": _oanda,
    "capital": _capital,
    "alpaca": _alpaca,
}
REST_VENUES = {"oanda", "capital", "alpaca"}


@pytest.fixture(params=list(BROKERS))
def broker_and_symbol(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[BaseBroker, str]:
    return BROKERS[request.param](tmp_path)


def test_is_a_market_data_broker(broker_and_symbol: tuple[BaseBroker, str]) -> None:
    broker, _ = broker_and_symbol
    assert isinstance(broker, MarketDataBroker)
    assert broker.name and "1h" in broker.capabilities.timeframes
    assert broker.capabilities.needs_credentials is (broker.name in REST_VENUES)


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


# --- The REST venues: recorded answers, paging, and every failure the venues document. ---------

MONDAY_NOON = datetime(2024, 3, 4, 12, tzinfo=UTC)


def _rest(
    name: str, *, secret: str = SECRET, page: int | None = None
) -> tuple[BaseBroker, FakeOanda | FakeCapital | FakeAlpaca, str]:
    """A REST venue broker on its fake server, paging every ``page`` candles (None: the venue's)."""
    if name == "oanda":
        fake = FakeOanda()
        broker: BaseBroker = OandaBroker(
            secret, transport=fake.transport(), sleep=_no_sleep, page_size=page or 5000
        )
        return broker, fake, "EURUSD"
    if name == "capital":
        fake = FakeCapital()
        broker = CapitalBroker(secret, SECRET, secret, transport=fake.transport(), sleep=_no_sleep)
        if page:
            broker.capabilities = replace(broker.capabilities, max_candles_per_request=page)
        return broker, fake, "EURUSD"
    fake = FakeAlpaca(page_size=page or 10_000)
    broker = AlpacaBroker(secret, SECRET, transport=fake.transport(), sleep=_no_sleep)
    return broker, fake, "BTCUSD"


@pytest.fixture(params=sorted(REST_VENUES))
def venue(request: pytest.FixtureRequest) -> str:
    return request.param


def test_rest_venue_pages_a_long_window_without_gaps_or_overlaps(venue: str) -> None:
    broker, fake, symbol = _rest(venue, page=24)
    frame = broker.fetch_candles(symbol, "1h", START, END)
    assert frame.height == 72 and frame["ts"].is_unique().all()
    assert frame["ts"].min() == START and frame["ts"].max() == END - timedelta(hours=1)
    assert len(fake.data_requests()) >= 3  # one request could not have held it


def test_rest_venue_unknown_instrument_is_not_retried(venue: str) -> None:
    broker, fake, _ = _rest(venue)
    broker.retry_budget = RetryBudget(retries=3, delay=0, sleep=_no_sleep)
    with pytest.raises(UnknownSymbolError, match="NOSUCHTHING") as info:
        broker.fetch_candles("NOSUCHTHING", "1h", START, END)
    assert not is_transient(info.value)
    assert not fake.data_requests() or venue == "oanda"  # OANDA's probe is one candle request
    assert len([r for r in fake.requests if "NOSUCHTHING" in str(r.url)]) == 1


def test_rest_venue_401_names_the_setting_and_is_not_retried(venue: str) -> None:
    broker, fake, symbol = _rest(venue, secret="wrong-key")
    broker.retry_budget = RetryBudget(retries=3, delay=0, sleep=_no_sleep)
    with pytest.raises(BrokerAuthError, match=f"CANDLEFLOW_{venue.upper()}__") as info:
        broker.fetch_candles(symbol, "1h", START, END)
    assert info.value.status == 401 and not is_transient(info.value)
    assert len(fake.requests) == 1


def test_rest_venue_429_waits_as_long_as_retry_after_says(venue: str) -> None:
    broker, fake, symbol = _rest(venue)
    waits: list[float] = []
    broker.retry_budget = RetryBudget(retries=2, delay=0.01, sleep=waits.append)
    fake.script = [
        httpx.Response(429, json={"message": "too many requests."}, headers={"Retry-After": "7"})
    ]
    frame = broker.fetch_candles(symbol, "1h", START, END)
    assert frame.height == 72
    assert waits == [7.0]  # no sooner than asked, and one retry only
    assert len(fake.data_requests()) == 2 + (venue == "oanda")  # + OANDA's symbol probe


def test_rest_venue_429_asking_more_than_the_budget_allows_fails_transient(venue: str) -> None:
    broker, fake, symbol = _rest(venue)
    waits: list[float] = []
    broker.retry_budget = RetryBudget(retries=2, delay=0.01, max_delay=60, sleep=waits.append)
    fake.script = [httpx.Response(429, headers={"Retry-After": "3600"})]
    with pytest.raises(RateLimitedError, match="retry after 3600") as info:
        broker.fetch_candles(symbol, "1h", START, END)
    assert is_transient(info.value) and info.value.retry_after == 3600 and waits == []


def test_rest_venue_5xx_then_success_is_retried_in_place(venue: str) -> None:
    broker, fake, symbol = _rest(venue, page=24)
    waits: list[float] = []
    broker.retry_budget = RetryBudget(retries=2, delay=0.01, sleep=waits.append)
    fake.script = [httpx.Response(503, text="Service Unavailable"), httpx.Response(502)]
    frame = broker.fetch_candles(symbol, "1h", START, END)
    assert frame.height == 72 and len(waits) == 2
    broker, fake, symbol = _rest(venue)
    broker.retry_budget = RetryBudget(retries=0, sleep=waits.append)
    fake.script = [httpx.Response(500)]
    with pytest.raises(TransientBrokerError, match="HTTP 500"):
        broker.fetch_candles(symbol, "1h", START, END)


def test_rest_venue_timeout_is_transient(venue: str) -> None:
    broker, _, symbol = _rest(venue)
    broker.retry_budget = RetryBudget(retries=0, sleep=_no_sleep)
    broker.check_symbol(symbol)

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    broker.api.http._transport = httpx.MockTransport(timeout)  # type: ignore[attr-defined]
    with pytest.raises(TransientBrokerError, match="ReadTimeout"):
        broker.fetch_candles(symbol, "1h", START, END)


def test_market_closed_answers_are_empty_frames(venue: str) -> None:
    """OANDA: no candles in a closed window; Capital.com: 404 error.prices.not-found; Alpaca: a
    weekend of stock bars is ``"bars": null``."""
    broker, fake, symbol = _rest(venue)
    saturday = datetime(2024, 3, 2, tzinfo=UTC)
    if venue == "alpaca":
        fake.market_closed, symbol = True, "AAPL"
        frame = broker.fetch_candles(symbol, "1d", saturday, saturday + timedelta(days=2))
    else:
        frame = broker.fetch_candles(symbol, "1h", saturday, saturday + timedelta(hours=20))
    assert frame.is_empty() and dict(frame.schema) == CANDLE_SCHEMA
    assert len(fake.data_requests()) == 1 + (venue == "oanda")  # + OANDA's symbol probe


def test_only_closed_candles(venue: str) -> None:
    """The newest recorded OANDA candle (Friday 12:00) is ``complete: false``: never returned.
    Capital.com and Alpaca only serve finished candles; their newest is 11:00 as well."""
    broker, _, symbol = _rest(venue)
    friday = datetime(2024, 3, 8, tzinfo=UTC)
    frame = broker.fetch_candles(symbol, "1h", friday, friday + timedelta(hours=15))
    assert frame["ts"].max() == friday + timedelta(hours=11)


def test_weekend_gap_is_skipped_not_filled() -> None:
    broker, fake, symbol = _rest("oanda", page=30)
    friday = datetime(2024, 3, 1, 12, tzinfo=UTC)
    frame = broker.fetch_candles(symbol, "1h", friday, MONDAY_NOON)
    # Friday 12:00-21:00 (10) and Sunday 22:00 - Monday 11:00 (14): the gap costs no request.
    assert frame.height == 24 and len(fake.data_requests()) == 2  # probe + one page
