"""Candles from the user's own CSV/Parquet files: :func:`read_candle_file` reads one file in the
spellings real downloads use (Yahoo, MetaTrader, Dukascopy, Binance, pandas exports, European
``;`` files) without judging the rows, and :class:`FileBroker` serves a directory of such files."""

from __future__ import annotations

import gzip
import io
import logging
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from brokers._file_formats import (
    PRICE_ROLES,
    ColumnMap,
    map_columns,
    parse_numbers,
    parse_timestamps,
    to_utc,
    uses_decimal_comma,
)
from brokers.base import BaseBroker, BrokerCapabilities
from core.candles import COLUMNS
from core.errors import (
    ConfigError,
    DataFormatError,
    InvalidSymbolError,
    UnknownSymbolError,
    UnknownTimeframeError,
    UnsupportedTimeframeError,
)
from core.symbols import normalize_symbol
from core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

if TYPE_CHECKING:
    from core.config import Settings

logger = logging.getLogger(__name__)

TEXT_SUFFIXES: tuple[str, ...] = (".csv.gz", ".txt.gz", ".csv", ".txt")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES + PARQUET_SUFFIXES
_SEPARATORS = ("\t", ";", ",")
_NUMBER = r"^[+-]?\d+([.,]\d+)?([eE][+-]?\d+)?$"


def read_candle_file(path: Path | str, *, timezone: str = "UTC") -> pl.DataFrame:
    """The candle columns of one file plus ``source_row`` (Int64, the 1-based data-row number in
    the file, blank lines included, so a quarantined row can be found in the user's own file).

    Rows are not judged: an unreadable price or volume is null, an unreadable timestamp leaves
    ``ts`` null, nothing is dropped but blank lines. Rows are put in time order (a newest-first
    file is turned around, any other order sorted). Naive times are wall clock in ``timezone``
    unless the header names the zone (``Gmt time``); dates without a time of day stay dates, at
    00:00 UTC. A file without a volume column gets volume 0.0 (FX files often have none). A file
    that cannot be read as candles raises :class:`DataFormatError`."""
    path = Path(path)
    check_timezone(timezone)
    raw, separator = _read_table(path)
    columns = map_columns(raw.drop("source_row"), path.name)
    zone = "UTC" if columns.ts_says_utc else timezone
    frame = raw.select(
        _timestamps(raw, columns, path.name).alias("ts"),
        *_values(raw, columns, decimal_comma=separator in ("\t", ";")),
        pl.col("source_row"),
    )
    return _in_time_order(frame, zone)


def check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"time zone {timezone!r} is not an IANA time zone name (e.g. UTC, Europe/London)"
        ) from None


def _read_table(path: Path) -> tuple[pl.DataFrame, str | None]:
    """All columns of the file (text files: as strings) with ``source_row``; blank lines dropped."""
    name = path.name.lower()
    if not path.is_file():
        reason = "not a file" if path.exists() else "no such file"
        raise DataFormatError(f"{path}: {reason}")
    if name.endswith(PARQUET_SUFFIXES):
        frame, separator = _read_parquet(path), None
    elif name.endswith(TEXT_SUFFIXES):
        frame, separator = _read_text(path)
    else:
        raise DataFormatError(
            f"{path.name}: unsupported file type; use {', '.join(SUFFIXES)} "
            "(save spreadsheets as CSV)"
        )
    if "source_row" in frame.columns:  # a re-imported quarantine file: its rows are new rows
        frame = frame.rename({"source_row": "source_row_before"})
    frame = frame.with_row_index("source_row", offset=1).with_columns(
        pl.col("source_row").cast(pl.Int64)
    )
    values = [pl.col(c) for c in frame.columns if c != "source_row"]
    blank = [v.is_null() | (v.cast(pl.String).str.strip_chars() == "") for v in values]
    frame = frame.filter(~pl.all_horizontal(blank))
    if frame.height == 0:
        raise DataFormatError(f"{path.name}: the file has no data rows")
    return frame, separator


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataFormatError(f"{path.name}: not a readable Parquet file ({exc})") from None


def _read_text(path: Path) -> tuple[pl.DataFrame, str]:
    data = _text_bytes(path)
    lines = data[:65536].decode("utf-8", errors="replace").lstrip("\ufeff").split("\n")
    skipped = next((i for i, line in enumerate(lines) if any(s in line for s in _SEPARATORS)), None)
    if skipped is None:
        raise DataFormatError(
            f"{path.name}: no line separated by commas, semicolons or tabs; found "
            f"{lines[0][:80]!r}; need a timestamp column and open, high, low, close"
        )
    first = lines[skipped].rstrip("\r")
    separator = max(_SEPARATORS, key=first.count)
    names = _headerless_names(first.split(separator), path.name)
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            has_header=names is None,
            new_columns=names,
            skip_lines=skipped,
            infer_schema=False,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
        )
    except pl.exceptions.PolarsError as exc:
        raise DataFormatError(f"{path.name}: cannot be read as CSV ({exc})") from None
    return frame, separator


