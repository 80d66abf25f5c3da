"""Capital.com orders (the demo host by default): a market position (``POST /api/v1/positions``
with ``stopLevel`` / ``profitLevel``) answered by a ``dealReference``, confirmed with
``GET /api/v1/confirms/{dealReference}`` (ACCEPTED: the position's ``dealId``; REJECTED: the
reason). Capital.com takes no client order id: an order is found again by its ``dealId`` (stored
in the ledger) or, when a run stopped before storing it, by an open position of the same epic,
direction and size opened after the signal candle closed. Rules from ``GET /api/v1/markets/{epic}``
(``dealingRules``, ``decimalPlacesFactor``, ``marketStatus``); the account from
``GET /api/v1/accounts``, positions from ``GET /api/v1/positions``. A position closes by
``DELETE /api/v1/positions/{dealId}``, confirmed like an order (the close's level and profit);
a position no longer open is not closed again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from brokers.capital import CapitalBroker
from brokers.execution import BrokerOrder
from brokers.rest import VenueRequestError, parse_time
from brokers.venue_execution import (
    FILLED,
    REFUSED,
    InstrumentRules,
    PositionExit,
    VenueAccount,
    VenueExecutionBroker,
    VenueOrder,
    VenuePosition,
    rejected,
)
from core.errors import BrokerError, DataFormatError, UnknownSymbolError
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)


class CapitalExecution(VenueExecutionBroker):
    """Positions on the Capital.com account of the session (module docstring)."""

    name = "capital"

    def __init__(
        self,
        api_key: SecretStr | str | None,
        identifier: SecretStr | str | None,
        password: SecretStr | str | None,
        *,
        environment: str = "demo",
        epics: Mapping[str, str] | None = None,
        dry_run: bool = True,
        engine: Engine | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(dry_run=dry_run, engine=engine, sleep=sleep)
        self.data = CapitalBroker(
            api_key,
            identifier,
            password,
            environment=environment,
            epics=epics,
            timeout=timeout,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )
        self.environment = environment

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> CapitalExecution:
        s = settings.capital
        return cls(
            s.api_key,
            s.identifier,
            s.password,
            environment=s.environment,
            epics=s.epics,
            dry_run=settings.live.dry_run,
            engine=engine,
            timeout=s.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"CapitalExecution(environment={self.environment!r}, dry_run={self.dry_run})"

    @property
    def account_name(self) -> str:
        # From the configuration, as every venue's: the same before and after the first
        # account request, so reconciliation and snapshots name one account.
        return f"capital:{self.environment}"

    def _call_venue(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.data.session_request(method, path, **kwargs)

    def _fetch_rules(self, symbol: str) -> InstrumentRules:
        epic = self.data.epic_of(symbol)
        try:
            market = self._call_venue("GET", f"/api/v1/markets/{epic}")
        except VenueRequestError as exc:
            raise UnknownSymbolError(f"Capital.com has no epic {epic!r} ({exc.code})") from None
        rules, snapshot = market.get("dealingRules") or {}, market.get("snapshot") or {}

        def value(key: str) -> float | None:
            item = rules.get(key) or {}
            return None if item.get("value") is None else float(item["value"])

        decimals = snapshot.get("decimalPlacesFactor")
        return InstrumentRules(
            symbol=symbol,
            venue_symbol=epic,
            min_size=value("minDealSize") or 0.0,
            size_step=value("minSizeIncrement") or 0.0,
            price_decimals=None if decimals is None else int(decimals),
            max_size=value("maxDealSize"),
            tradeable=snapshot.get("marketStatus", "TRADEABLE") == "TRADEABLE",
        )

    def order_body(self, order: BrokerOrder, rules: InstrumentRules) -> dict[str, Any]:
        body: dict[str, Any] = {
            "epic": rules.venue_symbol,
            "direction": "BUY" if order.side > 0 else "SELL",
            "size": order.quantity,
            "guaranteedStop": False,
        }
        if order.stop_loss is not None:
            body["stopLevel"] = order.stop_loss
        if order.take_profit is not None:
            body["profitLevel"] = order.take_profit
        return body

    def _send(self, order: BrokerOrder, rules: InstrumentRules) -> str:
        try:
            answer = self._call_venue(
                "POST", "/api/v1/positions", json=self.order_body(order, rules)
            )
        except VenueRequestError as exc:
            raise rejected(self.name, order.order_id, exc.code) from None
        reference = str(answer.get("dealReference") or "")
        if not reference:
            raise DataFormatError("capital: the order answer has no dealReference")
        try:
            confirmed = self._confirm(order.order_id, reference)
        except Exception as exc:  # sent: the ledger keeps the reference, reconciled next run
            logger.warning(
                "capital: %s sent (%s); confirm failed: %s", order.order_id, reference, exc
            )
            return reference
        if confirmed.status == REFUSED:
            raise rejected(self.name, order.order_id, confirmed.reason)
        return confirmed.venue_id

    def _confirm(self, order_id: str, reference: str) -> VenueOrder:
        c = self._call_venue("GET", f"/api/v1/confirms/{reference}")
        if c.get("dealStatus") != "ACCEPTED":
            reason = c.get("rejectReason") or c.get("reason") or c.get("dealStatus")
            return VenueOrder(order_id, reference, REFUSED, reason=str(reason))
        affected = c.get("affectedDeals") or []
        deal = (affected[0].get("dealId") if affected else None) or c.get("dealId") or reference
        return VenueOrder(
            order_id,
            str(deal),
            FILLED,
            filled_quantity=float(c.get("size") or 0),
            fill_price=None if c.get("level") is None else float(c["level"]),
            fill_ts=parse_time(c["date"]) if c.get("date") else None,
            realized_pnl=None if c.get("profit") is None else float(c["profit"]),  # a close's
        )

    def _find(self, order: BrokerOrder | str, venue_id: str | None) -> VenueOrder | None:
        order_id = order if isinstance(order, str) else order.order_id
        if venue_id and venue_id.startswith("o_"):  # a deal reference never confirmed
            return self._confirm(order_id, venue_id)
        for p in self._raw_positions():
            position, epic = p["position"], p["market"]["epic"]
            if venue_id and position.get("dealId") == venue_id:
                return self._held(order_id, position)
            if venue_id is None and isinstance(order, BrokerOrder):
                closed = order.candle_ts + parse_timeframe(order.timeframe).duration
                direction = "BUY" if order.side > 0 else "SELL"
                opened = parse_time(position["createdDateUTC"])
                same = (epic, position["direction"]) == (self.data.epic_of(order.symbol), direction)
                if same and float(position["size"]) == order.quantity and opened >= closed:
                    return self._held(order_id, position)
        return None

    @staticmethod
    def _held(order_id: str, position: dict[str, Any]) -> VenueOrder:
        return VenueOrder(
            order_id,
            str(position["dealId"]),
            FILLED,
            filled_quantity=float(position["size"]),
            fill_price=float(position["level"]),
            fill_ts=parse_time(position["createdDateUTC"]),
        )

    def _raw_positions(self) -> list[dict[str, Any]]:
        rows = self._call_venue("GET", "/api/v1/positions").get("positions")
        if not isinstance(rows, list):
            raise DataFormatError("capital: the answer has no 'positions' list")
        return rows

    def _deal_id(self, exit: PositionExit) -> str:
        if not exit.venue_id or exit.venue_id.startswith("o_"):
            raise BrokerError(
                f"capital: position of {exit.order_id} has no deal id in the ledger "
                f"({exit.venue_id!r}); close it at Capital.com by hand"
            )
        return exit.venue_id

    def _find_exit(self, exit: PositionExit) -> VenueOrder | None:
        deal = self._deal_id(exit)
        if any(p["position"].get("dealId") == deal for p in self._raw_positions()):
            return None
        # Gone: closed by an earlier run whose answer was lost (or at the venue). Its close
        # is confirmed only under the close's deal reference, which was not kept: the price,
        # time and profit are unknown here (the account's balance has them).
        return VenueOrder(exit.exit_id, deal, FILLED, filled_quantity=exit.quantity)

    def _send_exit(self, exit: PositionExit) -> VenueOrder:
        deal = self._deal_id(exit)
        try:
            answer = self._call_venue("DELETE", f"/api/v1/positions/{deal}")
        except VenueRequestError as exc:
            raise rejected(self.name, exit.exit_id, exc.code) from None
        reference = str(answer.get("dealReference") or "")
        if not reference:
            raise DataFormatError("capital: the close answer has no dealReference")
        confirmed = self._confirm(exit.exit_id, reference)
        if confirmed.status == REFUSED:
            raise rejected(self.name, exit.exit_id, confirmed.reason)
        return confirmed

    def account(self) -> VenueAccount:
        accounts = self._call_venue("GET", "/api/v1/accounts").get("accounts") or []
        chosen = next(
            (a for a in accounts if a.get("preferred")), accounts[0] if accounts else None
        )
        if chosen is None:
            raise DataFormatError("capital: the answer lists no account")
        money = chosen.get("balance") or {}
        balance = float(money.get("balance") or 0)
        return VenueAccount(
            account=self.account_name,
            currency=str(chosen.get("currency") or "USD"),
            balance=balance,
            equity=balance + float(money.get("profitLoss") or 0),
        )

    def positions(self) -> list[VenuePosition]:
        out = []
        for p in self._raw_positions():
            position, epic = p["position"], p["market"]["epic"]
            out.append(
                VenuePosition(
                    symbol=self.data._symbols.get(epic.upper(), normalize_symbol(epic)),
                    side=1 if position["direction"] == "BUY" else -1,
                    quantity=float(position["size"]),
                    entry_price=float(position["level"]),
                    unrealized_pnl=float(position.get("upl") or 0),
                    ids=tuple(
                        str(position[k]) for k in ("dealId", "dealReference") if k in position
                    ),
                    opened_at=parse_time(position["createdDateUTC"]),
                )
            )
        return out
