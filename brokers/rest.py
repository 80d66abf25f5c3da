"""The HTTP layer the REST venues share: one httpx client per broker (timeouts, connection reuse, an
injectable transport), a request pace under the venue's limit, and the venue's answers translated
into the project's errors at the boundary: 429/5xx/timeouts are transient (a 429 carries the wait
``Retry-After`` asks for), 401/403 a non-retried ``BrokerAuthError`` naming the setting to fix, any
other 4xx a ``VenueRequestError`` for the venue module to read. Secrets travel only in headers and
bodies, never in URLs, messages or reprs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import polars as pl

from core.candles import CANDLE_SCHEMA, empty_candles
from core.errors import BrokerError, DataFormatError, TransientBrokerError

logger = logging.getLogger(__name__)

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class BrokerAuthError(BrokerError):
    """The venue refused the credentials (HTTP 401/403; ``status`` None: none were given): retrying
    cannot help; the message names the setting or environment variable to fix."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitedError(TransientBrokerError):
    """HTTP 429: retried, no sooner than ``retry_after`` seconds (None: the venue did not say)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VenueRequestError(BrokerError):
    """Any other 4xx answer: ``status`` and the venue's own ``code`` (its error code or message),
    which the venue module turns into ``UnknownSymbolError``, an empty answer, or lets through;
    ``body``: the answer's JSON (an order refusal's details), None if it was not JSON."""

    def __init__(self, message: str, status: int, code: str, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.body = status, code, body


class Pace:
    """At least ``interval`` seconds between the starts of two requests (thread-safe)."""

    def __init__(
        self,
        interval: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval, self.sleep, self.clock = interval, sleep, clock
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                self.sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def venue_message(response: httpx.Response) -> str:
    """The venue's own word on a failed request: OANDA ``errorMessage``, Capital.com ``errorCode``,
    Alpaca ``message``; else the HTTP reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("errorMessage", "errorCode", "message", "error", "code"):
            if body.get(key) not in (None, ""):
                return str(body[key])[:200]
    return response.reason_phrase or f"HTTP {response.status_code}"


def retry_after(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds ``Retry-After`` asks for (seconds or an HTTP date), else until Alpaca-style
    ``X-RateLimit-Reset`` (epoch seconds); None when the venue does not say."""
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now())
            except (TypeError, ValueError):
                pass
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - now())
    return None


class RestClient:
    """One venue's HTTP client. ``auth_hint`` ends every auth error ("set CANDLEFLOW_…")."""

    def __init__(
        self,
        venue: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth_hint: str,
        timeout: float = 10.0,
        min_interval: float = 0.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.venue, self.base_url, self.auth_hint = venue, base_url, auth_hint
        self.pace = Pace(min_interval, sleep)
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Accept": "application/json", **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"RestClient({self.venue!r}, {self.base_url!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth_statuses: tuple[int, ...] = (401, 403),
    ) -> httpx.Response:
        """One request; a 2xx response, else the translated error (see the module docstring).
        ``auth_statuses``: the answers meaning refused credentials (Alpaca answers an order it
        refuses for buying power 403: for its orders, only 401 is)."""
        what = f"{self.venue} {method} {httpx.URL(path).path}"
        self.pace.wait()
        try:
            response = self.http.request(method, path, params=params, json=json, headers=headers)
        except httpx.TransportError as exc:  # timeouts, refused/reset connections
            raise TransientBrokerError(f"{what}: {type(exc).__name__}") from None
        logger.debug("%s → HTTP %d", what, response.status_code)
        if response.is_success:
            return response
        status, said = response.status_code, venue_message(response)
        message = f"{what}: HTTP {status}: {said}"
        if status in auth_statuses:
            raise BrokerAuthError(f"{message}; {self.auth_hint}", status)
        if status == 429:
            wait = retry_after(response)
            raise RateLimitedError(
                f"{message} (rate limited; retry after {wait if wait is not None else '?'} s)",
                wait,
            )
        if status in _TRANSIENT_STATUS or status >= 500:
            raise TransientBrokerError(message)
        try:
            body = response.json()
        except ValueError:
            body = None
        raise VenueRequestError(message, status, said, body)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        response = self.request("GET", path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise DataFormatError(f"{self.venue} GET {path}: the answer is not JSON") from None

    def close(self) -> None:
        self.http.close()


def parse_time(text: str) -> datetime:
    """A venue timestamp → aware UTC: RFC 3339 with up to nanoseconds (``…00.000000000Z``), or a
    naive ISO time, taken as UTC (Capital.com's ``snapshotTimeUTC``)."""
    value = text.strip().replace("Z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:  # Python reads at most 6 fractional digits
        digits = "".join(ch for ch in rest if ch.isdigit())
        value = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise DataFormatError(f"unreadable venue timestamp {text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def candle_frame(
    rows: Iterable[tuple[datetime, float, float, float, float, float]],
) -> pl.DataFrame:
    """``(ts, open, high, low, close, volume)`` rows → a frame in the candle schema."""
    rows = list(rows)
    if not rows:
        return empty_candles()
    return pl.DataFrame(rows, schema=list(CANDLE_SCHEMA), orient="row").cast(CANDLE_SCHEMA)


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def require_secret(value: Any, hint: str, venue: str) -> str:
    """The secret's text, or a ``BrokerAuthError`` saying where to set it."""
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else (value or "")
    if not str(text).strip():
        raise BrokerAuthError(f"{venue}: no credentials; {hint}")
    return str(text).strip()