def _text_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path.name}: cannot be read ({exc})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16", errors="replace").encode("utf-8")  # MT5, Excel "Unicode"
    if not data.strip():
        raise DataFormatError(f"{path.name}: the file is empty")
    head = data[:8192]
    control = sum(byte < 9 or 13 < byte < 32 for byte in head)
    if b"\x00" in head or control > len(head) // 20:
        raise DataFormatError(
            f"{path.name}: binary data, not CSV text (a spreadsheet or archive?); "
            "save it as CSV or Parquet"
        )
    return data


def _headerless_names(fields: list[str], label: str) -> list[str] | None:
    """``None`` when ``fields`` is a header; the implied names of a header-less file's columns
    (date[,time],open,high,low,close[,volume], or Binance's 12-column klines) otherwise."""
    fields = [f.strip().strip('"') for f in fields]
    numeric = sum(bool(re.fullmatch(_NUMBER, f)) for f in fields[1:])
    if not fields[0][:1].isdigit() or numeric < 4:
        return None
    with_time = bool(re.match(r"\d{1,2}:\d{2}", fields[1]))
    names = ["date", "time"] if with_time else ["timestamp"]
    names += ["open", "high", "low", "close", "volume"]
    if len(fields) == 12 and not with_time:  # Binance klines: open time ... close time ...
        return [*names, *(f"extra_{i}" for i in range(6))]
    if len(names) - 1 <= len(fields) <= len(names):
        return names[: len(fields)]
    raise DataFormatError(
        f"{label}: no header row and {len(fields)} columns, so which is which is unclear; add a "
        "header row such as Date,Open,High,Low,Close,Volume"
    )


def _timestamps(raw: pl.DataFrame, columns: ColumnMap, label: str) -> pl.Series:
    if len(columns.ts) == 2:
        date, time = (raw[c].cast(pl.String).str.strip_chars() for c in columns.ts)
        values = pl.select(pl.concat_str([date, time], separator=" ")).to_series()
    else:
        values = raw[columns.ts[0]]
    ts = parse_timestamps(values)
    if ts.null_count() == ts.len():
        shown = values.drop_nulls().head(3).to_list()
        raise DataFormatError(
            f"{label}: no value of column {' + '.join(columns.ts)} reads as a date/time "
            f"(first values {shown}); use e.g. 2017-01-02 15:00:00, 01/02/2017, epoch seconds"
        )
    return ts


def _values(raw: pl.DataFrame, columns: ColumnMap, *, decimal_comma: bool) -> list[pl.Series]:
    """Prices and volume as Float64. Of several volume columns (MetaTrader's <TICKVOL> and <VOL>)
    the first that is not all zero is taken; without any, volume is 0.0."""
    prices = [raw[columns.prices[role]] for role in PRICE_ROLES]
    decimal_comma = decimal_comma and uses_decimal_comma(prices)
    out = [
        parse_numbers(s, decimal_comma).alias(role)
        for s, role in zip(prices, PRICE_ROLES, strict=True)
    ]
    volumes = [parse_numbers(raw[c], decimal_comma) for c in columns.volume]
    volume = next((v for v in volumes if (v.fill_null(0.0) != 0).any()), None)
    if volume is None:
        volume = volumes[0] if volumes else pl.repeat(0.0, raw.height, eager=True, dtype=pl.Float64)
    return [*out, volume.alias("volume")]


