"""Capital.com REST candles (CFDs): a session (``POST /api/v1/session`` with the API key, login
identifier and the key's password) yields ``CST`` / ``X-SECURITY-TOKEN`` headers; prices come from
``GET /api/v1/prices/{epic}`` (bid/ask per OHLC → mid by default), at most 1000 per request. The
demo host is the default. A session idles out after 10 minutes: it is reopened before that, and
once more on a 401. A window with no prices (market closed) is answered 404
``error.prices.not-found``: an empty page, not an error."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl
from pydantic import SecretStr

from brokers.base import BaseBroker, BrokerCapabilities
from brokers.rest import (
    BrokerAuthError,
    Pace,
    RestClient,
    VenueRequestError,
    candle_frame,
    parse_time,
    require_secret,
)
from core.errors import BrokerError, DataFormatError, UnknownSymbolError
from core.symbols import normalize_symbol
from core.timeframes import Timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

HOSTS = {
    "demo": "https://demo-api-capital.backend-capital.com",
    "live": "https://api-capital.backend-capital.com",
}
RESOLUTIONS = {
    "1m": "MINUTE",
    "5m": "MINUTE_5",
    "15m": "MINUTE_15",
    "30m": "MINUTE_30",
    "1h": "HOUR",
    "4h": "HOUR_4",
    "1d": "DAY",
}
MAX_PRICES = 1000  # per request (1001 → error.invalid.max)
MIN_INTERVAL = 0.1  # 10 requests per second
SESSION_INTERVAL = 1.0  # POST /session: 1 request per second
SESSION_IDLE_SECONDS = 9 * 60  # the venue drops a session after 10 idle minutes
NO_PRICES = "error.prices.not-found"
AUTH_HINT = (
    "set CANDLEFLOW_CAPITAL__API_KEY, CANDLEFLOW_CAPITAL__IDENTIFIER (login e-mail) and "
    "CANDLEFLOW_CAPITAL__PASSWORD (the API key's password) for the capital.environment host "
    "(demo keys only work on demo)"
)


class CapitalBroker(BaseBroker):
    """Capital.com candles; ``epics`` maps symbols whose epic differs (``XAUUSD`` → ``GOLD``)."""

    name = "capital"
    capabilities = BrokerCapabilities(
        timeframes=tuple(RESOLUTIONS), max_candles_per_request=MAX_PRICES, needs_credentials=True
    )

    def __init__(
        self,
        api_key: SecretStr | str | None,
        identifier: SecretStr | str | None,
        password: SecretStr | str | None,
        *,
        environment: str = "demo",
        price: str = "mid",
        epics: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = {
            "key": require_secret(api_key, AUTH_HINT, self.name),
            "identifier": require_secret(identifier, AUTH_HINT, self.name),
            "password": require_secret(password, AUTH_HINT, self.name),
        }
        self.environment, self.price = environment, price
        self.epics = {normalize_symbol(k): v for k, v in (epics or {}).items()}
        self._symbols = {epic.upper(): symbol for symbol, epic in self.epics.items()}
        self.api = RestClient(
            self.name,
            HOSTS[environment],
            auth_hint=AUTH_HINT,
            timeout=timeout,
            min_interval=MIN_INTERVAL,
            transport=transport,
            sleep=sleep,
        )
        self._session_pace = Pace(SESSION_INTERVAL, sleep, clock)
        self._clock = clock
        self._tokens: dict[str, str] | None = None
        self._last_used = float("-inf")
        self._lock = threading.Lock()
        self._known: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> CapitalBroker:
        s = settings.capital
        return cls(
            s.api_key,
            s.identifier,
            s.password,
            environment=s.environment,
            price=s.price,
            epics=s.epics,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"CapitalBroker(environment={self.environment!r}, price={self.price!r})"

    def epic_of(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        return self.epics.get(canonical, canonical)

    def check_symbol(self, symbol: str) -> str:
        """The canonical symbol (an epic the map knows, ``GOLD``, gives its symbol ``XAUUSD``)."""
        canonical = normalize_symbol(symbol)
        canonical = self._symbols.get(canonical, canonical)
        if canonical not in self._known:
            epic = self.epic_of(canonical)
            try:
                self._get(f"/api/v1/markets/{epic}")
            except VenueRequestError as exc:
                if exc.status in (400, 404):
                    raise UnknownSymbolError(
                        f"Capital.com has no epic {epic!r} ({exc.code}); map {canonical} to its "
                        "epic in capital.epics (GET /api/v1/markets?searchTerm=… lists them)"
                    ) from None
                raise
            self._known.add(canonical)
        return canonical

    def _open_session(self) -> dict[str, str]:
        self._session_pace.wait()
        response = self.api.request(
            "POST",
            "/api/v1/session",
            headers={"X-CAP-API-KEY": self._login["key"]},
            json={
                "identifier": self._login["identifier"],
                "password": self._login["password"],
                "encryptedPassword": False,
            },
        )
        cst, token = response.headers.get("CST"), response.headers.get("X-SECURITY-TOKEN")
        if not cst or not token:
            raise BrokerError(
                "capital: the session answer lacks its CST / X-SECURITY-TOKEN headers"
            )
        logger.info("capital: session opened on %s", self.environment)
        return {"CST": cst, "X-SECURITY-TOKEN": token}

    def _session(self, renew: bool = False) -> dict[str, str]:
        with self._lock:
            idle = self._clock() - self._last_used > SESSION_IDLE_SECONDS
            if renew or self._tokens is None or idle:
                self._tokens = self._open_session()
            self._last_used = self._clock()
            return self._tokens

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.session_request("GET", path, params=params)

    def session_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """A request with the session's headers, its JSON answer; a 401 (session expired)
        reopens the session once (the orders adapter shares it)."""

        def send(session: dict[str, str]) -> Any:
            response = self.api.request(method, path, params=params, json=json, headers=session)
            try:
                return response.json()
            except ValueError:
                raise DataFormatError(f"capital {method} {path}: the answer is not JSON") from None

        session = self._session()  # a refused login is not retried: the keys are wrong
        try:
            return send(session)
        except BrokerAuthError as exc:
            if exc.status != 401:
                raise
            logger.info("capital: session refused (%s); opening a new one", exc)
            return send(self._session(renew=True))

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        epic = self.epic_of(symbol)
        last_open = tf.floor(end - timedelta(microseconds=1))  # ``to`` counts both edges
        params = {
            "resolution": RESOLUTIONS[tf.name],
            "max": self.capabilities.max_candles_per_request,
            "from": start.strftime("%Y-%m-%dT%H:%M:%S"),
            "to": last_open.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            body = self._get(f"/api/v1/prices/{epic}", params)
        except VenueRequestError as exc:
            if exc.status == 404 and exc.code == NO_PRICES:
                logger.info(
                    "capital %s %s: no prices %s → %s (market closed)", epic, tf, start, end
                )
                return candle_frame([])
            if exc.status == 404:
                raise UnknownSymbolError(f"Capital.com has no epic {epic!r} ({exc.code})") from None
            raise
        prices = body.get("prices") if isinstance(body, dict) else None
        if not isinstance(prices, list):
            raise DataFormatError(f"capital {epic}: the answer has no 'prices' list")
        return candle_frame(self._row(p) for p in prices)

    def _level(self, point: dict[str, Any], key: str) -> float:
        quote = point[key]
        if self.price == "mid":
            return (float(quote["bid"]) + float(quote["ask"])) / 2
        return float(quote[self.price])

    def _row(self, point: dict[str, Any]) -> tuple[datetime, float, float, float, float, float]:
        try:
            return (
                parse_time(point["snapshotTimeUTC"]),
                self._level(point, "openPrice"),
                self._level(point, "highPrice"),
                self._level(point, "lowPrice"),
                self._level(point, "closePrice"),
                float(point.get("lastTradedVolume") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"capital: a price point lacks {exc}") from None
