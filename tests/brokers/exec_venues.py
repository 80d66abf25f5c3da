"""Fake venues for the execution contract: OANDA, Alpaca and Capital.com order books behind
``httpx.MockTransport`` answering with the recorded bodies of ``fixtures/<venue>/`` (ids, client
ids, sizes and states filled in), and a fake ccxt exchange object. Each keeps its orders by client
id and its open positions; ``mode`` says how the next order ends (``fill``, ``partial``, ``work``:
accepted, filled later by ``fill_working``, ``refuse``); ``script`` queues answers (a 429, a 401)
for the next request whose path contains a given part; ``hold_outside`` opens a position no
candleflow order made. A close (an order of client id ``<entry>-x``, OANDA's trade close,
Capital.com's position delete) closes the entry's position at ``CLOSE_PRICE``; ``close_requests``
lists the closes the venue received."""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import ccxt
import httpx

from tests.brokers.venues import SECRET, FakeCapital, FakeOanda, fixture, reply

OANDA_ACCOUNT = "101-004-1234567-001"
CLOSE_PRICE = 1.087  # where every fake venue closes a position


class OrderBook:
    """What every fake venue keeps: its orders by client id and the positions opened outside."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.script: list[tuple[str, httpx.Response]] = []
        self.mode = "fill"
        self.orders: dict[str, dict[str, Any]] = {}
        self.outside: list[dict[str, Any]] = []
        self._ids = itertools.count(7000)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = unquote(request.url.raw_path.decode().split("?")[0])
        for i, (part, response) in enumerate(self.script):
            if part in path:
                del self.script[i]
                return response
        return self.answer(request, path)

    def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        raise NotImplementedError

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def new_order(self, client_id: str, quantity: float, side: int, symbol: str) -> dict[str, Any]:
        status = {"fill": "filled", "partial": "partial", "work": "working"}.get(self.mode)
        order = {"id": str(next(self._ids)), "client_id": client_id, "quantity": quantity}
        order |= {"side": side, "symbol": symbol, "status": status or "refused", "price": 1.08512}
        order["filled"] = {"filled": quantity, "partial": quantity / 2}.get(order["status"], 0.0)
        if client_id.endswith("-x"):  # a close of the entry's position
            order |= {"exit": True, "price": CLOSE_PRICE}
            self.close(client_id.removesuffix("-x"))
        self.orders[client_id] = order
        return order

    def close(self, client_id: str) -> dict[str, Any]:
        entry = self.orders[client_id]
        assert not entry.get("closed"), f"{client_id} closed twice"
        entry["closed"] = True
        return entry

    def fill_working(self) -> None:
        for order in self.orders.values():
            if order["status"] == "working":
                order["status"], order["filled"] = "filled", order["quantity"]

    def held(self) -> list[dict[str, Any]]:
        mine = [o for o in self.orders.values() if o["filled"] > 0]
        return [o for o in mine if not o.get("closed") and not o.get("exit")] + self.outside

    def hold_outside(self, symbol: str, quantity: float, side: int = 1) -> None:
        order = {"id": str(next(self._ids)), "client_id": None, "quantity": quantity}
        order |= {"side": side, "symbol": symbol, "filled": quantity, "price": 1.08512}
        self.outside.append(order)

    def order_requests(self) -> list[httpx.Request]:
        raise NotImplementedError

    def close_requests(self) -> list[httpx.Request]:
        raise NotImplementedError


class FakeOandaExec(OrderBook):
    """``/v3/accounts/{id}/…``: instruments, summary, orders (POST, GET @clientid), trades."""

    def order_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith("/orders")]

    def close_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "PUT" and r.url.path.endswith("/close")]

    def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        if path.startswith("/v3/instruments/"):  # candles: the market-data fake's
            return FakeOanda().answer(request)
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return reply(401, "oanda", "error_unauthorized")
        root = f"/v3/accounts/{OANDA_ACCOUNT}"
        assert path.startswith(root), path
        rest = path[len(root) :]
        if rest == "/instruments":
            if request.url.params["instruments"] != "EUR_USD":
                return reply(400, "oanda", "error_invalid_instrument")
            return reply(200, "oanda", "account_instruments")
        if rest == "/summary":
            return reply(200, "oanda", "account_summary")
        if rest == "/orders" and request.method == "POST":
            return self._create(json.loads(request.content)["order"])
        if rest.startswith("/orders/@"):
            order = self.orders.get(rest.removeprefix("/orders/@"))
            return self._order(order) if order else reply(404, "oanda", "error_order_not_found")
        if rest.startswith("/trades/@"):
            return self._trade_by_client(request, rest.removeprefix("/trades/@"))
        if rest.startswith("/trades/"):
            order = next(o for o in self.held() if o["id"] == rest.removeprefix("/trades/"))
            return httpx.Response(200, json={"trade": self._trade(order), "lastTransactionID": "1"})
        if rest == "/openTrades":
            trades = [self._trade(o) for o in self.held()]
            return httpx.Response(200, json={"trades": trades, "lastTransactionID": "1"})
        raise AssertionError(f"unexpected {request.method} {path}")

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        client_id = body["clientExtensions"]["id"]
        assert body["tradeClientExtensions"]["id"] == client_id
        if client_id in self.orders:
            return reply(400, "oanda", "order_reject_duplicate")
        units = float(body["units"])
        order = self.new_order(client_id, abs(units), 1 if units > 0 else -1, body["instrument"])
        recorded = fixture("oanda", "order_create_cancelled" if self.mode == "refuse" else
                           "order_create_filled")  # fmt: skip
        recorded["orderCreateTransaction"] |= {"id": order["id"], "units": body["units"]}
        recorded["orderCreateTransaction"]["clientExtensions"]["id"] = client_id
        if "orderFillTransaction" in recorded:
            recorded["orderFillTransaction"]["tradeOpened"]["units"] = str(order["filled"])
        return httpx.Response(201, json=recorded)

    def _order(self, order: dict[str, Any]) -> httpx.Response:
        recorded = fixture("oanda", "order")
        state = {"refused": "CANCELLED", "working": "PENDING"}.get(order["status"], "FILLED")
        recorded["order"] |= {"id": order["id"], "state": state, "tradeOpenedID": order["id"]}
        recorded["order"] |= {"units": str(order["side"] * order["quantity"])}
        recorded["order"]["clientExtensions"]["id"] = order["client_id"]
        if state != "FILLED":
            del recorded["order"]["tradeOpenedID"]
        return httpx.Response(200, json=recorded)

    def _trade_by_client(self, request: httpx.Request, rest: str) -> httpx.Response:
        client_id = rest.removesuffix("/close")
        order = self.orders[client_id]
        if request.method == "PUT":
            assert json.loads(request.content) == {"units": "ALL"}
            self.close(client_id)
            closed = fixture("oanda", "trade_close")
            units = str(-order["side"] * order["filled"])
            closed["orderFillTransaction"] |= {"units": units}
            closed["orderFillTransaction"]["tradesClosed"][0] |= {
                "tradeID": order["id"],
                "clientTradeID": client_id,
                "units": units,
            }
            return httpx.Response(200, json=closed)
        if order.get("closed"):
            closed = fixture("oanda", "trade_closed")
            closed["trade"] |= {"id": order["id"], "initialUnits": str(order["filled"])}
            closed["trade"]["clientExtensions"]["id"] = client_id
            return httpx.Response(200, json=closed)
        return httpx.Response(200, json={"trade": self._trade(order), "lastTransactionID": "1"})

    @staticmethod
    def _trade(order: dict[str, Any]) -> dict[str, Any]:
        trade = copy.deepcopy(fixture("oanda", "trade")["trade"])
        units = str(order["side"] * order["filled"])
        trade |= {"id": order["id"], "initialUnits": units, "currentUnits": units}
        trade |= {"instrument": order["symbol"]}
        if order["client_id"]:
            trade["clientExtensions"]["id"] = order["client_id"]
        else:
            del trade["clientExtensions"]
        return trade


class FakeAlpacaExec(OrderBook):
    """The paper trading host: assets, orders (POST, by client id), account, positions."""

    def order_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == "/v2/orders"]

    def close_requests(self) -> list[httpx.Request]:
        return [
            r
            for r in self.order_requests()
            if json.loads(r.content)["client_order_id"].endswith("-x")
        ]

    def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        keys = request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
        if keys != (SECRET, SECRET):
            return reply(401, "alpaca", "error_unauthorized")
        assert request.url.host == "paper-api.alpaca.markets"
        if path.startswith("/v2/assets/"):
            known = path.removeprefix("/v2/assets/") == "AAPL"
            return (
                reply(200, "alpaca", "asset_AAPL")
                if known
                else reply(404, "alpaca", "error_asset_not_found")
            )
        if path == "/v2/orders" and request.method == "POST":
            body = json.loads(request.content)
            if body["client_order_id"] in self.orders:
                return reply(422, "alpaca", "error_client_order_id_taken")
            if self.mode == "refuse":
                return reply(403, "alpaca", "error_buying_power")
            side = 1 if body["side"] == "buy" else -1
            entry = self.orders.get(body["client_order_id"].removesuffix("-x"), {})
            if body["client_order_id"].endswith("-x") and any(
                leg["status"] == "new" for leg in entry.get("legs", [])
            ):  # the bracket's legs hold the shares
                return reply(403, "alpaca", "error_insufficient_qty")
            order = self.new_order(
                body["client_order_id"], float(body["qty"]), side, body["symbol"]
            )
            if body.get("order_class") == "bracket":
                order["legs"] = [{"id": f"leg-{order['id']}-{k}", "status": "new"} for k in "ts"]
            return httpx.Response(200, json=self._order(order, accepted=True))
        if path.startswith("/v2/orders/") and request.method == "DELETE":
            leg_id = path.removeprefix("/v2/orders/")
            legs = [leg for o in self.orders.values() for leg in o.get("legs", [])]
            next(leg for leg in legs if leg["id"] == leg_id)["status"] = "canceled"
            return httpx.Response(204)
        if path == "/v2/orders:by_client_order_id":
            order = self.orders.get(request.url.params["client_order_id"])
            return (
                httpx.Response(200, json=self._order(order))
                if order
                else reply(404, "alpaca", "error_order_not_found")
            )
        if path == "/v2/account":
            return reply(200, "alpaca", "account")
        if path == "/v2/positions":
            return httpx.Response(200, json=[self._position(o) for o in self.held()])
        raise AssertionError(f"unexpected {request.method} {path}")

    @staticmethod
    def _order(order: dict[str, Any], accepted: bool = False) -> dict[str, Any]:
        recorded = "order_close" if order.get("exit") else "order"
        if order.get("legs") and not accepted:
            recorded = "order_bracket_filled"
        body = fixture("alpaca", recorded) | {
            "id": f"uuid-{order['id']}",
            "qty": str(order["quantity"]),
        }
        body |= {
            "client_order_id": order["client_id"],
            "side": "buy" if order["side"] > 0 else "sell",
        }
        if body.get("legs"):
            legs = zip(body["legs"], order["legs"], strict=True)
            body["legs"] = [
                leg | {"id": mine["id"], "status": mine["status"]} for leg, mine in legs
            ]
        if accepted or order["status"] == "working":
            return body | {"status": "accepted" if accepted else "new"}
        status = {"filled": "filled", "partial": "partially_filled"}[order["status"]]
        filled = {"filled_qty": str(order["filled"]), "filled_avg_price": str(order["price"])}
        return body | filled | {"status": status, "filled_at": "2024-03-04T15:00:02.1Z"}

    @staticmethod
    def _position(order: dict[str, Any]) -> dict[str, Any]:
        side = "long" if order["side"] > 0 else "short"
        return fixture("alpaca", "position") | {"qty": str(order["filled"]), "side": side}


class FakeCapitalExec(FakeCapital, OrderBook):
    """Capital.com's session and markets (``FakeCapital``) plus positions, confirms, accounts."""

    data_path = "/no-scripted-data/"

    def __init__(self) -> None:
        FakeCapital.__init__(self)
        OrderBook.__init__(self)
        self.confirms: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return OrderBook.__call__(self, request)

    def order_requests(self) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == "POST" and r.url.path == "/api/v1/positions"
        ]

    def close_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "DELETE"]

    def answer(self, request: httpx.Request, path: str) -> httpx.Response:
        own = path.startswith(("/api/v1/positions", "/api/v1/confirms/", "/api/v1/accounts"))
        if not own:
            return FakeCapital.answer(self, request)
        if request.headers.get("CST") != self.token() or not self.sessions:
            return reply(401, "capital", "error_invalid_session_token")
        if path == "/api/v1/positions" and request.method == "POST":
            body = json.loads(request.content)
            side = 1 if body["direction"] == "BUY" else -1
            order = self.new_order(
                f"capital-{len(self.orders)}", float(body["size"]), side, body["epic"]
            )
            reference = f"o_{order['id']}"
            confirm = fixture(
                "capital", "confirm_rejected" if self.mode == "refuse" else "confirm_accepted"
            )
            confirm |= {"dealReference": reference, "size": order["quantity"]}
            confirm["affectedDeals"] = [{"dealId": order["id"], "status": "OPENED"}][
                : len(confirm["affectedDeals"])
            ]
            self.confirms[reference] = confirm
            return httpx.Response(200, json={"dealReference": reference})
        if path.startswith("/api/v1/positions/") and request.method == "DELETE":
            deal = path.rsplit("/", 1)[1]
            client_id = next(c for c, o in self.orders.items() if o["id"] == deal)
            order = self.close(client_id)
            reference = f"p_{deal}"
            confirm = fixture("capital", "confirm_closed") | {"dealReference": reference}
            confirm |= {"dealId": deal, "size": order["filled"], "level": CLOSE_PRICE}
            confirm["affectedDeals"][0]["dealId"] = deal
            self.confirms[reference] = confirm
            answer = fixture("capital", "close_deal_reference") | {"dealReference": reference}
            return httpx.Response(200, json=answer)
        if path.startswith("/api/v1/confirms/"):
            return httpx.Response(200, json=self.confirms[path.rsplit("/", 1)[1]])
        if path == "/api/v1/accounts":
            return reply(200, "capital", "accounts")
        template = fixture("capital", "positions")["positions"][0]
        rows = []
        for o in self.held():
            row = copy.deepcopy(template)
            row["position"] |= {
                "dealId": o["id"],
                "dealReference": f"p_{o['id']}",
                "size": o["filled"],
            }
            row["position"]["direction"] = "BUY" if o["side"] > 0 else "SELL"
            rows.append(row)
        return httpx.Response(200, json={"positions": rows})


