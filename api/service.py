"""What the HTTP signal service keeps between requests, in one object: the candle store (whole-file
reads cached until a file changes), the ledger, the registered models (the registry's aliases read
again every ``api.model_refresh_seconds``) and the paper account's snapshot (read again after
``ACCOUNT_TTL_SECONDS``: it only sizes the order a prediction would place). No FastAPI here."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import polars as pl

from brokers.execution import AccountSnapshot
from brokers.paper import PaperBroker
from core.config import Settings
from core.errors import CandleflowError
from core.store import CandleStore
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe
from features.incremental import FeatureStreams
from models.risk import Position
from trading import alerts as alert_store
from trading.ledger import Ledger
from trading.live import LiveContext
from trading.live_models import LiveModel
from trading.orders import pending_positions
from trading.predict import Prediction, candle_frame, overlay, predict
from trading.records import json_safe
from trading.scoring import ScoredMemo

ACCOUNT_TTL_SECONDS = 1.0
STORE_CACHE_MB = 256


class NotFoundError(CandleflowError):
    """A symbol, timeframe or record the service does not have."""


class Models(Protocol):
    """Where the registered models come from (``trading.live_models.ModelCache``)."""

    def get(self, name: str, alias: str) -> LiveModel | None: ...


@dataclass(frozen=True)
class _Account:
    snapshot: AccountSnapshot
    pending: tuple[Position, ...]
    read_at: float


class SignalService:
    """The service's long-lived state (thread-safe). ``models`` and ``registry`` (the model
    list of ``GET /v1/models``) default to the MLflow registry of ``settings``; tests give
    their own."""

    def __init__(
        self,
        settings: Settings,
        models: Models | None = None,
        registry: Callable[[], list[dict[str, Any]]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = CandleStore(settings.home, cache_mb=STORE_CACHE_MB)
        self.ledger = Ledger.from_settings(settings.live, settings.home)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._models, self._registry = models, registry
        self._refreshed = float("-inf")
        self._account: _Account | None = None
        self._lock = threading.Lock()
        self.broker = PaperBroker(self.ledger.engine, settings.paper, settings.costs)
        # The newest candle's features one step per new candle (``features.incremental``):
        # for the store's own candles only, never a request's candles laid over them.
        self.features = FeatureStreams()
        self.memo = ScoredMemo()  # one scoring per model and stored candle, however often asked

    # -- models ----------------------------------------------------------------------------
    def models(self) -> Models:
        """The registered models, their aliases re-read when ``model_refresh_seconds`` passed."""
        with self._lock:
            if self._models is None:
                from models.tracking import setup
                from trading.live_models import ModelCache

                s = self.settings
                self._models = ModelCache(setup(s.home, s.mlflow.tracking_uri))
            refresh = getattr(self._models, "refresh", None)
            due = time.monotonic() - self._refreshed >= self.settings.api.model_refresh_seconds
            if refresh is not None and due:
                refresh()
                self._refreshed = time.monotonic()
            return self._models

    def registry(self) -> list[dict[str, Any]]:
        """Every registered model with its versions, aliases, metrics and decisions."""
        if self._registry is not None:
            return self._registry()
        from models.registry import list_models

        cache = self.models()
        return list_models(cache.client)  # type: ignore[attr-defined]

    # -- symbols ---------------------------------------------------------------------------
    def known_symbols(self) -> set[str]:
        """The configured universe and every symbol with stored candles."""
        stored = {p.stem for p in (self.settings.home / "candles").glob("*/*.parquet")}
        return set(self.settings.universe.symbols) | stored

    def check_unit(self, symbol: str, timeframe: str | None) -> tuple[str, str]:
        """The symbol and timeframe, normalised; an unknown symbol is :class:`NotFoundError`."""
        symbol = normalize_symbol(symbol)
        tf = parse_timeframe(timeframe or self.settings.universe.timeframes[0]).name
        if symbol not in self.known_symbols():
            raise NotFoundError(
                f"unknown symbol {symbol}: not in the configured universe and no candles stored"
            )
        return symbol, tf

    # -- predictions -----------------------------------------------------------------------
    def context(self, store: CandleStore, now: datetime) -> LiveContext:
        """A live run's context for one prediction (no order is placed through it)."""
        account = self._account_now(now)
        return LiveContext(
            self.settings,
            store,
            self.ledger,
            self.broker,
            self.models(),  # type: ignore[arg-type]
            account.snapshot,
            now,
            pending=account.pending,
            features=self.features if store is self.store else None,
            memo=self.memo if store is self.store else None,
        )

    def _account_now(self, now: datetime) -> _Account:
        with self._lock:
            account = self._account
            if account is None or time.monotonic() - account.read_at > ACCOUNT_TTL_SECONDS:
                max_age = self.settings.live.new_order_max_age_bars
                pending = pending_positions(self.ledger, self.store, now, max_age)
                account = _Account(self.broker.state(), pending, time.monotonic())
                self._account = account
            return account

    def predict(
        self, symbol: str, timeframe: str | None, candles: Sequence[Mapping[str, object]] = ()
    ) -> Prediction:
        """The champion's decision on the newest closed candle (of the store, with ``candles``
        laid over it once they pass the import's validation); nothing placed or stored."""
        symbol, tf = self.check_unit(symbol, timeframe)
        now = self.clock()
        store: CandleStore = self.store
        if candles:
            store = overlay(self.store, self.settings, symbol, tf, candle_frame(candles), now)
        return predict(self.context(store, now), symbol, tf)

    # -- the ledger ------------------------------------------------------------------------
    def signals(
        self,
        symbol: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        action: str | None = None,
        shadow: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The ledger's newest signals first (``action``: BUY, SELL or FLAT)."""
        frame = self.ledger.signals(since=since, symbol=symbol, shadow=shadow)
        if action is not None:
            side = {"BUY": 1, "SELL": -1, "FLAT": 0}[action]
            frame = frame.filter(pl.col("action") == side)
        rows = frame.reverse().head(limit).to_dicts()
        for row in rows:
            row["action"] = None if row["action"] is None else _ACTION_NAMES[row["action"]]
            for name in ("components", "explanation"):  # JSON text in the ledger's frames
                row[name] = None if row[name] is None else json.loads(row[name])
        return rows

    # -- TradingView alerts ----------------------------------------------------------------
    def receive_alert(self, body: Mapping[str, object]) -> tuple[alert_store.Alert, int, bool]:
        """Validate and store an alert once; (alert, row id, created)."""
        now = self.clock()
        alert = alert_store.parse_alert(
            body,
            self.known_symbols(),
            self.settings.universe.timeframes[0],
            now,
            timedelta(seconds=self.settings.api.webhook_max_age_seconds),
        )
        row_id, created = alert_store.store_alert(self.ledger.engine, alert, now)
        return alert, row_id, created

    def alerts(
        self, symbol: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return alert_store.recent_alerts(self.ledger.engine, since, symbol, limit)

    def alert_hit_rates(self, days: int = 90) -> list[dict[str, Any]]:
        """Each alert strategy's resolved BUY hit rate per symbol × timeframe."""
        since = self.clock() - timedelta(days=days)
        rows = alert_store.recent_alerts(self.ledger.engine, since, None, limit=1_000_000)
        keys = {(str(r["symbol"]), str(r["timeframe"])) for r in rows}
        candles = {k: self.store.read(*k) for k in keys}
        rates = alert_store.hit_rates(rows, candles, self.settings.labels)
        return [json_safe(r) for r in rates.to_dicts()]  # type: ignore[misc]  # NaN: None

    def close(self) -> None:
        self.ledger.dispose()


_ACTION_NAMES = {1: "BUY", -1: "SELL", 0: "FLAT"}
