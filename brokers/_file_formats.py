"""How user candle files spell things: the header names of each column, timestamps (ISO, US and
day-first dates, MetaTrader, Dukascopy, compact dates, epochs) and numbers (decimal commas,
thousands separators). Pure functions over polars Series; :mod:`brokers.files` reads the files."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from core.errors import DataFormatError

PRICE_ROLES: tuple[str, ...] = ("open", "high", "low", "close")

# Priority order: the first alias present wins, so "Close" beats "Last" and "Price" (investing.com
# and futures downloads call the close that way; they are only used when there is no close column).
_PRICE_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice", "last", "price"),
}
_VOLUME_ALIASES = ("volume", "vol", "v", "realvolume", "realvol", "tickvolume", "tickvol", "ticks")
# Names that are a full timestamp on their own, before a Date + Time pair, before a lone date.
_TS_FIRST = (
    "datetime",
    "timestamp",
    "ts",
    "opentime",
    "gmttime",
    "utctime",
    "timeutc",
    "datetimeutc",
    "localtime",
    "starttime",
)
_TS_LATER = ("date", "time", "dt", "day", "period", "unix", "unixtime", "epoch", "indexlevel0")
# pandas writes its index as an unnamed first column ("" or "Unnamed: 0").
_UNNAMED = ("", "unnamed0", "index")
_TIME_OF_DAY = r"^\s*\d{1,2}:\d{2}"


def header_key(name: str) -> str:
    """``"<TICKVOL>"`` → ``"tickvol"``, ``"Gmt time"`` → ``"gmttime"``: no case, no punctuation."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which source column(s) hold each candle field. ``ts`` is one column or a (date, time) pair;
    ``volume`` lists the candidate columns, best first (none: the file has no volume)."""

    ts: tuple[str, ...]
    prices: dict[str, str]
    volume: tuple[str, ...]

    @property
    def ts_says_utc(self) -> bool:
        """A timestamp header such as ``Gmt time`` or ``time_utc`` names the zone itself."""
        return any(zone in header_key(self.ts[0]) for zone in ("gmt", "utc"))


def map_columns(frame: pl.DataFrame, label: str) -> ColumnMap:
    """Find the timestamp, price and volume columns of ``frame`` by their header names."""
    keys: dict[str, str] = {}
    for name in frame.columns:
        keys.setdefault(header_key(name), name)
    prices = {role: _first(keys, aliases) for role, aliases in _PRICE_ALIASES.items()}
    ts = _timestamp_columns(frame, keys)
    missing = [role for role, column in prices.items() if column is None]
    if "adjclose" in keys and "close" in missing:
        raise DataFormatError(
            f"{label}: only an adjusted close ({keys['adjclose']!r}) and no close column; "
            f"adjusted closes do not match unadjusted open/high/low. Rename it to Close if the "
            f"whole file is adjusted; found {frame.columns}"
        )
    if ts is None:
        missing.insert(0, "timestamp")
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise DataFormatError(
            f"{label}: no {', '.join(missing)} column{plural}; found {frame.columns}; "
            "need a timestamp column (e.g. Date, Time, Datetime, Timestamp) and open, high, "
            "low, close"
        )
    volume = [keys[a] for a in _VOLUME_ALIASES if a in keys]
    volume += [n for k, n in keys.items() if k.startswith("volume") and n not in volume]
    return ColumnMap(ts=ts, prices=prices, volume=tuple(volume))  # type: ignore[arg-type]


def _first(keys: dict[str, str], aliases: tuple[str, ...]) -> str | None:
    return next((keys[a] for a in aliases if a in keys), None)


def _timestamp_columns(frame: pl.DataFrame, keys: dict[str, str]) -> tuple[str, ...] | None:
    single = _first(keys, _TS_FIRST)
    if single is not None:
        return (single,)
    if "date" in keys and "time" in keys and _holds_times_of_day(frame[keys["time"]]):
        return keys["date"], keys["time"]
    single = _first(keys, _TS_LATER)
    if single is None and header_key(frame.columns[0]) in _UNNAMED:
        single = frame.columns[0]
    return None if single is None else (single,)


def _holds_times_of_day(values: pl.Series) -> bool:
    if values.dtype == pl.Time:
        return True
    text = values.cast(pl.String).drop_nulls()
    return text.len() > 0 and text.str.contains(_TIME_OF_DAY).mean() >= 0.5  # type: ignore[operator]


# ---------------------------------------------------------------------------------- numbers
_COMMA_DECIMAL = r"^\s*[+-]?\d[\d.' ]*,\d+\s*$"
_DOT_DECIMAL = r"^\s*[+-]?\d+\.\d+\s*$"
_THOUSANDS = r"^\s*[+-]?\d{1,3}(,\d{3})+(\.\d+)?\s*$"


def uses_decimal_comma(columns: list[pl.Series]) -> bool:
    """``1,0716`` rather than ``1.0716`` in most price cells (semicolon files from Europe)."""
    text = [c for c in columns if c.dtype == pl.String]
    comma = sum(int(c.str.contains(_COMMA_DECIMAL).sum()) for c in text)
    dot = sum(int(c.str.contains(_DOT_DECIMAL).sum()) for c in text)
    return comma > dot


def parse_numbers(values: pl.Series, decimal_comma: bool = False) -> pl.Series:
    """Float64; a cell that is not a number becomes null."""
    if values.dtype != pl.String:
        return values.cast(pl.Float64, strict=False)
    text = values.str.strip_chars()
    if decimal_comma:
        text = text.str.replace_all(r"[.' \u00a0]", "").str.replace(",", ".", literal=True)
    else:
        grouped = text.str.contains(_THOUSANDS)
        text = pl.select(
            pl.when(grouped).then(text.str.replace_all(",", "", literal=True)).otherwise(text)
        ).to_series()
    return text.cast(pl.Float64, strict=False).alias(values.name)


# ------------------------------------------------------------------------------- timestamps
# Ties in the number of values a format reads are won by the earlier format: month/day first
# for "/" (US), day/month first for "." and "-" (Dukascopy, most of Europe).
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y.%m.%d",
    "%Y/%m/%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%m.%d.%Y",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%m/%d/%y",
    "%d/%m/%y",
    "%d.%m.%y",
    "%Y%m%d",
    "%d-%b-%Y",
    "%d %b %Y",
    "%b %d, %Y",
    "%b %d %Y",
    "%d-%b-%y",
)
_TIME_FORMATS = ("", " %H:%M:%S%.f", " %H:%M", " %I:%M:%S %p", " %I:%M %p", " %H%M%S", " %H%M")
_PLAUSIBLE_YEARS = (1800, 2200)
_SAMPLE = 1000
_EXCEL_EPOCH_DAYS = 25_569  # 1970-01-01 as an Excel serial day
_CLOCK = r"(\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[AaPp][Mm])?)"


def parse_timestamps(values: pl.Series) -> pl.Series:
    """Datetime(us): UTC when the values say where they are (offsets, epochs), else naive wall
    clock. Values that no format reads become null; all-null means nothing was readable."""
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        return values.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return values.cast(pl.Datetime("us"))
    if dtype.is_numeric():
        return _from_epoch(values.cast(pl.Float64))
    text = _normalise(values.cast(pl.String))
    digits = text.str.contains(r"^[+-]?\d+(\.\d+)?$")
    if digits.sum() * 2 >= text.drop_nulls().len() > 0:
        return _from_digits(text.filter(digits.fill_null(False)), text)
    return _strptime_best(text)


def _normalise(text: pl.Series) -> pl.Series:
    """ISO ``T`` → space; ``Z``, ``GMT``, ``UTC`` → ``+00:00``; ``GMT+0200`` and ``15:00 +02:00``
    → ``15:00+0200``-style offsets that ``%z`` reads."""
    text = text.str.strip_chars()
    text = pl.select(pl.when(text != "").then(text)).to_series()
    text = text.str.replace(r"^(\d{4}-\d{1,2}-\d{1,2})[Tt]", "${1} ")
    text = text.str.replace(_CLOCK + r"\s*(?:Z|z|GMT|UTC)$", "${1}+00:00")
    return text.str.replace(_CLOCK + r"\s*(?:GMT|UTC)?\s*([+-]\d{2}:?\d{2})$", "${1}${2}")


def _from_digits(digits: pl.Series, text: pl.Series) -> pl.Series:
    """Compact ``20170102`` / ``20170102150000`` when most values read so, else epochs."""
    for length, fmt in ((8, "%Y%m%d"), (14, "%Y%m%d%H%M%S")):
        if _score(digits.filter(digits.str.len_chars() == length), fmt) * 2 > digits.len():
            return _strptime(text, fmt)
    return _from_epoch(text.cast(pl.Float64, strict=False))


def _from_epoch(numbers: pl.Series) -> pl.Series:
    """Seconds, milliseconds, microseconds or nanoseconds since 1970, told apart by magnitude
    value by value (Binance switched its klines from ms to µs in 2025). Numbers below 10⁶ would
    all fall in January 1970: those are Excel's serial days (wall clock, 42737 = 2017-01-02)."""
    x = pl.col("x")
    if ((numbers.abs() < 1e6).mean() or 0) > 0.5:  # type: ignore[operator]
        micros, zone = ((x - _EXCEL_EPOCH_DAYS) * 86_400_000).round() * 1000, None
    else:
        micros = (
            pl.when(x.abs() < 1e11)
            .then(x * 1e6)
            .when(x.abs() < 1e14)
            .then(x * 1e3)
            .when(x.abs() < 1e17)
            .then(x)
            .otherwise(x / 1e3)
        ).round()
        zone = "UTC"
    frame = pl.DataFrame({"x": numbers.cast(pl.Float64)})
    timestamps = frame.select(micros.cast(pl.Int64, strict=False).cast(pl.Datetime("us", zone)))
    return timestamps.to_series().alias(numbers.name)


