"""``candleflow broker check``: the first thing to run after filling in a venue's keys. With them:
one candle from the venue, its account snapshot, its rules for every symbol of the universe, and
what a live run would do with an order (dry run: checked and logged; live: sent). Sends nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from brokers.execution import BrokerOrder
from brokers.registry import create_broker, create_execution_broker
from brokers.venue_execution import VenueExecutionBroker, describe
from core.errors import CandleflowError, ConfigError
from core.timeframes import parse_timeframe

if TYPE_CHECKING:
    from core.config import Settings

VENUES = ("oanda", "capital", "alpaca", "ccxt")


@dataclass(frozen=True)
class InstrumentCheck:
    """One symbol's rules at the venue, and the smallest order it would take (or why not)."""

    symbol: str
    venue_symbol: str = ""
    min_size: float | None = None
    size_step: float | None = None
    price_decimals: int | None = None
    tradeable: bool | None = None
    smallest_order: str = ""
    error: str = ""


@dataclass(frozen=True)
class VenueCheck:
    """What ``broker check`` found (see the module docstring)."""

    broker: str
    account: str
    mode: str
    currency: str
    balance: float
    equity: float
    open_positions: int
    candle: str
    instruments: list[InstrumentCheck] = field(default_factory=list)


def chosen_venue(settings: Settings, name: str | None) -> str:
    """``name``, else the execution broker, else the market-data broker, if it is a venue."""
    for candidate in (name, settings.live.execution_broker, settings.broker.name):
        if candidate:
            if candidate in VENUES:
                return candidate
            if candidate == name:
                raise ConfigError(f"--broker {name!r}: not a venue; one of {', '.join(VENUES)}")
    raise ConfigError(
        "no venue configured (live.execution_broker and broker.name are not venues); "
        f"pass --broker {'|'.join(VENUES)}"
    )


def check_venue(settings: Settings, name: str | None = None) -> VenueCheck:
    """Ask the venue (read-only); a missing key fails first, naming its variable."""
    venue = chosen_venue(settings, name)
    broker: VenueExecutionBroker = create_execution_broker(settings, None, venue)  # type: ignore[arg-type]
    account = broker.state()
    mode = (
        "DRY RUN: orders are checked and logged as DRY_RUN, never sent (live.dry_run = true)"
        if broker.dry_run
        else "LIVE: orders are sent to the venue (live.dry_run = false)"
    )
    return VenueCheck(
        broker=venue,
        account=account.account,
        mode=mode,
        currency=account.currency,
        balance=account.balance,
        equity=account.equity,
        open_positions=len(account.positions),
        candle=_one_candle(settings, venue),
        instruments=[_instrument(broker, s) for s in settings.universe.symbols],
    )


def _one_candle(settings: Settings, venue: str) -> str:
    symbol, timeframe = settings.universe.symbols[0], settings.universe.timeframes[0]
    tf = parse_timeframe(timeframe)
    end = datetime.now(UTC)
    try:
        frame = create_broker(settings, venue).fetch_candles(
            symbol, tf, end - 20 * tf.duration, end
        )
    except CandleflowError as exc:
        return f"{symbol} {timeframe}: {exc}"
    if frame.is_empty():
        return f"{symbol} {timeframe}: no candle in the last 20 bars (market closed?)"
    last = frame.row(-1, named=True)
    return f"{symbol} {timeframe} {last['ts']:%Y-%m-%d %H:%M} UTC close {last['close']:g}"


def _instrument(broker: VenueExecutionBroker, symbol: str) -> InstrumentCheck:
    try:
        rules = broker.rules(symbol)
    except CandleflowError as exc:
        return InstrumentCheck(symbol, error=" ".join(str(exc).split()))
    smallest = BrokerOrder(f"cf-check-{symbol}", symbol, "1h", datetime.now(UTC), 1, rules.min_size)
    return InstrumentCheck(
        symbol,
        rules.venue_symbol,
        rules.min_size,
        rules.size_step,
        rules.price_decimals,
        rules.tradeable,
        smallest_order=describe(smallest, rules) if rules.min_size > 0 else "",
    )
