"""The market-data protocol every broker implements, its capabilities, and a base class that holds
the shared behaviour (argument checks, paging by the venue's request limit, schema conformance).
A venue module is small: its capabilities plus ``_fetch_range``."""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar, runtime_checkable

import polars as pl

from core.candles import conform, empty_candles
from core.errors import UnsupportedTimeframeError
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, as_utc, parse_timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How one fetch rides out transient venue failures: each failed request is retried in place
    (the pages already fetched are kept), up to ``retries`` retries for the whole fetch, each after
    a fully jittered delay that doubles from ``delay`` seconds (at most ``max_delay``)."""

    retries: int = 3
    delay: float = 2.0
    max_delay: float = 60.0
    # How to wait (tests pass a recorder: nothing really sleeps).
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def runner(self, what: str) -> Callable[[Callable[[], T]], T]:
        """A caller of one fetch's requests, sharing this budget between them. A failure that
        says how long the venue wants us to wait (``retry_after``, from HTTP ``Retry-After``) is
        retried no sooner; one asking for more than ``max_delay`` is not retried here."""
        left, failures = self.retries, 0

        def call(request: Callable[[], T]) -> T:
            nonlocal left, failures
            while True:
                try:
                    return request()
                except Exception as exc:
                    wait = getattr(exc, "retry_after", None) or 0.0
                    if left <= 0 or not is_transient(exc) or wait > self.max_delay:
                        raise
                    left, failures = left - 1, failures + 1
                    pause = random.uniform(0, min(self.max_delay, self.delay * 2 ** (failures - 1)))
                    pause = max(pause, wait)
                    logger.warning("%s: %s; retrying in %.1f s (%d left)", what, exc, pause, left)
                    self.sleep(pause)

        return call


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    """What a venue can do: the timeframes it serves, how many candles one request returns, whether
    it needs credentials, whether it can place orders, and where its history starts."""

    timeframes: tuple[str, ...]
    max_candles_per_request: int | None = None
    needs_credentials: bool = False
    can_trade: bool = False
    history_start: datetime | None = None
    # A finite local dataset (the user's files): a first collection takes all of it rather than
    # only the last ``history_days``, which could miss an old file entirely.
    local_data: bool = False


@runtime_checkable
class MarketDataBroker(Protocol):
    """Anything that serves candles in the store schema."""

    name: str
    capabilities: BrokerCapabilities

    def fetch_candles(
        self, symbol: str, timeframe: str | Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        """Candles with open time in ``[start, end)``, sorted, in the candle schema. The newest one
        may still be forming: callers that store candles drop it."""
        ...

    def check_symbol(self, symbol: str) -> str:
        """The canonical symbol if this broker can serve it; ``UnknownSymbolError`` otherwise."""
        ...


class BaseBroker(ABC):
    """Shared behaviour of every market-data broker (see the module docstring)."""

    name: ClassVar[str]
    capabilities: ClassVar[BrokerCapabilities]
    # Per fetch (``fetch_candles``); ``create_broker`` sets the configured one.
    retry_budget: RetryBudget = RetryBudget()

    @classmethod
    def from_settings(cls, settings: Settings) -> BaseBroker:
        """Build the broker from the validated configuration (its own section of it)."""
        raise NotImplementedError(f"{cls.__name__} does not define from_settings")

    def check_symbol(self, symbol: str) -> str:
        return normalize_symbol(symbol)

    def check_timeframe(self, timeframe: str | Timeframe) -> Timeframe:
        tf = parse_timeframe(timeframe)
        if tf.name not in self.capabilities.timeframes:
            raise UnsupportedTimeframeError(
                f"broker {self.name!r} does not serve timeframe {tf.name}; "
                f"it serves {', '.join(self.capabilities.timeframes)}"
            )
        return tf

    def fetch_candles(
        self, symbol: str, timeframe: str | Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        call = self.retry_budget.runner(f"{self.name} {symbol} {timeframe}")
        canonical = call(lambda: self.check_symbol(symbol))
        tf = self.check_timeframe(timeframe)
        start, end = tf.floor(as_utc(start)), as_utc(end)
        if self.capabilities.history_start is not None:
            start = max(start, tf.floor(self.capabilities.history_start))
        if start >= end:
            return empty_candles()
        ts = pl.col("ts")
        pages = [
            # Each page is cut to its own window, so pages never overlap; duplicates, disorder or
            # unreadable timestamps within a page are the venue's, left for validation to
            # quarantine.
            conform(page).filter(((ts >= lo) & (ts < hi)) | ts.is_null())
            for lo, hi in self._page_windows(tf, start, end)
            for page in [call(lambda lo=lo, hi=hi: self._fetch_range(canonical, tf, lo, hi))]
        ]
        return pl.concat(pages, how="vertical") if pages else empty_candles()

    def _page_windows(self, tf: Timeframe, start: datetime, end: datetime):
        limit = self.capabilities.max_candles_per_request
        if limit is None:
            yield start, end
            return
        cursor = start
        while cursor < end:
            page_end = min(end, cursor + tf.duration * limit)
            logger.debug("%s %s: page %s → %s", self.name, tf, cursor, page_end)
            yield cursor, page_end
            cursor = page_end

    @abstractmethod
    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        """One request to the venue: candles with open time in ``[start, end)``."""


_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
# Network-level exception class names of the SDKs adapters use (matched by name so that this
# module does not import them): httpx, requests, ccxt.
_TRANSIENT_NAMES = {
    "TimeoutException",
    "ConnectError",
    "ReadError",
    "RemoteProtocolError",
    "NetworkError",
    "RequestTimeout",
    "DDoSProtection",
    "RateLimitExceeded",
    "ExchangeNotAvailable",
    "OnMaintenance",
    "ConnectionError",
    "Timeout",
}


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: timeouts, dropped connections, HTTP 5xx and 429."""
    from core.errors import TransientBrokerError

    if isinstance(exc, TransientBrokerError | TimeoutError | ConnectionError):
        return True
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_HTTP
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)
