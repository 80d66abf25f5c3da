"""Config name → broker class. Modules are imported on first use so that an adapter's SDK (ccxt,
…) is only loaded when the user picks it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from brokers.base import BaseBroker
    from core.config import Settings

_BROKERS: dict[str, str] = {
    "simulated": "brokers.simulated:SimulatedBroker",
    "files": "brokers.files:FileBroker",
    "ccxt": "brokers.ccxt_broker:CcxtBroker",
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


def create_broker(settings: Settings, name: str | None = None) -> BaseBroker:
    """The broker named by ``name`` (default: ``settings.broker.name``), built from ``settings``,
    riding out transient failures with the configured budget (``collect.retries`` per fetch)."""
    from brokers.base import RetryBudget

    broker = broker_class(name or settings.broker.name).from_settings(settings)
    c = settings.collect
    broker.retry_budget = RetryBudget(c.retries, c.retry_delay_seconds)
    return broker
