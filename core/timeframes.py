"""Timeframes candleflow knows, with their durations, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.errors import UnknownTimeframeError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A candle period such as ``1h``: its name and duration."""

    name: str
    duration: timedelta

    @property
    def seconds(self) -> int:
        return int(self.duration.total_seconds())

    def floor(self, ts: datetime) -> datetime:
        """The open time of the candle that contains ``ts`` (UTC, aligned to the epoch)."""
        secs = int((as_utc(ts) - _EPOCH).total_seconds())
        return _EPOCH + timedelta(seconds=secs - secs % self.seconds)

    def is_aligned(self, ts: datetime) -> bool:
        return self.floor(ts) == ts

    def __str__(self) -> str:
        return self.name


TIMEFRAMES: dict[str, Timeframe] = {
    name: Timeframe(name, duration)
    for name, duration in (
        ("1m", timedelta(minutes=1)),
        ("5m", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
    )
}

_ALIASES = {
    "60m": "1h",
    "240m": "4h",
    "24h": "1d",
    "h1": "1h",
    "h4": "4h",
    "d1": "1d",
    "m1": "1m",
    "m5": "5m",
    "m15": "15m",
    "m30": "30m",
    "1min": "1m",
    "5min": "5m",
    "15min": "15m",
    "30min": "30m",
    "1hour": "1h",
    "4hour": "4h",
    "1day": "1d",
    "daily": "1d",
    "hourly": "1h",
}


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """``"1h"``, ``"H1"``, ``"60m"`` → 1h; anything else is an error listing the valid names."""
    if isinstance(value, Timeframe):
        return value
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return TIMEFRAMES[key]
    except KeyError:
        allowed = ", ".join(TIMEFRAMES)
        raise UnknownTimeframeError(f"unknown timeframe {value!r}; allowed: {allowed}") from None
