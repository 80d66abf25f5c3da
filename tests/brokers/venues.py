"""Fake OANDA, Capital.com and Alpaca servers behind ``httpx.MockTransport``: they answer from the
recorded responses in ``fixtures/<venue>/`` (shaped as each venue documents them), slicing a
recorded series by the request's window and paging it the way the venue does. ``script`` queues
answers (a 429, a 503, a 401, …) served to the next data requests before the recorded ones."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from brokers.rest import parse_time

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "planted-s3cret-7d1f"  # every credential the fakes accept


def fixture(venue: str, name: str) -> Any:
    return json.loads((FIXTURES / venue / f"{name}.json").read_text())


def reply(status: int, venue: str, name: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=fixture(venue, name), headers=headers)


class FakeVenue:
    """Records every request; ``script`` answers come first for paths containing ``data_path``."""

    data_path = ""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.script: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script and self.data_path in request.url.path:
            return self.script.pop(0)
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def data_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if self.data_path in r.url.path]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class FakeOanda(FakeVenue):
    """``GET /v3/instruments/EUR_USD/candles`` (H1 and the one-candle D probe)."""

    data_path = "/candles"

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return reply(401, "oanda", "error_unauthorized")
        instrument = request.url.path.split("/")[3]
        if instrument != "EUR_USD":
            return reply(400, "oanda", "error_invalid_instrument")
        recorded = fixture("oanda", "candles_EUR_USD_H1")
        q = request.url.params
        component = {"M": "mid", "B": "bid", "A": "ask"}[q["price"]]
        candles = recorded["candles"]
        if "from" in q:
            start = parse_time(q["from"])
            candles = [c for c in candles if parse_time(c["time"]) >= start]
        candles = candles[: int(q["count"])]
        shown = [
            {k: v for k, v in c.items() if k not in {"mid", "bid", "ask"} or k == component}
            for c in candles
        ]
        body = {"instrument": instrument, "granularity": q["granularity"], "candles": shown}
        return httpx.Response(200, json=body)


class FakeCapital(FakeVenue):
    """``POST /api/v1/session``, ``GET /api/v1/markets/EURUSD``, ``GET /api/v1/prices/EURUSD``."""

    data_path = "/prices/"

    def __init__(self) -> None:
        super().__init__()
        self.sessions = 0

    def token(self) -> str:
        return f"cst-{self.sessions}"

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/session" and request.method == "POST":
            return self._login(request)
        if request.headers.get("CST") != self.token() or not self.sessions:
            return reply(401, "capital", "error_invalid_session_token")
        epic = path.rsplit("/", 1)[-1]
        if epic != "EURUSD":
            return reply(404, "capital", "error_epic_not_found")
        if path.startswith("/api/v1/markets/"):
            return reply(200, "capital", "market_EURUSD")
        q = request.url.params
        lo, hi = parse_time(q["from"]), parse_time(q["to"])
        assert (hi - lo) / timedelta(hours=1) <= int(q["max"]) - 1, "window wider than max"
        prices = [
            p
            for p in fixture("capital", "prices_EURUSD_HOUR")["prices"]
            if lo <= parse_time(p["snapshotTimeUTC"]) <= hi
        ][: int(q["max"])]
        if not prices:
            return reply(404, "capital", "error_prices_not_found")
        return httpx.Response(200, json={"prices": prices, "instrumentType": "CURRENCIES"})

    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.headers.get("X-CAP-API-KEY") != SECRET or body.get("password") != SECRET:
            return reply(401, "capital", "error_invalid_details")
        self.sessions += 1
        headers = {"CST": self.token(), "X-SECURITY-TOKEN": f"xst-{self.sessions}"}
        return reply(200, "capital", "session", **headers)

    def expire_session(self) -> None:
        """The venue drops the session (10 idle minutes): the old CST is refused."""
        self.sessions += 1


class FakeAlpaca(FakeVenue):
    """Assets on the paper trading host; bars on data.alpaca.markets, paged by ``page_token``."""

    data_path = "/bars"

    def __init__(self, page_size: int = 30) -> None:
        super().__init__()
        self.page_size = page_size
        self.market_closed = False

    def answer(self, request: httpx.Request) -> httpx.Response:
        keys = request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
        if keys != (SECRET, SECRET):
            return reply(401, "alpaca", "error_unauthorized")
        path = request.url.path
        if path.startswith("/v2/assets/"):
            assert request.url.host == "paper-api.alpaca.markets"
            name = unquote(request.url.raw_path.decode().rsplit("/", 1)[-1])
            known = {"AAPL": "asset_AAPL", "BTC/USD": "asset_BTCUSD"}
            if name not in known:
                return reply(404, "alpaca", "error_asset_not_found")
            return reply(200, "alpaca", known[name])
        assert request.url.host == "data.alpaca.markets"
        if path == "/v2/stocks/AAPL/bars":
            if self.market_closed:
                return reply(200, "alpaca", "bars_AAPL_market_closed")
            recorded = fixture("alpaca", "bars_AAPL_1Day")
            return self._page(
                request,
                recorded["bars"],
                lambda bars, token: {"bars": bars, "symbol": "AAPL", "next_page_token": token},
            )
        if path == "/v1beta3/crypto/us/bars" and request.url.params["symbols"] == "BTC/USD":
            recorded = fixture("alpaca", "bars_BTCUSD_1Hour")["bars"]["BTC/USD"]
            return self._page(
                request,
                recorded,
                lambda bars, token: {"bars": {"BTC/USD": bars}, "next_page_token": token},
            )
        raise AssertionError(f"unexpected request {request.url}")

    def _page(self, request: httpx.Request, bars: list[dict], shape: Any) -> httpx.Response:
        q = request.url.params
        lo, hi = parse_time(q["start"]), parse_time(q["end"])  # both inclusive, as documented
        if "page_token" in q:
            lo = datetime.fromtimestamp(int(base64.b64decode(q["page_token"])), UTC)
        window = [b for b in bars if lo <= parse_time(b["t"]) <= hi]
        page, rest = window[: self.page_size], window[self.page_size :]
        token = None
        if rest:
            token = base64.b64encode(str(int(parse_time(rest[0]["t"]).timestamp())).encode())
            token = token.decode()
        return httpx.Response(200, json=shape(page, token))