def _strptime(text: pl.Series, fmt: str) -> pl.Series:
    return text.str.strptime(pl.Datetime("us"), fmt, strict=False, exact=True)


def _score(text: pl.Series, fmt: str) -> int:
    """How many values ``fmt`` reads into a plausible year (so ``%Y`` does not read ``99``)."""
    years = _strptime(text, fmt).dt.year()
    return int(years.is_between(*_PLAUSIBLE_YEARS, closed="left").sum())


def _candidates(sample: pl.Series) -> list[str]:
    zones = ("", "%z") if sample.str.contains(r"\d[+-]\d{2}:?\d{2}$").any() else ("",)
    return [d + t + z for d in _DATE_FORMATS for t in _TIME_FORMATS for z in zones if t or not z]


def _strptime_best(text: pl.Series) -> pl.Series:
    """Try every known format on a sample; among the best, the one that reads most of the column."""
    known = text.drop_nulls()
    if known.len() == 0:
        return _strptime(text, "%Y-%m-%d")
    step = max(1, known.len() // _SAMPLE)
    sample = pl.concat([known.head(_SAMPLE), known.gather_every(step)]).unique()
    scores = {fmt: _score(sample, fmt) for fmt in _candidates(sample)}
    best = max(scores.values())
    tied = [fmt for fmt, score in scores.items() if score == best]
    chosen = tied[0] if len(tied) == 1 else max(tied, key=lambda fmt: _score(known, fmt))
    return _strptime(text, chosen)


def to_utc(ts: pl.Series, timezone: str) -> pl.Series:
    """Naive wall-clock times in ``timezone`` → UTC; aware values are converted.

    A column whose values are all at midnight is daily (or coarser) data: those are calendar dates
    and become 00:00 UTC of that date whatever the zone, as daily candles are keyed by date.
    Across a DST fall-back the repeated wall-clock hour is read first as summer time, then as
    winter time; wall-clock times skipped by a spring-forward do not exist and become null."""
    dtype = ts.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return ts.dt.convert_time_zone("UTC")
    known = ts.drop_nulls()
    if timezone == "UTC" or (known.dt.truncate("1d") == known).all():
        return ts.dt.replace_time_zone("UTC")
    local = pl.col("ts")
    seen = local.shift(1).cum_max().forward_fill()
    ambiguous = pl.when(local <= seen).then(pl.lit("latest")).otherwise(pl.lit("earliest"))
    return (
        pl.DataFrame({"ts": ts})
        .select(
            local.dt.replace_time_zone(
                timezone, ambiguous=ambiguous, non_existent="null"
            ).dt.convert_time_zone("UTC")
        )
        .to_series()
    )
