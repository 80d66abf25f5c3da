"""Alpaca orders (trading API v2, the paper host by default): ``POST /v2/orders`` with the ledger's
client order id as ``client_order_id``, a stock order as a ``bracket`` (take_profit + stop_loss;
``oto`` with one exit); crypto orders go plain (Alpaca takes no bracket order for crypto: the live
run closes such a position when a candle touches its stop or take-profit). A position closes by a
market order the other way under the client id ``<entry id>-x``, the bracket's open legs cancelled
first (they hold the shares). Looked up by
``GET /v2/orders:by_client_order_id``; rules from the asset (``GET /v2/assets/{symbol}``: crypto
``min_order_size`` / ``min_trade_increment`` / ``price_increment``; brackets need whole shares);
the account from ``GET /v2/account``, positions from ``GET /v2/positions`` (one per symbol)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from brokers.alpaca import AUTH_HINT, MIN_INTERVAL, TRADING_HOSTS
from brokers.execution import BrokerOrder
from brokers.rest import RestClient, VenueRequestError, parse_time, require_secret
from brokers.venue_execution import (
    CANCELLED,
    FILLED,
    PARTIAL,
    REFUSED,
    WORKING,
    DuplicateClientIdError,
    InstrumentRules,
    PositionExit,
    VenueAccount,
    VenueExecutionBroker,
    VenueOrder,
    VenuePosition,
    rejected,
)
from core.errors import DataFormatError, UnknownSymbolError
from core.instruments import AssetClass, instrument
from core.symbols import normalize_symbol, to_pair

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

_OPEN = ("new", "accepted", "held", "pending_new", "partially_filled", "accepted_for_bidding")
_STATUS = {
    "filled": FILLED,
    "partially_filled": PARTIAL,
    "canceled": CANCELLED,
    "expired": CANCELLED,
    "done_for_day": CANCELLED,
    "rejected": REFUSED,
}


class AlpacaExecution(VenueExecutionBroker):
    """Orders on one Alpaca account (module docstring)."""

    name = "alpaca"

    def __init__(
        self,
        key_id: SecretStr | str | None,
        secret_key: SecretStr | str | None,
        *,
        environment: str = "paper",
        dry_run: bool = True,
        engine: Engine | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(dry_run=dry_run, engine=engine, sleep=sleep)
        headers = {
            "APCA-API-KEY-ID": require_secret(key_id, AUTH_HINT, self.name),
            "APCA-API-SECRET-KEY": require_secret(secret_key, AUTH_HINT, self.name),
        }
        self.environment = environment
        self.api = RestClient(
            self.name,
            TRADING_HOSTS[environment],
            headers=headers,
            auth_hint=AUTH_HINT,
            timeout=timeout,
            min_interval=MIN_INTERVAL,
            transport=transport,
            sleep=sleep,
        )

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> AlpacaExecution:
        s = settings.alpaca
        return cls(
            s.key_id,
            s.secret_key,
            environment=s.environment,
            dry_run=settings.live.dry_run,
            engine=engine,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"AlpacaExecution(environment={self.environment!r}, dry_run={self.dry_run})"

    @property
    def account_name(self) -> str:
        return f"alpaca:{self.environment}"

    @staticmethod
    def _crypto(symbol: str) -> bool:
        return instrument(symbol).asset_class is AssetClass.CRYPTO

    def _fetch_rules(self, symbol: str) -> InstrumentRules:
        crypto = self._crypto(symbol)
        name = to_pair(symbol) if crypto else symbol
        try:
            asset = self.api.get_json(f"/v2/assets/{quote(name, safe='')}")
        except VenueRequestError as exc:
            raise UnknownSymbolError(f"Alpaca lists no asset {name!r} ({exc.code})") from None
        if not isinstance(asset, dict):
            raise DataFormatError(f"alpaca asset {name}: the answer is not an object")
        tradeable = bool(asset.get("tradable")) and asset.get("status") == "active"
        if crypto:
            tick = float(asset.get("price_increment") or 0)
            return InstrumentRules(
                symbol=symbol,
                venue_symbol=str(asset.get("symbol") or name),
                min_size=float(asset.get("min_order_size") or 0),
                size_step=float(asset.get("min_trade_increment") or 0),
                price_decimals=max(0, -math.floor(math.log10(tick))) if tick > 0 else None,
                tradeable=tradeable,
            )
        # Bracket orders take whole shares; prices of stocks ≥ $1 go in cents.
        return InstrumentRules(
            symbol, str(asset.get("symbol") or name), 1.0, 1.0, 2, None, tradeable
        )

    def exits_attached(self, symbol: str) -> bool:
        return not self._crypto(symbol)  # Alpaca takes no bracket order for crypto

    def order_body(self, order: BrokerOrder, rules: InstrumentRules) -> dict[str, Any]:
        crypto = not self.exits_attached(order.symbol)
        body: dict[str, Any] = {
            "symbol": rules.venue_symbol,
            "qty": f"{order.quantity:g}",
            "side": "buy" if order.side > 0 else "sell",
            "type": "market",
            "time_in_force": "gtc" if crypto else "day",
            "client_order_id": order.order_id,
        }
        exits = {}
        if order.take_profit is not None:
            exits["take_profit"] = {"limit_price": f"{order.take_profit:g}"}
        if order.stop_loss is not None:
            exits["stop_loss"] = {"stop_price": f"{order.stop_loss:g}"}
        if exits and crypto:
            logger.warning(
                "alpaca: %s: no stop-loss/take-profit sent (Alpaca takes no bracket order for "
                "crypto); the live run closes the position at its stop, take-profit or time-out",
                order.order_id,
            )
        elif exits:
            body |= {"order_class": "bracket" if len(exits) == 2 else "oto", **exits}
        return body

    def _send(self, order: BrokerOrder, rules: InstrumentRules) -> str:
        try:
            response = self.api.request(
                "POST", "/v2/orders", json=self.order_body(order, rules), auth_statuses=(401,)
            )
        except VenueRequestError as exc:
            if "client_order_id must be unique" in exc.code:
                raise DuplicateClientIdError(f"alpaca: {exc}") from None
            raise rejected(self.name, order.order_id, exc.code) from None
        body = response.json()
        if body.get("status") == "rejected":
            raise rejected(self.name, order.order_id, "status rejected")
        return str(body["id"])

    def _find(self, order: BrokerOrder | str, venue_id: str | None) -> VenueOrder | None:
        order_id = order if isinstance(order, str) else order.order_id
        try:
            o = self.api.get_json(
                "/v2/orders:by_client_order_id", params={"client_order_id": order_id}
            )
        except VenueRequestError as exc:
            if exc.status == 404:
                return None
            raise
        status = _STATUS.get(str(o.get("status")), WORKING)
        filled = float(o.get("filled_qty") or 0)
        price = o.get("filled_avg_price")
        if status in (CANCELLED, REFUSED) and filled > 0:
            status = PARTIAL  # cancelled after a part filled: that part is held
        when = o.get("filled_at") or o.get("updated_at")
        return VenueOrder(
            order_id,
            str(o["id"]),
            status,
            filled_quantity=filled,
            fill_price=None if price is None else float(price),
            fill_ts=parse_time(when) if when and filled > 0 else None,
            reason="" if status not in (CANCELLED, REFUSED) else f"alpaca: {o.get('status')}",
        )

    def _find_exit(self, exit: PositionExit) -> VenueOrder | None:
        return self._find(exit.exit_id, None)

    def _send_exit(self, exit: PositionExit) -> VenueOrder:
        self._cancel_legs(exit.order_id)
        order, rules = exit.order(), self.rules(exit.symbol)
        body = self.order_body(order, rules)
        try:
            self.api.request("POST", "/v2/orders", json=body, auth_statuses=(401,))
        except VenueRequestError as exc:
            if "client_order_id must be unique" not in exc.code:
                raise rejected(self.name, order.order_id, exc.code) from None
        # The answer is the accepted order, rarely filled yet: its fill is read back.
        found = self._find(order.order_id, None)
        return found or VenueOrder(order.order_id, "", WORKING)

    def _cancel_legs(self, entry_id: str) -> None:
        """Cancel the entry bracket's open stop-loss / take-profit legs (they hold the shares a
        closing order sells)."""
        try:
            entry = self.api.get_json(
                "/v2/orders:by_client_order_id", params={"client_order_id": entry_id}
            )
        except VenueRequestError as exc:
            if exc.status == 404:
                return
            raise
        for leg in entry.get("legs") or []:
            if leg.get("status") in _OPEN:
                try:
                    self.api.request("DELETE", f"/v2/orders/{quote(str(leg['id']), safe='')}")
                except VenueRequestError as exc:  # 422: filled or cancelled meanwhile
                    logger.info("alpaca: leg %s of %s not cancelled: %s", leg["id"], entry_id, exc)

    def account(self) -> VenueAccount:
        a = self.api.get_json("/v2/account")
        try:
            return VenueAccount(
                account=self.account_name,
                currency=str(a.get("currency") or "USD"),
                balance=float(a["cash"]),
                equity=float(a["equity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"alpaca: the account lacks {exc}") from None

    def positions(self) -> list[VenuePosition]:
        rows = self.api.get_json("/v2/positions")
        if not isinstance(rows, list):
            raise DataFormatError("alpaca: the positions answer is not a list")
        return [
            VenuePosition(
                symbol=normalize_symbol(p["symbol"]),
                side=-1 if p.get("side") == "short" else 1,
                quantity=abs(float(p["qty"])),
                entry_price=float(p["avg_entry_price"]),
                unrealized_pnl=float(p.get("unrealized_pl") or 0),
            )
            for p in rows
        ]