def _in_time_order(frame: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """UTC ``ts`` in time order, ``source_row`` still pointing at the file's rows. A file written
    newest first (at least 2/3 of its steps go back in time) is turned around; any other order is
    sorted (stably: rows of one timestamp keep their order, so the validator still collapses
    copies and quarantines conflicting ones). Rows without a timestamp keep their place in a
    file already in order, and go last in a sorted one."""
    steps = frame["ts"].drop_nulls().diff().drop_nulls()
    back, forward = int((steps < timedelta(0)).sum()), int((steps > timedelta(0)).sum())
    # Before the time-zone step: a repeated DST hour is told apart by the order of the rows.
    if back and back >= NEWEST_FIRST_SHARE * (back + forward):
        frame = frame.reverse()
    elif back:
        logger.info("rows not in time order (%d steps back): sorted by time", back)
        frame = frame.sort("ts", nulls_last=True, maintain_order=True)
    frame = frame.with_columns(to_utc(frame["ts"], timezone).alias("ts"))
    if not frame["ts"].drop_nulls().is_sorted():  # wall clock across a DST fall-back
        frame = frame.sort("ts", nulls_last=True, maintain_order=True)
    return frame


NEWEST_FIRST_SHARE = 2 / 3


# ------------------------------------------------------------------------------------ broker
@dataclass(frozen=True, slots=True)
class _Cached:
    stamp: tuple[int, int]
    frame: pl.DataFrame


class FileBroker(BaseBroker):
    """A directory of ``<SYMBOL>_<TF>.<ext>`` (``EURUSD_1h.csv``, ``btc-usd_1d.parquet``) or
    ``<TF>/<SYMBOL>.<ext>`` files. Files are re-read when they change (path + mtime + size).

    Rows whose timestamp cannot be read cannot be placed in a time range, so the broker skips them
    with a warning naming their data rows; importing the file (:func:`read_candle_file`) keeps them
    for the store's quarantine. Other rows are returned as they are, bad prices included."""

    name: ClassVar[str] = "files"
    capabilities: ClassVar[BrokerCapabilities] = BrokerCapabilities(
        timeframes=tuple(TIMEFRAMES), needs_credentials=False, can_trade=False, local_data=True
    )

    def __init__(self, directory: Path | str, timezone: str = "UTC") -> None:
        check_timezone(timezone)
        self.directory = Path(directory)
        self.timezone = timezone
        self._cache: dict[Path, _Cached] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> FileBroker:
        return cls(settings.files.directory, settings.files.timezone)

    def files(self) -> dict[tuple[str, str], list[Path]]:
        """``(symbol, timeframe) → files`` found in the directory now."""
        if not self.directory.is_dir():
            raise ConfigError(f"files.directory = {str(self.directory)!r}: not a directory")
        found: dict[tuple[str, str], list[Path]] = defaultdict(list)
        for entry in sorted(self.directory.iterdir()):
            if entry.is_dir() and (tf := _timeframe_name(entry.name)):
                for path in sorted(entry.iterdir()):
                    symbol = _symbol_name(_stem(path))
                    if symbol:
                        found[(symbol, tf)].append(path)
            elif (stem := _stem(entry)) and "_" in stem:
                symbol_part, _, tf_part = stem.rpartition("_")
                symbol, tf = _symbol_name(symbol_part), _timeframe_name(tf_part)
                if symbol and tf:
                    found[(symbol, tf)].append(entry)
        return dict(found)

    def symbols(self) -> list[str]:
        return sorted({symbol for symbol, _ in self.files()})

    def check_symbol(self, symbol: str) -> str:
        canonical = normalize_symbol(symbol)
        available = self.symbols()
        if canonical not in available:
            raise UnknownSymbolError(
                f"no file for {canonical} in {self.directory}; it has files for "
                f"{', '.join(available) or 'no symbol'} (name them <SYMBOL>_<TF>.csv or .parquet, "
                "e.g. EURUSD_1h.csv, or <TF>/<SYMBOL>.csv)"
            )
        return canonical

    def _fetch_range(
        self, symbol: str, tf: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        index = self.files()
        paths = index.get((symbol, tf.name), [])
        if not paths:
            has = sorted(t for s, t in index if s == symbol)
            raise UnsupportedTimeframeError(
                f"no {tf} file for {symbol} in {self.directory}; {symbol} has "
                f"{', '.join(has) or 'none'}"
            )
        if len(paths) > 1:
            raise DataFormatError(
                f"{symbol} {tf}: several files {[p.name for p in paths]} in {self.directory}; "
                "keep one"
            )
        frame = self._read(paths[0])
        # Rows without a readable timestamp belong to no window; they travel with every fetch so
        # that validation quarantines them (with their file row) instead of their vanishing.
        ts = pl.col("ts")
        return frame.filter(((ts >= start) & (ts < end)) | ts.is_null()).select(
            *COLUMNS, "source_row"
        )

    def _read(self, path: Path) -> pl.DataFrame:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.frame
        frame = read_candle_file(path, timezone=self.timezone)
        self._cache[path] = _Cached(stamp, frame)
        return frame


def _stem(path: Path) -> str | None:
    """File name without a supported suffix; ``None`` for other files (and hidden ones)."""
    name = path.name
    suffix = next((s for s in SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None or name.startswith(".") or not path.is_file():
        return None
    return name[: -len(suffix)]


def _symbol_name(text: str | None) -> str | None:
    try:
        return normalize_symbol(text) if text else None
    except InvalidSymbolError:
        return None


def _timeframe_name(text: str) -> str | None:
    try:
        return parse_timeframe(text).name
    except UnknownTimeframeError:
        return None
