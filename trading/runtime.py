"""What a process keeps between live runs, in one object: the ledger (its engine open, its schema
migrated once) per database URL, the candle store (whole-file reads kept until a file changes) and
the loaded registered models per state directory. A long-lived ``candleflow serve`` process
starts each run from them (:meth:`LiveRuntime.open_run`) instead of loading them again."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient

from brokers.registry import create_execution_broker
from core.config import Settings
from core.errors import CandleflowError
from core.store import CandleStore
from core.symbols import normalize_symbol
from core.timeframes import as_utc
from models.tracking import setup
from trading.ledger import Ledger
from trading.live import LiveContext, one_line
from trading.live_models import ModelCache
from trading.orders import pending_positions, recover_orders
from trading.reconcile import reconcile

logger = logging.getLogger(__name__)

STORE_CACHE_MB = 512


class LiveRuntime:
    """The live stage's long-lived state for one process (thread-safe)."""

    def __init__(self, store_cache_mb: int = STORE_CACHE_MB) -> None:
        self.store_cache_mb = store_cache_mb
        self._ledgers: dict[str, Ledger] = {}
        self._stores: dict[Path, CandleStore] = {}
        self._models: dict[Path, ModelCache] = {}
        self._lock = threading.Lock()

    def ledger(self, url: str) -> Ledger:
        """The ledger of ``url``: one engine (connection pool) per database for the process."""
        with self._lock:
            if url not in self._ledgers:
                self._ledgers[url] = Ledger(url)
            return self._ledgers[url]

    def store(self, home: Path) -> CandleStore:
        with self._lock:
            if home not in self._stores:
                self._stores[home] = CandleStore(home, cache_mb=self.store_cache_mb)
            return self._stores[home]

    def models(self, home: Path, client: MlflowClient) -> ModelCache:
        """The registered models loaded for ``home`` (read with the first run's ``client``)."""
        with self._lock:
            if home not in self._models:
                self._models[home] = ModelCache(client)
            return self._models[home]

    def open_run(
        self, settings: Settings, symbols: list[str], timeframe: str, now: datetime | None = None
    ) -> LiveContext:
        """A live run's context: the configured execution broker (``live.execution_broker``),
        the orders earlier runs left unsent sent again or expired (``trading.orders``), the paper
        account brought up to the newest candles (fills, exits) — or a venue's fills and positions
        reconciled with the ledger (``trading.reconcile``) — and snapshotted, the orders still
        pending, the registry's aliases read once. A symbol whose candles cannot be read is left
        out of the update and named in ``unreadable``."""
        now = as_utc(now) if now is not None else datetime.now(UTC)
        ledger = self.ledger(settings.live.resolved_database_url(settings.home))
        broker = create_execution_broker(settings, ledger.engine)
        store = self.store(settings.home)
        candles, unreadable = _read_candles(store, symbols, timeframe)
        max_age = settings.live.new_order_max_age_bars
        # Before the update: a resent order fills on the candle it was meant to fill on.
        recovery = recover_orders(ledger, broker, symbols, timeframe, now, max_age)
        reconciliation = None
        if getattr(broker, "venue", False):  # a real venue fills orders itself: ask it
            reconciliation = reconcile(ledger, broker, now, candles)
            for warning in reconciliation.warnings():
                logger.warning(warning)
        else:
            broker.update(candles, timeframe)
        client = setup(settings.home, settings.mlflow.tracking_uri)  # also MLflow's URI, for loads
        cache = self.models(settings.home, client)
        cache.refresh()  # the run's aliases, in one registry query
        return LiveContext(
            settings,
            store,
            ledger,
            broker,
            cache,
            broker.state(),
            now,
            # after the update: fills are positions now
            pending=pending_positions(ledger, store, now, max_age),
            unreadable=unreadable,
            recovery=recovery,
            reconciliation=reconciliation,
        )

    def close(self) -> None:
        """Close the engines and forget everything (the next run loads afresh)."""
        with self._lock:
            for ledger in self._ledgers.values():
                ledger.dispose()
            self._ledgers.clear()
            self._stores.clear()
            self._models.clear()


def _read_candles(
    store: CandleStore, symbols: list[str], timeframe: str
) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Each symbol's candles for the paper account's update, and why those that cannot be read
    were not (an unreadable file costs its own symbol only)."""
    candles, unreadable = {}, {}
    for symbol in symbols:
        try:
            candles[symbol] = store.read(symbol, timeframe)
        except CandleflowError as exc:
            logger.error("%s %s: %s", symbol, timeframe, exc)
            unreadable[normalize_symbol(symbol)] = one_line(exc)
    return candles, unreadable
