"""Orders on a crypto exchange through ccxt: a market order (``create_order``) carrying the ledger's
client order id as ccxt's unified ``clientOrderId`` param (each exchange module maps it to its own
field), with ``stopLoss`` / ``takeProfit`` trigger prices where the exchange takes them with the
order (``has['createOrderWithTakeProfitAndStopLoss']``). Found again among the market's orders by
``clientOrderId``; rules from ``load_markets`` (``limits.amount.min``, ``precision``); the balance
of ``ccxt.currency`` from ``fetch_balance`` (other coins held are not counted in equity) and
positions from ``fetch_positions`` where the exchange has them (derivatives). A position closes
by a market order the other way under the client id ``<entry id>-x`` (``reduceOnly`` on a
derivatives market), looked up first like an order. The exchange's sandbox (testnet) by default."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import ccxt
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from brokers.execution import BrokerOrder
from brokers.rest import BrokerAuthError, RateLimitedError, require_secret
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
from core.errors import BrokerError, TransientBrokerError, UnknownSymbolError
from core.symbols import normalize_symbol, to_pair

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

AUTH_HINT = (
    "set CANDLEFLOW_CCXT__API_KEY and CANDLEFLOW_CCXT__SECRET (and CANDLEFLOW_CCXT__PASSWORD where "
    "the exchange has a passphrase) to a key of the ccxt.exchange account (testnet keys while "
    "ccxt.sandbox = true)"
)
TICK_SIZE = 4  # ccxt's precisionMode constant: precision given as the step itself
_STATUS = {"closed": FILLED, "canceled": CANCELLED, "expired": CANCELLED, "rejected": REFUSED}


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied):
        return BrokerAuthError(f"{what}: {type(exc).__name__}; {AUTH_HINT}", 401)
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimitedError(f"{what}: {type(exc).__name__}", None)
    if isinstance(exc, ccxt.NetworkError):
        return TransientBrokerError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ccxt.BadSymbol):
        return UnknownSymbolError(f"{what}: {exc}")
    return BrokerError(f"{what}: {type(exc).__name__}: {exc}")


class CcxtExecution(VenueExecutionBroker):
    """Orders on one ccxt exchange; pass an exchange id or a ready exchange object (tests)."""

    name = "ccxt"

    def __init__(
        self,
        exchange: str | Any,
        *,
        api_key: SecretStr | str | None = None,
        secret: SecretStr | str | None = None,
        password: SecretStr | str | None = None,
        sandbox: bool = True,
        currency: str = "USDT",
        options: dict[str, Any] | None = None,
        dry_run: bool = True,
        engine: Engine | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(dry_run=dry_run, engine=engine, sleep=sleep)
        if isinstance(exchange, str):
            exchange = self._build(exchange, api_key, secret, password, options or {})
            if sandbox:
                try:
                    exchange.set_sandbox_mode(True)
                except ccxt.NotSupported:
                    raise BrokerError(
                        f"exchange {exchange.id!r} has no sandbox (testnet) in ccxt; set "
                        "ccxt.sandbox = false to trade its real market (dry run stays on until "
                        "live.dry_run = false)"
                    ) from None
        self.exchange, self.sandbox, self.currency = exchange, sandbox, currency.upper()
        self._markets: dict[str, str] | None = None

    @staticmethod
    def _build(name: str, api_key: Any, secret: Any, password: Any, options: dict) -> Any:
        if name not in ccxt.exchanges:
            raise BrokerError(f"ccxt has no exchange {name!r}")
        config = {
            "enableRateLimit": True,
            **options,
            "apiKey": require_secret(api_key, AUTH_HINT, "ccxt"),
            "secret": require_secret(secret, AUTH_HINT, "ccxt"),
        }
        text = password.get_secret_value() if hasattr(password, "get_secret_value") else password
        if text:
            config["password"] = str(text)
        return getattr(ccxt, name)(config)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> CcxtExecution:
        s = settings.ccxt
        return cls(
            s.exchange,
            api_key=s.api_key,
            secret=s.secret,
            password=s.password,
            sandbox=s.sandbox,
            currency=s.currency,
            options=dict(s.options),
            dry_run=settings.live.dry_run,
            engine=engine,
        )

    def __repr__(self) -> str:
        return (
            f"CcxtExecution({self.exchange.id!r}, sandbox={self.sandbox}, dry_run={self.dry_run})"
        )

    @property
    def lists_positions(self) -> bool:  # type: ignore[override]
        return bool(self.exchange.has.get("fetchPositions"))

    @property
    def account_name(self) -> str:
        return f"ccxt:{self.exchange.id}{':sandbox' if self.sandbox else ''}"

    def _ccxt(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ccxt.BaseError as exc:
            raise _translate(exc, f"{self.exchange.id}: {what}") from None

    def market_of(self, symbol: str) -> str:
        """Canonical symbol → the exchange's unified market symbol (spot markets first)."""
        if self._markets is None:
            markets = self._ccxt("loading markets", self.exchange.load_markets)
            ids: dict[str, str] = {}
            for unified, m in sorted(markets.items(), key=lambda item: not item[1].get("spot")):
                ids.setdefault(normalize_symbol(f"{m['base']}{m['quote']}"), unified)
            self._markets = ids
        canonical = normalize_symbol(symbol)
        if canonical not in self._markets:
            raise UnknownSymbolError(
                f"exchange {self.exchange.id!r} has no market {to_pair(canonical)}"
            )
        return self._markets[canonical]

    def _fetch_rules(self, symbol: str) -> InstrumentRules:
        unified = self.market_of(symbol)
        m = self.exchange.markets[unified]
        precision, limits = m.get("precision") or {}, m.get("limits") or {}
        tick = self.exchange.precisionMode == TICK_SIZE

        def step(value: Any) -> float:
            return 0.0 if value is None else float(value) if tick else 10.0 ** -int(value)

        price_step = step(precision.get("price"))
        decimals = len(f"{price_step:.12f}".rstrip("0").split(".")[1]) if price_step else None
        return InstrumentRules(
            symbol=symbol,
            venue_symbol=unified,
            min_size=float((limits.get("amount") or {}).get("min") or 0),
            size_step=step(precision.get("amount")),
            price_decimals=decimals,
            max_size=(limits.get("amount") or {}).get("max"),
            tradeable=m.get("active") is not False,
        )

    def exits_attached(self, symbol: str) -> bool:
        return bool(self.exchange.has.get("createOrderWithTakeProfitAndStopLoss"))

    def order_params(self, order: BrokerOrder) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": order.order_id}
        exits = {}
        if order.stop_loss is not None:
            exits["stopLoss"] = {"triggerPrice": order.stop_loss}
        if order.take_profit is not None:
            exits["takeProfit"] = {"triggerPrice": order.take_profit}
        if exits and self.exits_attached(order.symbol):
            params |= exits
        elif exits:
            logger.warning(
                "%s takes no stop-loss/take-profit with an order: %s sent without them (the "
                "live run closes it at its stop, take-profit or time-out)",
                self.exchange.id,
                order.order_id,
            )
        return params

    def _send(self, order: BrokerOrder, rules: InstrumentRules) -> str:
        side = "buy" if order.side > 0 else "sell"
        try:
            placed = self.exchange.create_order(
                rules.venue_symbol, "market", side, order.quantity, None, self.order_params(order)
            )
        except ccxt.DuplicateOrderId as exc:
            raise DuplicateClientIdError(f"{self.exchange.id}: {exc}") from None
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadSymbol) as exc:
            raise rejected(self.name, order.order_id, f"{type(exc).__name__}: {exc}") from None
        except ccxt.BaseError as exc:
            raise _translate(exc, f"{self.exchange.id}: order {order.order_id}") from None
        return str(placed["id"])

    def _find_exit(self, exit: PositionExit) -> VenueOrder | None:
        return self._find(exit.order(), None)

    def _send_exit(self, exit: PositionExit) -> VenueOrder:
        order, rules = exit.order(), self.rules(exit.symbol)
        params: dict[str, Any] = {"clientOrderId": order.order_id}
        if not self.exchange.markets[rules.venue_symbol].get("spot"):
            params["reduceOnly"] = True  # never opens the other way (spot has no such flag)
        side = "buy" if order.side > 0 else "sell"
        try:
            self.exchange.create_order(
                rules.venue_symbol, "market", side, order.quantity, None, params
            )
        except ccxt.DuplicateOrderId:
            pass  # sent by an earlier run: read back below
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadSymbol) as exc:
            raise rejected(self.name, order.order_id, f"{type(exc).__name__}: {exc}") from None
        except ccxt.BaseError as exc:
            raise _translate(exc, f"{self.exchange.id}: close {exit.order_id}") from None
        # The placed order's answer rarely holds the fill: read it back from the exchange.
        return self._find(order, None) or VenueOrder(order.order_id, "", WORKING)

    def _orders(self, market: str | None) -> list[dict[str, Any]]:
        if self.exchange.has.get("fetchOrders"):
            return self._ccxt("orders", lambda: self.exchange.fetch_orders(market))
        found = self._ccxt("open orders", lambda: self.exchange.fetch_open_orders(market))
        return found + self._ccxt(
            "closed orders", lambda: self.exchange.fetch_closed_orders(market)
        )

    def _find(self, order: BrokerOrder | str, venue_id: str | None) -> VenueOrder | None:
        order_id = order if isinstance(order, str) else order.order_id
        market = None if isinstance(order, str) else self.market_of(order.symbol)
        for o in self._orders(market):
            if o.get("clientOrderId") == order_id or (venue_id and str(o.get("id")) == venue_id):
                filled = float(o.get("filled") or 0)
                status = _STATUS.get(str(o.get("status")), WORKING)
                if status == FILLED and filled < float(o.get("amount") or filled):
                    status = PARTIAL
                if status in (CANCELLED, REFUSED) and filled > 0:
                    status = PARTIAL
                stamp = o.get("lastTradeTimestamp") or o.get("timestamp")
                return VenueOrder(
                    order_id,
                    str(o["id"]),
                    status,
                    filled_quantity=filled,
                    fill_price=None if o.get("average") is None else float(o["average"]),
                    fill_ts=datetime.fromtimestamp(stamp / 1000, UTC) if stamp else None,
                    reason=f"{self.exchange.id}: {o.get('status')}",
                )
        return None

    def account(self) -> VenueAccount:
        balance = self._ccxt("balance", self.exchange.fetch_balance)
        total = float((balance.get("total") or {}).get(self.currency) or 0)
        return VenueAccount(self.account_name, self.currency, balance=total, equity=total)

    def positions(self) -> list[VenuePosition]:
        if not self.exchange.has.get("fetchPositions"):
            return []  # spot: holdings are balances, not positions
        out = []
        for p in self._ccxt("positions", self.exchange.fetch_positions):
            m = self.exchange.markets.get(p["symbol"], {})
            contracts = float(p.get("contracts") or 0)
            if contracts:
                out.append(
                    VenuePosition(
                        symbol=normalize_symbol(f"{m.get('base', '')}{m.get('quote', '')}"),
                        side=-1 if p.get("side") == "short" else 1,
                        quantity=contracts,
                        entry_price=float(p.get("entryPrice") or 0),
                        unrealized_pnl=float(p.get("unrealizedPnl") or 0),
                        ids=tuple(str(p["id"]) for _ in [0] if p.get("id")),
                    )
                )
        return out
