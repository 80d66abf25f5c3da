"""Crypto exchanges through ccxt (100+ venues) behind the market-data protocol.

Market data needs no credentials. ccxt's network errors become ``TransientBrokerError`` (retried by
the collect task), an unknown market becomes ``UnknownSymbolError``. ``EURUSD``-style canonical
symbols map to the exchange's ``BASE/QUOTE`` market (``BTCUSDT`` → ``BTC/USDT``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ccxt
import polars as pl

from brokers.base import BaseBroker, BrokerCapabilities
from core.candles import CANDLE_SCHEMA
from core.errors import BrokerError, TransientBrokerError, UnknownSymbolError
from core.symbols import normalize_symbol, to_pair
from core.timeframes import TIMEFRAMES, Timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _translate(exc: Exception, what: str) -> BrokerError:
    if isinstance(exc, ccxt.BadSymbol):
        return UnknownSymbolError(f"{what}: {exc}")
    if isinstance(exc, ccxt.NetworkError):  # timeouts, rate limits, maintenance, DDoS protection
        return TransientBrokerError(f"{what}: {type(exc).__name__}: {exc}")
    return BrokerError(f"{what}: {type(exc).__name__}: {exc}")


class CcxtBroker(BaseBroker):
    """One ccxt exchange; pass an exchange id (``"binance"``) or a ready ccxt exchange object."""

    name = "ccxt"

    def __init__(
        self,
        exchange: str | Any,
        max_candles_per_request: int = 1000,
        options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(exchange, str):
            if exchange not in ccxt.exchanges:
                raise BrokerError(f"ccxt has no exchange {exchange!r}")
            exchange = getattr(ccxt, exchange)({"enableRateLimit": True, **(options or {})})
        self.exchange = exchange
        if not self.exchange.has.get("fetchOHLCV"):
            raise BrokerError(f"exchange {self.exchange.id!r} does not serve candles (fetchOHLCV)")
        served = tuple(tf for tf in TIMEFRAMES if tf in (self.exchange.timeframes or {}))
        # Paging is by cursor here (``_fetch_range``), not by fixed windows: venues cap a request
        # below what was asked (Kraken: 720) and a fixed window would silently lose the rest.
        self.capabilities = BrokerCapabilities(
            timeframes=served,
            max_candles_per_request=None,
            needs_credentials=False,
            can_trade=True,
        )
        self.page_size = max_candles_per_request
        self._markets: dict[str, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CcxtBroker:
        section = settings.ccxt
        return cls(section.exchange, section.max_candles_per_request, dict(section.options))

    def _market_ids(self) -> dict[str, str]:
        """Canonical symbol → the exchange's unified market symbol (spot markets first)."""
        with self._lock:
            return self._markets if self._markets is not None else self._load_markets()

    def _load_markets(self) -> dict[str, str]:
        if self._markets is None:
            try:
                markets = self.exchange.load_markets()
            except ccxt.BaseError as exc:
                raise _translate(exc, f"{self.exchange.id}: loading markets") from exc
            ids: dict[str, str] = {}
            for unified, market in sorted(markets.items(), key=lambda m: not m[1].get("spot")):
                ids.setdefault(normalize_symbol(f"{market['base']}{market['quote']}"), unified)
            self._markets = ids
        return self._markets

    def check_symbol(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        if canonical not in self._market_ids():
            raise UnknownSymbolError(
                f"exchange {self.exchange.id!r} has no market {to_pair(canonical)} ({canonical})"
            )
        return canonical

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        market = self._market_ids()[symbol]
        cursor, stop = _ms(start), _ms(end)
        step = tf.seconds * 1000
        rows: list[list] = []
        while cursor < stop:
            try:
                page = self.exchange.fetch_ohlcv(
                    market, tf.name, since=cursor, limit=self.page_size
                )
            except ccxt.BaseError as exc:
                raise _translate(exc, f"{self.exchange.id} {market} {tf}") from exc
            page = [row for row in page or [] if row and row[0] is not None and row[0] >= cursor]
            if not page:
                break  # nothing more (yet) from the venue
            rows.extend(page)
            cursor = max(row[0] for row in page) + step
        frame = pl.DataFrame(
            rows or None, schema=["ts_ms", "open", "high", "low", "close", "volume"], orient="row"
        )
        return frame.select(
            pl.from_epoch(pl.col("ts_ms").cast(pl.Int64), time_unit="ms")
            .dt.replace_time_zone("UTC")
            .cast(CANDLE_SCHEMA["ts"])
            .alias("ts"),
            *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
        )
