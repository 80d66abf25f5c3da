"""Market-data brokers behind one protocol (``brokers.base``), built from a config name."""

from brokers.registry import available_brokers, create_broker

__all__ = ["available_brokers", "create_broker"]
