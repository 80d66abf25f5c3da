"""The service's Prometheus metrics, in a registry of its own (one per app: tests build several):
requests and their latency by route, decisions and their latency by model, errors by kind, the
orders predictions would place, TradingView alerts, and the ledger's orders by status (read at
scrape time)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trading.records import orders

logger = logging.getLogger(__name__)

# Decisions take milliseconds; a request over HTTP a few more.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class LedgerOrders(Collector):
    """The ledger's orders by symbol and stored status, counted when Prometheus scrapes."""

    def __init__(self, engine: Callable[[], sa.Engine]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "candleflow_ledger_orders", "Orders in the live ledger", labels=["symbol", "status"]
        )
        stmt = sa.select(orders.c.symbol, orders.c.status, sa.func.count()).group_by(
            orders.c.symbol, orders.c.status
        )
        try:
            with self.engine().connect() as conn:
                for symbol, status, count in conn.execute(stmt):
                    family.add_metric([symbol, status], float(count))
        except sa.exc.SQLAlchemyError as exc:  # a scrape must not fail on the ledger
            logger.warning("metrics: cannot count the ledger's orders: %s", exc)
        yield family


class Metrics:
    """Every metric of one app."""

    def __init__(self, engine: Callable[[], sa.Engine]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "candleflow_api_requests",
            "HTTP requests by route and status code",
            ["method", "route", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "candleflow_api_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "candleflow_decisions",
            "Predictions by model, status and action",
            ["model", "version", "status", "action"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "candleflow_decision_seconds",
            "Decision latency (scoring, vote, weight, risk) by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "candleflow_api_errors",
            "Refused or failed requests by route and kind",
            ["route", "kind"],
            registry=r,
        )
        self.would_order = Counter(
            "candleflow_predicted_orders",
            "Orders predictions would place (none is placed) by model",
            ["model", "side"],
            registry=r,
        )
        self.alerts = Counter(
            "candleflow_alerts",
            "TradingView alerts by symbol, action and whether they were new",
            ["symbol", "action", "stored"],
            registry=r,
        )
        r.register(LedgerOrders(engine))
