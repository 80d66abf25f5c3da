"""Alpaca market data v2 bars: US stocks (``GET /v2/stocks/{symbol}/bars``) and crypto
(``GET /v1beta3/crypto/us/bars``) from data.alpaca.markets, paged by ``page_token``, with the
``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers of a paper (default) or live account. Which
endpoint a symbol takes comes from its asset (``GET /v2/assets/{symbol}`` on the account's trading
host: ``class`` ``us_equity`` or ``crypto``; 404 for a symbol Alpaca does not list). Alpaca returns
only finished bars; daily stock bars open at midnight New York time and are stored on that date."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
from core.instruments import AssetClass, instrument
from core.symbols import normalize_symbol, to_pair
from core.timeframes import Timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

DATA_HOST = "https://data.alpaca.markets"
TRADING_HOSTS = {"paper": "https://paper-api.alpaca.markets", "live": "https://api.alpaca.markets"}
TIMEFRAMES = {
    "1m": "1Min",
    "5m": "5Min",
    "15m": "15Min",
    "30m": "30Min",
    "1h": "1Hour",
    "4h": "4Hour",
    "1d": "1Day",
}
PAGE_LIMIT = 10_000  # the most bars one page holds
MIN_INTERVAL = 0.3  # the free plan allows 200 requests per minute
AUTH_HINT = (
    "set CANDLEFLOW_ALPACA__KEY_ID and CANDLEFLOW_ALPACA__SECRET_KEY to a key pair of the "
    "alpaca.environment account (paper keys only work with paper); a 403 on recent stock bars "
    "can also mean the plan does not cover alpaca.feed = sip"
)


class AlpacaBroker(BaseBroker):
    """Alpaca stock and crypto bars (crypto as ``BTC/USD`` pairs; ``BTCUSD`` → ``BTC/USD``)."""

    name = "alpaca"
    capabilities = BrokerCapabilities(
        timeframes=tuple(TIMEFRAMES), max_candles_per_request=None, needs_credentials=True
    )

    def __init__(
        self,
        key_id: SecretStr | str | None,
        secret_key: SecretStr | str | None,
        *,
        environment: str = "paper",
        feed: str = "iex",
        adjustment: str = "raw",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {
            "APCA-API-KEY-ID": require_secret(key_id, AUTH_HINT, self.name),
            "APCA-API-SECRET-KEY": require_secret(secret_key, AUTH_HINT, self.name),
        }
        self.environment, self.feed, self.adjustment = environment, feed, adjustment
        self.api = RestClient(
            self.name,
            DATA_HOST,
            headers=headers,
            auth_hint=AUTH_HINT,
            timeout=timeout,
            min_interval=MIN_INTERVAL,
            transport=transport,
            sleep=sleep,
        )
        self._assets: dict[str, tuple[str, str]] = {}  # canonical → (asset class, Alpaca symbol)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlpacaBroker:
        s = settings.alpaca
        return cls(
            s.key_id,
            s.secret_key,
            environment=s.environment,
            feed=s.feed,
            adjustment=s.adjustment,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker(environment={self.environment!r}, feed={self.feed!r})"

    def check_symbol(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        if canonical not in self._assets:
            crypto = instrument(canonical).asset_class is AssetClass.CRYPTO
            lookup = to_pair(canonical) if crypto else canonical
            url = f"{TRADING_HOSTS[self.environment]}/v2/assets/{quote(lookup, safe='')}"
            try:
                asset = self.api.get_json(url)
            except VenueRequestError as exc:
                if exc.status in (404, 422):
                    raise UnknownSymbolError(
                        f"Alpaca lists no asset {lookup!r} ({exc.code})"
                    ) from None
                raise
            if not isinstance(asset, dict) or "class" not in asset:
                raise DataFormatError(f"alpaca asset {lookup}: the answer has no 'class'")
            if asset.get("status") not in (None, "active"):
                logger.warning("alpaca: asset %s is %s", lookup, asset.get("status"))
            self._assets[canonical] = (str(asset["class"]), str(asset.get("symbol") or lookup))
        return canonical

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        asset_class, venue_symbol = self._assets[self.check_symbol(symbol)]
        params: dict[str, Any] = {
            "timeframe": TIMEFRAMES[tf.name],
            "start": rfc3339(start),
            "end": rfc3339(end),
            "limit": PAGE_LIMIT,
        }
        if asset_class == "crypto":
            path, params["symbols"] = "/v1beta3/crypto/us/bars", venue_symbol
        else:
            path = f"/v2/stocks/{quote(venue_symbol, safe='')}/bars"
            params |= {"feed": self.feed, "adjustment": self.adjustment}
        rows = []
        while True:
            body = self.api.get_json(path, params=params)
            if not isinstance(body, dict):
                raise DataFormatError(f"alpaca {venue_symbol}: the answer is not an object")
            bars = body.get("bars") or []  # null on a day the market was closed
            if isinstance(bars, dict):  # the multi-symbol (crypto) shape
                bars = bars.get(venue_symbol) or []
            rows.extend(self._row(bar, tf) for bar in bars)
            token = body.get("next_page_token")
            if not token:
                return candle_frame(rows)
            params["page_token"] = token

    @staticmethod
    def _row(
        bar: dict[str, Any], tf: Timeframe
    ) -> tuple[datetime, float, float, float, float, float]:
        try:
            ts = parse_time(bar["t"])
            if tf.name == "1d":
                ts = tf.floor(ts)  # 04:00/05:00 UTC = midnight New York: that date
            return (
                ts,
                float(bar["o"]),
                float(bar["h"]),
                float(bar["l"]),
                float(bar["c"]),
                float(bar["v"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"alpaca: a bar lacks {exc}") from None
