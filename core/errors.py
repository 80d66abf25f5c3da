"""The project's exception hierarchy: every user-facing failure is one of these, with a message a
user can act on. The CLI prints them as one line; anything else is a bug and keeps its traceback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel


class CandleflowError(Exception):
    """Base class of every error candleflow raises on purpose."""


class ConfigError(CandleflowError):
    """The configuration is invalid (names the key, the bad value and what is allowed)."""


class UnknownTimeframeError(ConfigError, ValueError):
    """A timeframe string that candleflow does not know."""


class InvalidSymbolError(CandleflowError, ValueError):
    """A symbol that cannot be normalised (empty, or characters a file name cannot hold)."""


class BrokerError(CandleflowError):
    """A broker could not serve a request."""


class TransientBrokerError(BrokerError):
    """A failure worth retrying: timeout, connection reset, HTTP 5xx or 429."""


class UnknownSymbolError(BrokerError):
    """The broker cannot serve this symbol."""


class UnsupportedTimeframeError(BrokerError):
    """The broker cannot serve this timeframe."""


class DataFormatError(CandleflowError):
    """A file or frame does not have the shape candleflow needs (missing columns, bad dates)."""


class StoreError(CandleflowError):
    """The candle store could not be read or written."""


class UnitsFailedError(CandleflowError):
    """Some symbol × timeframe units of a stage failed; ``rows`` holds every unit's report (failed
    ones with their ``error``), so the successful part of a run is never lost."""

    def __init__(self, message: str, rows: Sequence[BaseModel]) -> None:
        super().__init__(message)
        self.rows = list(rows)
