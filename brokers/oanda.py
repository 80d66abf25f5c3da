"""OANDA v20 REST candles (FX, metals, index CFDs): ``GET /v3/instruments/{instrument}/candles``
with a Bearer token, the practice host by default. Only complete candles are returned; pages of
at most 5000 candles follow a cursor (``from`` + ``count``), so market-closed gaps cost nothing.
Daily and 4-hour candles are aligned to UTC midnight (``dailyAlignment=0``), as the store is."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl
from pydantic import SecretStr

from brokers.base import BaseBroker, BrokerCapabilities
from brokers.rest import (
    RestClient,
    VenueRequestError,
    candle_frame,
    parse_time,
    require_secret,
    rfc3339,
)
from core.errors import DataFormatError, UnknownSymbolError
from core.symbols import normalize_symbol, split_pair
from core.timeframes import Timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

HOSTS = {"practice": "https://api-fxpractice.oanda.com", "live": "https://api-fxtrade.oanda.com"}
GRANULARITIES = {
    "1m": "M1",
    "5m": "M5",
    "15m": "M15",
    "30m": "M30",
    "1h": "H1",
    "4h": "H4",
    "1d": "D",
}
PRICE_COMPONENTS = {"mid": ("M", "mid"), "bid": ("B", "bid"), "ask": ("A", "ask")}
MAX_COUNT = 5000  # OANDA refuses more ("Maximum value for 'count' exceeded")
MIN_INTERVAL = 0.01  # OANDA allows 120 requests per second; stay well below
AUTH_HINT = (
    "set CANDLEFLOW_OANDA__TOKEN to a v20 personal access token of the oanda.environment host "
    "(practice tokens only work on practice, live on live)"
)


class OandaBroker(BaseBroker):
    """OANDA candles; ``instruments`` maps symbols whose OANDA name is not ``BASE_QUOTE``."""

    name = "oanda"
    capabilities = BrokerCapabilities(
        timeframes=tuple(GRANULARITIES), max_candles_per_request=None, needs_credentials=True
    )

    def __init__(
        self,
        token: SecretStr | str | None,
        *,
        environment: str = "practice",
        price: str = "mid",
        instruments: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        page_size: int = MAX_COUNT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        bearer = require_secret(token, AUTH_HINT, self.name)
        self.environment, self.price = environment, price
        self.page_size = min(page_size, MAX_COUNT)
        self.instruments = {normalize_symbol(k): v for k, v in (instruments or {}).items()}
        self.api = RestClient(
            self.name,
            HOSTS[environment],
            headers={"Authorization": f"Bearer {bearer}", "Accept-Datetime-Format": "RFC3339"},
            auth_hint=AUTH_HINT,
            timeout=timeout,
            min_interval=MIN_INTERVAL,
            transport=transport,
            sleep=sleep,
        )
        self._known: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> OandaBroker:
        s = settings.oanda
        return cls(
            s.token,
            environment=s.environment,
            price=s.price,
            instruments=s.instruments,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"OandaBroker(environment={self.environment!r}, price={self.price!r})"

    def instrument_of(self, symbol: str) -> str:
        """``EURUSD`` → ``EUR_USD``; mapped names first (``US500`` → ``SPX500_USD``)."""
        canonical = normalize_symbol(symbol)
        if canonical in self.instruments:
            return self.instruments[canonical]
        pair = split_pair(canonical)
        return f"{pair[0]}_{pair[1]}" if pair else canonical

    def check_symbol(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        if canonical not in self._known:
            # One daily candle: OANDA answers 400 "Invalid value specified for 'instrument'"
            # for a name it does not know.
            self._candles(self.instrument_of(canonical), {"granularity": "D", "count": 1})
            self._known.add(canonical)
        return canonical

    def _candles(self, instrument: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        code, _ = PRICE_COMPONENTS[self.price]
        query = {"price": code, "dailyAlignment": 0, "alignmentTimezone": "UTC", **params}
        try:
            body = self.api.get_json(f"/v3/instruments/{instrument}/candles", params=query)
        except VenueRequestError as exc:
            if exc.status in (400, 404) and "instrument" in exc.code.lower():
                raise UnknownSymbolError(
                    f"OANDA has no instrument {instrument!r} ({exc.code}); map the symbol to "
                    'OANDA\'s name in oanda.instruments (e.g. US500 = "SPX500_USD")'
                ) from None
            raise
        candles = body.get("candles") if isinstance(body, dict) else None
        if not isinstance(candles, list):
            raise DataFormatError(f"oanda {instrument}: the answer has no 'candles' list")
        return candles

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        instrument = self.instrument_of(symbol)
        rows: list[tuple[datetime, float, float, float, float, float]] = []
        cursor = start
        while cursor < end:
            count = min(self.page_size, math.ceil((end - cursor) / tf.duration))
            params = {"granularity": GRANULARITIES[tf.name], "from": rfc3339(cursor)}
            page = self._candles(instrument, {**params, "count": count})
            closed = [c for c in page if c.get("complete") is True]
            rows.extend(self._row(c) for c in closed)
            if len(page) < count or len(closed) < len(page) or not page:
                break  # the venue has nothing newer (yet): the newest candle is still forming
            cursor = max(cursor, parse_time(page[-1]["time"]) + tf.duration)
        return candle_frame(rows)

    def _row(self, candle: dict[str, Any]) -> tuple[datetime, float, float, float, float, float]:
        _, key = PRICE_COMPONENTS[self.price]
        try:
            ohlc = candle[key]
            return (
                parse_time(candle["time"]),
                float(ohlc["o"]),
                float(ohlc["h"]),
                float(ohlc["l"]),
                float(ohlc["c"]),
                float(candle.get("volume", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"oanda: a candle lacks {exc} ({key} prices asked)") from None
