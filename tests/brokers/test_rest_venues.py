"""What differs per REST venue (the contract suite covers what they share): OANDA price components
and instrument names, Capital.com sessions and epics, Alpaca asset classes and daily bars; the
HTTP layer's pace and Retry-After; settings, credentials and a planted secret that never shows."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from brokers.alpaca import AlpacaBroker
from brokers.base import RetryBudget
from brokers.capital import SESSION_IDLE_SECONDS, CapitalBroker
from brokers.oanda import OandaBroker
from brokers.registry import broker_infos, create_broker
from brokers.rest import BrokerAuthError, Pace, parse_time, retry_after
from cli.broker import broker_app
from core.config import load_settings
from core.errors import CandleflowError, ConfigError, UnknownSymbolError
from tests.brokers.venues import SECRET, FakeAlpaca, FakeCapital, FakeOanda, fixture

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)


def _no_sleep(seconds: float) -> None:
    pass


def test_oanda_price_component_instrument_names_and_alignment() -> None:
    fake = FakeOanda()
    broker = OandaBroker(SECRET, price="bid", transport=fake.transport(), sleep=_no_sleep)
    frame = broker.fetch_candles("EUR/USD", "1h", MONDAY, MONDAY + timedelta(hours=2))
    recorded = next(
        c
        for c in fixture("oanda", "candles_EUR_USD_H1")["candles"]
        if c["time"].startswith("2024-03-04T00")
    )
    assert frame["open"][0] == float(recorded["bid"]["o"]) != float(recorded["mid"]["o"])
    assert frame["volume"][0] == recorded["volume"]
    query = fake.data_requests()[-1].url.params
    assert (query["price"], query["granularity"], query["dailyAlignment"]) == ("B", "H1", "0")
    assert query["alignmentTimezone"] == "UTC" and query["from"] == "2024-03-04T00:00:00Z"
    assert broker.instrument_of("XAUUSD") == "XAU_USD"
    assert broker.instrument_of("us500") == "SPX500_USD" or "US500" not in broker.instruments
    mapped = OandaBroker(SECRET, instruments={"us500": "SPX500_USD"})
    assert mapped.instrument_of("US500") == "SPX500_USD"


def test_capital_logs_in_once_then_reuses_and_renews_the_session() -> None:
    fake, now = FakeCapital(), [1000.0]
    broker = CapitalBroker(
        SECRET,
        "me@example.com",
        SECRET,
        transport=fake.transport(),
        sleep=_no_sleep,
        clock=lambda: now[0],
    )
    broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=5))
    broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=5))
    logins = [r for r in fake.requests if r.url.path == "/api/v1/session"]
    assert len(logins) == 1 and logins[0].headers["X-CAP-API-KEY"] == SECRET
    assert b'"encryptedPassword":false' in logins[0].content.replace(b" ", b"")
    assert fake.data_requests()[-1].headers["X-SECURITY-TOKEN"] == "xst-1"
    fake.expire_session()  # the venue drops it: one 401, one new session, the fetch goes on
    assert broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=5)).height == 5
    assert fake.sessions == 3  # 1, dropped (2), renewed (3)
    now[0] += SESSION_IDLE_SECONDS + 1  # idle past the venue's limit: renewed before asking
    before = len(fake.requests)
    broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=5))
    assert fake.requests[before].url.path == "/api/v1/session"


def test_capital_a_second_401_is_an_auth_error() -> None:
    fake = FakeCapital()
    broker = CapitalBroker(SECRET, SECRET, SECRET, transport=fake.transport(), sleep=_no_sleep)
    broker.check_symbol("EURUSD")
    refused = httpx.Response(401, json=fixture("capital", "error_invalid_session_token"))
    fake.script = [refused, refused]
    with pytest.raises(
        BrokerAuthError, match=r"error\.invalid\.session\.token.*CANDLEFLOW_CAPITAL__"
    ):
        broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=5))
    assert fake.sessions == 2  # one renewal, then it gives up


def test_capital_mid_prices_and_epic_map() -> None:
    fake = FakeCapital()
    broker = CapitalBroker(
        SECRET,
        SECRET,
        SECRET,
        epics={"xau/usd": "GOLD"},
        transport=fake.transport(),
        sleep=_no_sleep,
    )
    frame = broker.fetch_candles("EURUSD", "1h", MONDAY, MONDAY + timedelta(hours=1))
    point = next(
        p
        for p in fixture("capital", "prices_EURUSD_HOUR")["prices"]
        if p["snapshotTimeUTC"] == "2024-03-04T00:00:00"
    )
    assert frame["high"][0] == pytest.approx(
        (point["highPrice"]["bid"] + point["highPrice"]["ask"]) / 2
    )
    assert frame["ts"][0] == MONDAY  # snapshotTimeUTC, not the platform's local snapshotTime
    assert broker.epic_of("XAUUSD") == "GOLD"
    with pytest.raises(UnknownSymbolError, match="'GOLD'"):
        broker.check_symbol("gold")  # an epic is understood as its symbol; the fake has no GOLD
    assert fake.requests[-1].url.path == "/api/v1/markets/GOLD"


def test_alpaca_stock_daily_bars_land_on_their_utc_date() -> None:
    fake = FakeAlpaca()
    broker = AlpacaBroker(SECRET, SECRET, feed="sip", transport=fake.transport(), sleep=_no_sleep)
    frame = broker.fetch_candles("AAPL", "1d", MONDAY, MONDAY + timedelta(days=4))
    assert frame["ts"].to_list() == [MONDAY + timedelta(days=d) for d in range(4)]
    query = fake.data_requests()[-1].url.params
    assert (query["timeframe"], query["feed"], query["adjustment"]) == ("1Day", "sip", "raw")


def test_alpaca_crypto_uses_the_pair_and_follows_page_tokens() -> None:
    fake = FakeAlpaca(page_size=10)
    broker = AlpacaBroker(SECRET, SECRET, transport=fake.transport(), sleep=_no_sleep)
    frame = broker.fetch_candles("BTC-USD", "1h", MONDAY, MONDAY + timedelta(hours=25))
    assert frame.height == 25
    assert fake.requests[0].url.raw_path.endswith(b"/v2/assets/BTC%2FUSD")
    pages = fake.data_requests()
    assert len(pages) == 3 and "page_token" not in pages[0].url.params
    assert all(p.url.params["symbols"] == "BTC/USD" for p in pages)
    assert pages[1].url.params["page_token"] and pages[2].url.params["page_token"]


def test_missing_credentials_fail_before_any_request() -> None:
    with pytest.raises(BrokerAuthError, match="CANDLEFLOW_OANDA__TOKEN"):
        OandaBroker(None)
    with pytest.raises(BrokerAuthError, match="CANDLEFLOW_CAPITAL__PASSWORD"):
        CapitalBroker(SECRET, SECRET, "  ")
    with pytest.raises(BrokerAuthError, match="CANDLEFLOW_ALPACA__KEY_ID"):
        AlpacaBroker("", SECRET)


def test_pace_and_retry_after() -> None:
    now, waits = [0.0], []
    pace = Pace(0.3, sleep=waits.append, clock=lambda: now[0])
    pace.wait()
    pace.wait()
    now[0] = 5.0
    pace.wait()
    assert waits == [pytest.approx(0.3)]
    request = httpx.Request("GET", "https://venue.invalid/x")
    later = format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True)
    assert (
        retry_after(
            httpx.Response(429, headers={"Retry-After": later}, request=request), lambda: 1_000_000
        )
        == 30
    )
    reset = httpx.Response(429, headers={"X-RateLimit-Reset": "1000012"}, request=request)
    assert retry_after(reset, lambda: 1_000_000) == 12
    assert retry_after(httpx.Response(429, request=request)) is None
    assert parse_time("2024-03-04T01:02:03.123456789Z") == datetime(
        2024, 3, 4, 1, 2, 3, 123456, UTC
    )
    assert parse_time("2024-03-04T01:02:03") == datetime(2024, 3, 4, 1, 2, 3, tzinfo=UTC)


def test_settings_build_each_venue_from_the_environment_and_a_secrets_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CANDLEFLOW_OANDA__TOKEN", SECRET)
    monkeypatch.setenv("CANDLEFLOW_OANDA__ENVIRONMENT", "live")
    secrets = tmp_path / "candleflow.secrets"
    secrets.write_text(
        f"CANDLEFLOW_CAPITAL__API_KEY={SECRET}\nCANDLEFLOW_CAPITAL__IDENTIFIER=me@example.com\n"
        f"CANDLEFLOW_CAPITAL__PASSWORD={SECRET}\nCANDLEFLOW_ALPACA__KEY_ID=id-from-file\n"
        f"CANDLEFLOW_ALPACA__SECRET_KEY={SECRET}\n"
    )
    monkeypatch.setenv("CANDLEFLOW_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("CANDLEFLOW_ALPACA__KEY_ID", "id-from-env")  # the environment wins
    settings = load_settings()
    assert settings.capital.password.get_secret_value() == SECRET
    assert settings.alpaca.key_id.get_secret_value() == "id-from-env"
    oanda = create_broker(settings, "oanda")
    assert isinstance(oanda, OandaBroker) and oanda.api.base_url == "https://api-fxtrade.oanda.com"
    capital = create_broker(settings, "capital")
    assert capital.api.base_url == "https://demo-api-capital.backend-capital.com"
    assert isinstance(create_broker(settings, "alpaca"), AlpacaBroker)
    monkeypatch.setenv("CANDLEFLOW_BROKER__NAME", "alpaca")
    assert load_settings().broker.name == "alpaca"
    monkeypatch.setenv("CANDLEFLOW_SECRETS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_a_planted_secret_never_shows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in settings dumps, reprs, log records (DEBUG included) or error messages."""
    for name in ("OANDA__TOKEN", "CAPITAL__API_KEY", "CAPITAL__PASSWORD", "ALPACA__SECRET_KEY"):
        monkeypatch.setenv(f"CANDLEFLOW_{name}", SECRET)
    caplog.set_level(logging.DEBUG)
    settings = load_settings()
    shown = [repr(settings), settings.model_dump_json(), str(settings.model_dump())]
    fakes = [FakeOanda(), FakeCapital(), FakeAlpaca()]
    brokers = [
        OandaBroker(settings.oanda.token, transport=fakes[0].transport(), sleep=_no_sleep),
        CapitalBroker(SECRET, "me", SECRET, transport=fakes[1].transport(), sleep=_no_sleep),
        AlpacaBroker(SECRET, SECRET, transport=fakes[2].transport(), sleep=_no_sleep),
    ]
    for broker, fake, symbol in zip(brokers, fakes, ["EURUSD", "EURUSD", "BTCUSD"], strict=True):
        broker.retry_budget = RetryBudget(retries=1, delay=0, sleep=_no_sleep)
        shown += [repr(broker), repr(broker.api), repr(broker.api.http)]
        broker.fetch_candles(symbol, "1h", MONDAY, MONDAY + timedelta(hours=3))
        fake.script = [httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(503)]
        for bad in (symbol, "NOSUCHTHING"):
            with pytest.raises(CandleflowError) as info:
                broker.fetch_candles(
                    bad, "1h", MONDAY + timedelta(hours=5), MONDAY + timedelta(hours=9)
                )
            shown += [str(info.value), repr(info.value)]
    # A broker refused its keys says which setting to fix, without echoing the key.
    broker = OandaBroker(SECRET + "x", transport=FakeOanda().transport(), sleep=_no_sleep)
    with pytest.raises(BrokerAuthError) as refused:
        broker.check_symbol("EURUSD")
    shown += [str(refused.value), caplog.text, *(r.getMessage() for r in caplog.records)]
    assert len(shown) > 20 and all(SECRET not in text for text in shown)
    assert any("HTTP 401" in text for text in shown)


