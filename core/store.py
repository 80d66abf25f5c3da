"""The local candle store: one Parquet file per symbol × timeframe, sorted and unique by ``ts``.

Layout under the state directory: ``candles/<tf>/<SYMBOL>.parquet`` (its sources in the file's
metadata, see ``core.provenance``); for rows that failed validation,
``quarantine/<tf>/<SYMBOL>.parquet`` (with the reason per row); ``locks/`` for writers. Writes are
atomic (temp file in the same directory + rename) and serialised per dataset with a file lock, so
a crash or a concurrent collect leaves the old or the new file, never a torn one; the next write
removes the temp files a killed one left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from core.candles import COLUMNS, empty_candles
from core.errors import StoreError
from core.locks import exclusive
from core.provenance import ImportPolicy, Provenance, Source, StoredDataset, check_import
from core.read_cache import ReadCache
from core.reports import CollectReport
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, as_utc, parse_timeframe
from core.validation import (
    VALUE_COLUMNS,
    Plausibility,
    ValidationResult,
    plausibility_for,
    validate_candles,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpsertReport:
    """What one upsert did; ``first_ts``/``last_ts``/``rows`` describe the stored dataset after."""

    symbol: str
    timeframe: str
    received: int
    new: int
    replaced: int
    duplicated: int
    quarantined: int
    gaps: int
    missing_candles: int
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    reasons: dict[str, int]

    def report(self, fetched: int | None = None) -> CollectReport:
        """The collect/import report row (``fetched``: candles the broker or file gave)."""
        data = {k: v for k, v in asdict(self).items() if k != "received"}
        return CollectReport(**data, fetched=fetched)


@dataclass(frozen=True)
class DatasetInfo:
    symbol: str
    timeframe: str
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    quarantined: int
    path: Path


# A temp file of a killed write (``.<name>.<32 hex>.tmp``) is removed once this old and its
# dataset's lock is free: a live writer holds the lock until its temp file is renamed.
STALE_TEMP_SECONDS = 300.0
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{32}\.tmp$")


def write_parquet_atomic(
    frame: pl.DataFrame, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``frame`` to ``path``: readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # directory fsync is best effort (not on every filesystem)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def find_gaps(ts: pl.Series, timeframe: Timeframe) -> pl.DataFrame:
    """Missing candles between consecutive timestamps: ``after``, ``before``, ``missing``."""
    frame = pl.DataFrame({"before": ts}).with_columns(after=pl.col("before").shift(1))
    step = pl.col("before") - pl.col("after")
    return frame.filter(step > pl.duration(seconds=timeframe.seconds)).select(
        "after",
        "before",
        missing=(step.dt.total_seconds() // timeframe.seconds - 1).cast(pl.Int64),
    )


class CandleStore:
    """Parquet candle store rooted at the state directory (see the module docstring).
    ``cache_mb`` > 0 keeps whole-file reads in memory until the file changes (for a long-lived
    process reading the same files many times; frames are shared: never mutate one in place)."""

    def __init__(self, home: Path | str, cache_mb: float = 0) -> None:
        self.home = Path(home)
        self._cache = ReadCache(int(cache_mb * 2**20)) if cache_mb > 0 else None

    # -- paths -----------------------------------------------------------------------------
    def path(self, symbol: str, timeframe: str | Timeframe) -> Path:
        tf = parse_timeframe(timeframe)
        return self.home / "candles" / tf.name / f"{normalize_symbol(symbol)}.parquet"

    def quarantine_path(self, symbol: str, timeframe: str | Timeframe) -> Path:
        tf = parse_timeframe(timeframe)
        return self.home / "quarantine" / tf.name / f"{normalize_symbol(symbol)}.parquet"

    def _locked(self, symbol: str, timeframe: str | Timeframe) -> AbstractContextManager[None]:
        tf = parse_timeframe(timeframe)
        return exclusive(self.home / "locks" / f"{tf.name}-{normalize_symbol(symbol)}.lock")

    def provenance(self, symbol: str, timeframe: str | Timeframe) -> Provenance:
        """The recorded sources of a dataset (an absent dataset has none)."""
        path = self.path(symbol, timeframe)
        if not path.exists():
            return Provenance()
        try:
            return Provenance.from_metadata(pl.read_parquet_metadata(path))
        except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
            raise StoreError(f"cannot read {path}: {exc}; move it away to re-collect") from exc

    # -- reading ---------------------------------------------------------------------------
    def read(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Stored candles with ``start <= ts < end`` (an absent dataset reads as empty)."""
        path = self.path(symbol, timeframe)
        if not path.exists():
            return empty_candles()
        where = _between(start, end)
        if self._cache is not None:
            frame = _cached(self._cache, path)
            if frame is None:
                return empty_candles()
            return frame if where is None else frame.filter(where)
        lazy = pl.scan_parquet(path)
        return _collect(lazy if where is None else lazy.filter(where), path)

    def last_ts(self, symbol: str, timeframe: str | Timeframe) -> datetime | None:
        path = self.path(symbol, timeframe)
        if not path.exists():
            return None
        if self._cache is not None:
            frame = _cached(self._cache, path)
            return None if frame is None or frame.is_empty() else frame["ts"][-1]
        return _collect(pl.scan_parquet(path).select(pl.col("ts").max()), path).item()

    def read_quarantine(self, symbol: str, timeframe: str | Timeframe) -> pl.DataFrame:
        path = self.quarantine_path(symbol, timeframe)
        return _collect(pl.scan_parquet(path), path) if path.exists() else pl.DataFrame()

    def datasets(self) -> list[DatasetInfo]:
        """Every stored symbol × timeframe with its size and range."""
        out = []
        for path in sorted((self.home / "candles").glob("*/*.parquet")):
            symbol, tf = path.stem, path.parent.name
            summary = pl.scan_parquet(path).select(
                pl.len().alias("rows"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
            )
            stats = _collect(summary, path).row(0)
            q_path = self.quarantine_path(symbol, tf)
            quarantined = (
                _collect(pl.scan_parquet(q_path).select(pl.len()), q_path).item()
                if q_path.exists()
                else 0
            )
            out.append(DatasetInfo(symbol, tf, stats[0], stats[1], stats[2], quarantined, path))
        return out

    def gaps(self, symbol: str, timeframe: str | Timeframe) -> pl.DataFrame:
        return find_gaps(self.read(symbol, timeframe)["ts"], parse_timeframe(timeframe))

    # -- writing ---------------------------------------------------------------------------
    def upsert(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        candles: pl.DataFrame,
        *,
        now: datetime | None = None,
        source: str = "collect",
        bounds: Plausibility | None = None,
        policy: ImportPolicy | None = None,
    ) -> UpsertReport:
        """Validate ``candles`` (``bounds``: default, those of the symbol's asset class),
        quarantine bad rows, merge good ones (the newest value wins). ``source``: ``broker:<name>``
        or ``import:<path>``, recorded with the dataset. ``policy`` marks an import: it is
        checked against the stored candles first (``core.provenance``) and refused, leaving the
        store as it was, when it would mix sources or change stored candles."""
        symbol, tf = normalize_symbol(symbol), parse_timeframe(timeframe)
        now = as_utc(now) if now else datetime.now(UTC)
        for folder in (self.path(symbol, tf).parent, self.quarantine_path(symbol, tf).parent):
            self._sweep_temps(folder, tf)
        with self._locked(symbol, tf):
            stored = StoredDataset(symbol, tf, self.read(symbol, tf), self.provenance(symbol, tf))
            bounds = bounds or plausibility_for(symbol)
            checked = validate_candles(candles, tf, now, bounds, stored.candles)
            if policy is not None:
                check_import(stored, checked.good, source, policy)
            if not checked.bad.is_empty():
                self._quarantine(symbol, tf, checked.bad, source, now)
            merged, counts = self._write(stored, checked.good, source, now, policy)
        if checked.bad.height:
            logger.warning(
                "%s %s: %d candle(s) quarantined in %s: %s",
                symbol,
                tf,
                checked.bad.height,
                self.quarantine_path(symbol, tf),
                checked.reasons,
            )
        return _report(stored, merged, checked, counts, candles.height)

    def _write(
        self,
        stored: StoredDataset,
        good: pl.DataFrame,
        source: str,
        now: datetime,
        policy: ImportPolicy | None,
    ) -> tuple[pl.DataFrame, dict[str, int]]:
        """Merge ``good`` into the stored candles (or put it in their place when the policy
        replaces them) and write the file with its provenance when anything changed."""
        replacing = policy is not None and policy.replace and not stored.candles.is_empty()
        base = empty_candles() if replacing else stored.candles
        counts = _merge_counts(base, good)
        merged = _merge(base, good)
        written = counts["new"] + counts["replaced"]
        if written or replacing:
            provenance = (Provenance() if replacing else stored.provenance).written(
                source, now, written
            )
            path = self.path(stored.symbol, stored.timeframe)
            write_parquet_atomic(merged, path, metadata=provenance.to_metadata())
        if replacing:
            logger.warning(
                "%s: its %d candles from %s were replaced by %d from %s",
                stored.name,
                stored.candles.height,
                stored.provenance.describe(),
                merged.height,
                Source.parse(source).label,
            )
        return merged, counts

    def _sweep_temps(self, folder: Path, tf: Timeframe) -> None:
        """Remove the temp files killed writes left in ``folder``: those older than
        ``STALE_TEMP_SECONDS``, each under its dataset's lock (taken before this writer's own,
        so no two writers wait on each other)."""
        if not folder.is_dir():
            return
        cutoff = time.time() - STALE_TEMP_SECONDS
        for tmp in folder.glob(".*.tmp"):
            match = _TEMP_NAME.match(tmp.name)
            try:
                if match is None or tmp.stat().st_mtime > cutoff:
                    continue
                with self._locked(match["target"].removesuffix(".parquet"), tf):
                    tmp.unlink(missing_ok=True)
            except (OSError, ValueError) as exc:  # gone meanwhile, or not a dataset's name
                logger.debug("left %s: %s", tmp, exc)
                continue
            logger.info("removed %s, left by a write that did not finish", tmp)

    def _quarantine(
        self, symbol: str, tf: Timeframe, bad: pl.DataFrame, source: str, now: datetime
    ) -> None:
        path = self.quarantine_path(symbol, tf)
        rows = bad.with_columns(
            source=pl.lit(source), quarantined_at=pl.lit(now).cast(pl.Datetime("us", "UTC"))
        )
        if path.exists():
            previous = _collect(pl.scan_parquet(path), path)
            rows = pl.concat([previous, rows], how="diagonal_relaxed")
            # The same bad row fetched again is one quarantined row, not two.
            rows = rows.unique(
                subset=[c for c in rows.columns if c != "quarantined_at"],
                keep="first",
                maintain_order=True,
            )
        write_parquet_atomic(rows, path)


def _between(start: datetime | None, end: datetime | None) -> pl.Expr | None:
    """``start <= ts < end`` (either bound optional; None: no bound at all)."""
    bounds = []
    if start is not None:
        bounds.append(pl.col("ts") >= as_utc(start))
    if end is not None:
        bounds.append(pl.col("ts") < as_utc(end))
    if not bounds:
        return None
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


def _cached(cache: ReadCache, path: Path) -> pl.DataFrame | None:
    """The whole file through ``cache``; None when it was removed since the caller looked."""
    try:
        return cache.read(path, lambda: _collect(pl.scan_parquet(path), path))
    except FileNotFoundError:
        return None


def _collect(lazy: pl.LazyFrame, path: Path) -> pl.DataFrame:
    """Run a query on a store file; an unreadable (e.g. corrupted) file is a ``StoreError``."""
    try:
        return lazy.collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StoreError(f"cannot read {path}: {exc}; move it away to re-collect") from exc


def _report(
    stored: StoredDataset,
    merged: pl.DataFrame,
    checked: ValidationResult,
    counts: dict[str, int],
    received: int,
) -> UpsertReport:
    window = _gap_window(merged, checked.good, stored.timeframe)
    gaps = find_gaps(window, stored.timeframe)
    return UpsertReport(
        symbol=stored.symbol,
        timeframe=stored.timeframe.name,
        received=received,
        new=counts["new"],
        replaced=counts["replaced"],
        duplicated=counts["duplicated"] + checked.duplicates,
        quarantined=checked.bad.height,
        gaps=gaps.height,
        missing_candles=int(gaps["missing"].sum()) if gaps.height else 0,
        rows=merged.height,
        first_ts=merged["ts"].min() if merged.height else None,
        last_ts=merged["ts"].max() if merged.height else None,
        reasons=checked.reasons,
    )


def _merge_counts(existing: pl.DataFrame, good: pl.DataFrame) -> dict[str, int]:
    if existing.is_empty():
        return {"new": good.height, "replaced": 0, "duplicated": 0}
    joined = good.join(existing, on="ts", how="left", suffix="_old")
    known = pl.col("open_old").is_not_null()
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}_old")) for c in VALUE_COLUMNS])
    row = joined.select(
        new=(~known).sum(), replaced=(known & ~same).sum(), duplicated=(known & same).sum()
    ).row(0, named=True)
    return {key: int(value) for key, value in row.items()}


def _merge(existing: pl.DataFrame, good: pl.DataFrame) -> pl.DataFrame:
    if existing.is_empty():
        return good.select(COLUMNS)
    kept = existing.join(good.select("ts"), on="ts", how="anti")
    return pl.concat([kept, good.select(COLUMNS)], how="vertical").sort("ts")


def _gap_window(merged: pl.DataFrame, good: pl.DataFrame, tf: Timeframe) -> pl.Series:
    """Stored timestamps around this batch: from the candle before its first through its last."""
    if good.is_empty():
        return pl.Series("ts", [], dtype=pl.Datetime("us", "UTC"))
    first, last = good["ts"].min(), good["ts"].max()
    ts = merged["ts"]
    before = ts.filter(ts < first)
    lower = before.max() if before.len() else first
    return ts.filter((ts >= lower) & (ts <= last))
