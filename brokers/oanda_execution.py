"""OANDA v20 orders: a MARKET order (``POST /v3/accounts/{id}/orders``, fill-or-kill) with
``stopLossOnFill`` / ``takeProfitOnFill``, the ledger's client order id as the order's and the
trade's ``clientExtensions.id`` (so ``GET …/orders/@{id}`` finds it and open trades name it); the
rules from ``GET …/instruments`` (minimumTradeSize, tradeUnitsPrecision, displayPrecision), the
account from ``…/summary`` and positions from ``…/openTrades``. A position closes by
``PUT …/trades/@{client id}/close`` (the trade itself is the close's key: a closed trade is found
closed, never closed twice). The practice host by default."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from brokers.execution import BrokerOrder
from brokers.oanda import OandaBroker
from brokers.rest import BrokerAuthError, VenueRequestError, parse_time
from brokers.venue_execution import (
    CANCELLED,
    FILLED,
    PARTIAL,
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
from core.symbols import normalize_symbol

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

ACCOUNT_HINT = "set oanda.account_id (CANDLEFLOW_OANDA__ACCOUNT_ID), e.g. 101-004-1234567-001"
DUPLICATE = "CLIENT_ORDER_ID_ALREADY_EXISTS"
TAG = "candleflow"


class OandaExecution(VenueExecutionBroker):
    """Orders on one OANDA v20 account (module docstring)."""

    name = "oanda"

    def __init__(
        self,
        token: SecretStr | str | None,
        account_id: str,
        *,
        environment: str = "practice",
        instruments: Mapping[str, str] | None = None,
        dry_run: bool = True,
        engine: Engine | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(dry_run=dry_run, engine=engine, sleep=sleep)
        self.data = OandaBroker(
            token,
            environment=environment,
            instruments=instruments,
            timeout=timeout,
            transport=transport,
            sleep=sleep,
        )
        if not account_id.strip():
            raise BrokerAuthError(f"oanda: no account for orders; {ACCOUNT_HINT}")
        self.account_id, self.environment = account_id.strip(), environment
        self.api = self.data.api
        self._root = f"/v3/accounts/{quote(self.account_id, safe='')}"
        self._symbols = {v: k for k, v in self.data.instruments.items()}

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> OandaExecution:
        s = settings.oanda
        return cls(
            s.token,
            s.account_id,
            environment=s.environment,
            instruments=s.instruments,
            dry_run=settings.live.dry_run,
            engine=engine,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"OandaExecution(environment={self.environment!r}, dry_run={self.dry_run})"

    @property
    def account_name(self) -> str:
        return f"oanda:{self.account_id}"

    def symbol_of(self, instrument: str) -> str:
        return self._symbols.get(instrument, normalize_symbol(instrument.replace("_", "")))

    def _fetch_rules(self, symbol: str) -> InstrumentRules:
        name = self.data.instrument_of(symbol)
        try:
            body = self.api.get_json(f"{self._root}/instruments", params={"instruments": name})
        except VenueRequestError as exc:
            raise UnknownSymbolError(f"OANDA has no instrument {name!r} ({exc.code})") from None
        found = [i for i in _list(body, "instruments") if i.get("name") == name]
        if not found:
            raise UnknownSymbolError(f"OANDA account {self.account_id} cannot trade {name!r}")
        i = found[0]
        maximum = float(i.get("maximumOrderUnits") or 0)
        return InstrumentRules(
            symbol=symbol,
            venue_symbol=name,
            min_size=float(i.get("minimumTradeSize") or 1),
            size_step=10.0 ** -int(i.get("tradeUnitsPrecision") or 0),
            price_decimals=int(i["displayPrecision"]) if "displayPrecision" in i else None,
            max_size=maximum or None,
        )

    def order_body(self, order: BrokerOrder, rules: InstrumentRules) -> dict[str, Any]:
        units = order.side * order.quantity
        ids = {"id": order.order_id, "tag": TAG}
        body: dict[str, Any] = {
            "type": "MARKET",
            "instrument": rules.venue_symbol,
            "units": f"{units:.{_decimals(rules.size_step)}f}",
            "timeInForce": "FOK",
            "positionFill": "DEFAULT",
            "clientExtensions": ids,
            "tradeClientExtensions": ids,
        }
        if order.stop_loss is not None:
            body["stopLossOnFill"] = {"price": _price(order.stop_loss, rules)}
        if order.take_profit is not None:
            body["takeProfitOnFill"] = {"price": _price(order.take_profit, rules)}
        return {"order": body}

    def _send(self, order: BrokerOrder, rules: InstrumentRules) -> str:
        try:
            response = self.api.request(
                "POST", f"{self._root}/orders", json=self.order_body(order, rules)
            )
        except VenueRequestError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            reason = (body.get("orderRejectTransaction") or {}).get("rejectReason") or exc.code
            if DUPLICATE in (reason, body.get("errorCode")):
                raise DuplicateClientIdError(f"oanda: {exc}") from None
            raise rejected(self.name, order.order_id, str(reason)) from None
        body = response.json()
        cancel = body.get("orderCancelTransaction")
        if cancel:  # e.g. MARKET_HALTED, INSUFFICIENT_MARGIN: a fill-or-kill order not filled
            raise rejected(self.name, order.order_id, str(cancel.get("reason")))
        created = body.get("orderCreateTransaction") or {}
        if "id" not in created:
            raise DataFormatError("oanda: the order answer has no orderCreateTransaction id")
        return str(created["id"])

    def _find(self, order: BrokerOrder | str, venue_id: str | None) -> VenueOrder | None:
        order_id = order if isinstance(order, str) else order.order_id
        try:
            found = self.api.get_json(f"{self._root}/orders/@{quote(order_id, safe='')}")
        except VenueRequestError as exc:
            if exc.status == 404:  # ORDER_DOESNT_EXIST
                return None
            raise
        o = found.get("order") if isinstance(found, dict) else None
        if not isinstance(o, dict):
            raise DataFormatError(f"oanda: the answer for order {order_id} has no 'order'")
        venue, state = str(o.get("id")), o.get("state")
        if state == "CANCELLED":
            return VenueOrder(order_id, venue, CANCELLED, reason="cancelled by OANDA")
        if state != "FILLED" or not o.get("tradeOpenedID"):
            return VenueOrder(order_id, venue, WORKING)
        trade = self.api.get_json(f"{self._root}/trades/{o['tradeOpenedID']}").get("trade", {})
        filled = abs(float(trade.get("initialUnits", 0)))
        asked = abs(float(o.get("units", filled)))
        return VenueOrder(
            order_id,
            venue,
            FILLED if filled >= asked else PARTIAL,
            filled_quantity=filled,
            fill_price=float(trade["price"]),
            fill_ts=parse_time(trade.get("openTime") or o["filledTime"]),
        )

    def _trade_path(self, exit: PositionExit) -> str:
        return f"{self._root}/trades/@{quote(exit.order_id, safe='')}"

    def _find_exit(self, exit: PositionExit) -> VenueOrder | None:
        trade = self.api.get_json(self._trade_path(exit)).get("trade") or {}
        if trade.get("state") != "CLOSED":
            return None
        # A closed trade: by this close or by the venue's stop-loss / take-profit (the ledger
        # asked for the close first, so the exit reason is the ledger's).
        closing = trade.get("closingTransactionIDs") or [""]
        price = trade.get("averageClosePrice")
        return VenueOrder(
            exit.exit_id,
            str(closing[-1]),
            FILLED,
            filled_quantity=exit.quantity,
            fill_price=None if price is None else float(price),
            fill_ts=parse_time(trade["closeTime"]) if trade.get("closeTime") else None,
            realized_pnl=float(trade.get("realizedPL") or 0),
        )

    def _send_exit(self, exit: PositionExit) -> VenueOrder:
        try:
            response = self.api.request("PUT", f"{self._trade_path(exit)}/close",
                                        json={"units": "ALL"})  # fmt: skip
        except VenueRequestError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            reason = (body.get("orderRejectTransaction") or {}).get("rejectReason") or exc.code
            raise rejected(self.name, exit.exit_id, str(reason)) from None
        body = response.json()
        cancel = body.get("orderCancelTransaction")
        if cancel:  # e.g. MARKET_HALTED: the trade stays open; the next run tries again
            raise rejected(self.name, exit.exit_id, str(cancel.get("reason")))
        fill = body.get("orderFillTransaction")
        if not isinstance(fill, dict):
            raise DataFormatError("oanda: the close answer has no orderFillTransaction")
        closed = [t for t in fill.get("tradesClosed") or [] if isinstance(t, dict)]
        pnl = sum(float(t.get("realizedPL") or 0) for t in closed) if closed else fill.get("pl")
        return VenueOrder(
            exit.exit_id,
            str(fill["id"]),
            FILLED,
            filled_quantity=abs(float(fill.get("units") or exit.quantity)),
            fill_price=float(fill["price"]),
            fill_ts=parse_time(fill["time"]),
            realized_pnl=None if pnl is None else float(pnl),
        )

    def account(self) -> VenueAccount:
        a = self.api.get_json(f"{self._root}/summary").get("account", {})
        try:
            return VenueAccount(
                account=self.account_name,
                currency=str(a["currency"]),
                balance=float(a["balance"]),
                equity=float(a["NAV"]),
                pending_orders=int(a.get("pendingOrderCount", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"oanda: the account summary lacks {exc}") from None

    def positions(self) -> list[VenuePosition]:
        out = []
        for t in _list(self.api.get_json(f"{self._root}/openTrades"), "trades"):
            units = float(t["currentUnits"])
            client = (t.get("clientExtensions") or {}).get("id")
            out.append(
                VenuePosition(
                    symbol=self.symbol_of(t["instrument"]),
                    side=1 if units > 0 else -1,
                    quantity=abs(units),
                    entry_price=float(t["price"]),
                    unrealized_pnl=float(t.get("unrealizedPL", 0)),
                    ids=tuple(i for i in (client, str(t["id"])) if i),
                    opened_at=parse_time(t["openTime"]) if t.get("openTime") else None,
                )
            )
        return out


def _list(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise DataFormatError(f"oanda: the answer has no {key!r} list")
    return items


def _decimals(step: float) -> int:
    return max(0, len(f"{step:.10f}".rstrip("0").split(".")[1])) if step < 1 else 0


def _price(value: float, rules: InstrumentRules) -> str:
    return f"{value:.{rules.price_decimals}f}" if rules.price_decimals is not None else str(value)
