"""Config name → broker class, and what each broker can do (``candleflow broker list``). Modules are
imported on first use so that an adapter's SDK (ccxt, …) is only loaded when the user picks it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from brokers.base import BaseBroker
    from core.config import Settings

_BROKERS: dict[str, str] = {
    "simulated": "brokers.simulated:SimulatedBroker",
    "files": "brokers.files:FileBroker",
    "ccxt": "brokers.ccxt_broker:CcxtBroker",
    "oanda": "brokers.oanda:OandaBroker",
    "capital": "brokers.capital:CapitalBroker",
    "alpaca": "brokers.alpaca:AlpacaBroker",
}


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """One row of ``candleflow broker list``. ``execution``: receives orders (``live.
    execution_broker``); ``dry_run_default``: orders are only logged until ``live.dry_run =
    false`` (None: no execution); ``timeframes``: served candles (empty: no market data)."""

    name: str
    market_data: bool
    execution: bool
    dry_run_default: bool | None
    needs_credentials: bool
    timeframes: tuple[str, ...]
    venue: str


# The execution side, ``live.execution_broker`` → class; every venue is dry-run by default (the
# paper account books simulated fills, so it has no dry run).
_EXECUTION_BROKERS: dict[str, str] = {
    "paper": "brokers.paper:PaperBroker",
    "oanda": "brokers.oanda_execution:OandaExecution",
    "capital": "brokers.capital_execution:CapitalExecution",
    "alpaca": "brokers.alpaca_execution:AlpacaExecution",
    "ccxt": "brokers.ccxt_execution:CcxtExecution",
}
_EXECUTION: dict[str, tuple[bool, bool | None]] = {
    name: (True, name != "paper") for name in _EXECUTION_BROKERS
}
_VENUES: dict[str, str] = {
    "simulated": "embedded deterministic market (no network)",
    "files": "a folder of CSV/Parquet files (files.directory)",
    "ccxt": "a crypto exchange through ccxt (ccxt.exchange; its timeframes; orders on its testnet)",
    "oanda": "OANDA v20 REST candles and orders, practice host by default (FX, metals, CFDs)",
    "capital": "Capital.com REST candles and orders, demo host by default (CFDs)",
    "alpaca": "Alpaca market data v2 and orders (US stocks, crypto), paper keys by default",
    "paper": "the simulated paper account (live.execution_broker)",
}


def available_brokers() -> list[str]:
    return sorted(_BROKERS)


def broker_class(name: str) -> type[BaseBroker]:
    try:
        target = _BROKERS[name]
    except KeyError:
        raise ConfigError(
            f"broker.name: unknown broker {name!r}; allowed: {', '.join(available_brokers())}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _timeframes(name: str, settings: Settings | None) -> tuple[str, ...]:
    if name == "ccxt":  # per exchange: the configured one's, when ccxt is in use (ccxt is slow
        if settings is None or settings.broker.name != "ccxt":  # to import); no network needed
            return ()
        from brokers.ccxt_broker import CcxtBroker

        return CcxtBroker(settings.ccxt.exchange).capabilities.timeframes
    return broker_class(name).capabilities.timeframes


def broker_infos(settings: Settings | None = None) -> list[BrokerInfo]:
    """Every broker, market-data ones first; ccxt's timeframes are those of ``settings``'s
    exchange when ``broker.name = "ccxt"`` (else none listed: they differ by exchange)."""
    rows = []
    for name in [*_BROKERS, *(n for n in _EXECUTION if n not in _BROKERS)]:
        market_data = name in _BROKERS
        execution, dry_run = _EXECUTION.get(name, (False, None))
        # ccxt's capabilities are per exchange (an instance's); it needs no credentials for data.
        capabilities = getattr(broker_class(name), "capabilities", None) if market_data else None
        rows.append(
            BrokerInfo(
                name=name,
                market_data=market_data,
                execution=execution,
                dry_run_default=dry_run,
                needs_credentials=bool(capabilities and capabilities.needs_credentials),
                timeframes=_timeframes(name, settings) if market_data else (),
                venue=_VENUES[name],
            )
        )
    return rows


def create_broker(settings: Settings, name: str | None = None) -> BaseBroker:
    """The broker named by ``name`` (default: ``settings.broker.name``), built from ``settings``,
    riding out transient failures with the configured budget (``collect.retries`` per fetch)."""
    from brokers.base import RetryBudget

    broker = broker_class(name or settings.broker.name).from_settings(settings)
    c = settings.collect
    broker.retry_budget = RetryBudget(c.retries, c.retry_delay_seconds)
    return broker


def create_execution_broker(settings: Settings, engine: Engine, name: str | None = None) -> Any:
    """The execution broker named by ``name`` (default: ``live.execution_broker``) on the live
    database ``engine``: the paper account, or a venue, dry-run unless ``live.dry_run = false``."""
    name = name or settings.live.execution_broker
    try:
        target = _EXECUTION_BROKERS[name]
    except KeyError:
        allowed = ", ".join(sorted(_EXECUTION_BROKERS))
        raise ConfigError(f"live.execution_broker: unknown {name!r}; allowed: {allowed}") from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if name == "paper":
        return cls(engine, settings.paper, settings.costs)
    return cls.from_settings(settings, engine)