class FakeCcxtExchange:
    """A ccxt exchange object with one spot market (BTC/USDT) and an order book; ``script``
    holds exceptions raised by the next call of a method name."""

    id = "fakex"
    precisionMode = 4  # TICK_SIZE
    has: ClassVar[dict[str, bool]] = {
        "fetchOrders": True,
        "fetchPositions": True,
        "createOrderWithTakeProfitAndStopLoss": True,
    }
    markets: ClassVar[dict[str, Any]] = {
        "BTC/USDT": {
            "symbol": "BTC/USDT",
            "base": "BTC",
            "quote": "USDT",
            "spot": True,
            "active": True,
            "precision": {"amount": 0.0001, "price": 0.01},
            "limits": {"amount": {"min": 0.0001, "max": 1000.0}},
        }
    }

    def __init__(self) -> None:
        self.book = OrderBook()
        self.calls: list[tuple[str, tuple, dict]] = []
        self.script: list[tuple[str, Exception]] = []
        self.apiKey = SECRET

    def _called(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        for i, (method, exc) in enumerate(self.script):
            if method == name:
                del self.script[i]
                raise exc

    def load_markets(self) -> dict[str, Any]:
        self._called("load_markets")
        return self.markets

    def create_order(self, symbol, type_, side, amount, price=None, params=None) -> dict:
        self._called("create_order", symbol, type_, side, amount, price, params)
        client_id = params["clientOrderId"]
        if client_id in self.book.orders:
            raise ccxt.DuplicateOrderId(f"fakex clientOrderId {client_id} already exists")
        if self.book.mode == "refuse":
            raise ccxt.InsufficientFunds("fakex Account has insufficient balance")
        order = self.book.new_order(client_id, amount, 1 if side == "buy" else -1, symbol)
        return self._order(order)

    def fetch_orders(self, symbol=None, since=None, limit=None, params=None) -> list[dict]:
        self._called("fetch_orders", symbol)
        return [self._order(o) for o in self.book.orders.values()]

    def fetch_balance(self, params=None) -> dict:
        self._called("fetch_balance")
        return {"total": {"USDT": 100000.0, "BTC": 0.0}, "free": {"USDT": 100000.0}}

    def fetch_positions(self, symbols=None, params=None) -> list[dict]:
        self._called("fetch_positions")
        return [
            {"id": o["id"], "symbol": "BTC/USDT", "side": "long" if o["side"] > 0 else "short",
             "contracts": o["filled"], "entryPrice": o["price"], "unrealizedPnl": 0.0}
            for o in self.book.held()
        ]  # fmt: skip

    @staticmethod
    def _order(o: dict[str, Any]) -> dict[str, Any]:
        status = {"filled": "closed", "partial": "canceled", "working": "open"}[o["status"]]
        return {
            "id": o["id"],
            "clientOrderId": o["client_id"],
            "symbol": o["symbol"],
            "status": status,
            "amount": o["quantity"],
            "filled": o["filled"],
            "average": o["price"] if o["filled"] else None,
            "timestamp": 1709546401000,
            "lastTradeTimestamp": 1709546401000 if o["filled"] else None,
        }

    def order_requests(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "create_order"]

    def close_requests(self) -> list[tuple]:
        return [c for c in self.order_requests() if c[1][5]["clientOrderId"].endswith("-x")]


@contextmanager
def serve(venue: Callable[[httpx.Request], httpx.Response]) -> Iterator[str]:
    """``venue`` as an HTTP server on 127.0.0.1 (a free port) for code that builds its own
    client from the settings; its base URL. Stopped (and its port closed) on exit."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(
                self.command,
                f"http://{self.headers['Host']}{self.path}",
                headers=dict(self.headers),
                content=self.rfile.read(length) if length else b"",
            )
            response = venue(request)
            body = response.content
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