def test_broker_list_names_each_broker_with_its_capabilities() -> None:
    rows = {info.name: info for info in broker_infos()}
    assert set(rows) == {"simulated", "files", "ccxt", "oanda", "capital", "alpaca", "paper"}
    for venue in ("oanda", "capital", "alpaca", "ccxt"):  # candles and orders, dry run first
        assert rows[venue].market_data and rows[venue].execution, venue
        assert rows[venue].dry_run_default is True, venue
    assert rows["oanda"].needs_credentials and "4h" in rows["oanda"].timeframes
    assert rows["paper"].execution and not rows["paper"].market_data
    assert rows["paper"].dry_run_default is False and rows["files"].dry_run_default is None
    assert not rows["simulated"].execution
    assert rows["ccxt"].timeframes == ()  # per exchange: listed when ccxt is the configured broker


def test_broker_list_command_json() -> None:
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = {"config": None, "home": None}

    app.add_typer(broker_app, name="broker")
    result = CliRunner().invoke(app, ["broker", "list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert listed["alpaca"]["timeframes"] == ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
    assert set(listed["capital"]) >= {"market_data", "execution", "dry_run_default", "timeframes"}
    table = CliRunner().invoke(app, ["broker", "list"], catch_exceptions=False)
    assert "oanda" in table.stdout and "practice" in table.stdout
