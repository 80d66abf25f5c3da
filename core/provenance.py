"""Where a stored dataset's candles came from, and what an import may do to them.

Each source (a broker by name, or the user's files) is recorded with its first and last write in
the candle file's own Parquet metadata, so that data and provenance are replaced together. An
import (:class:`ImportPolicy`) is refused when the dataset holds candles of another source, or
when it would change stored candles beyond a tolerance: the store is then left untouched."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from core.candles import PRICE_COLUMNS
from core.errors import CandleflowError
from core.timeframes import Timeframe

METADATA_KEY = "candleflow.provenance"
# Two values closer than this (relative) are the same value: a CSV round trip, not a correction.
RELATIVE_TOLERANCE = 1e-9
# A refused import whose candles match the stored ones up to this many hours later or earlier is
# most likely read in the wrong time zone.
MAX_SHIFT_HOURS = 24


class ImportRefusedError(CandleflowError):
    """An import would mix sources or overwrite stored candles; nothing was written."""


@dataclass(frozen=True)
class ImportPolicy:
    """What an import may do to a non-empty dataset. ``replace``: drop the stored candles and keep
    only the import's (also when they come from another source). ``allow_corrections``: let the
    import change stored candles (and add candles without volume to a dataset with volumes)."""

    replace: bool = False
    allow_corrections: bool = False


@dataclass(frozen=True)
class Source:
    """A broker (``broker:<name>``; a bare ``collect`` names no broker) or a user file
    (``import:<path>``). All files count as one source: a user's yearly files of one symbol go
    into one dataset; their overlaps are checked candle by candle instead."""

    kind: Literal["broker", "file"]
    name: str

    @classmethod
    def parse(cls, text: str) -> Source:
        prefix, _, rest = text.partition(":")
        if rest and prefix in ("import", "file"):
            return cls("file", rest)
        if rest and prefix == "broker":
            return cls("broker", rest)
        return cls("broker", "" if text == "collect" else text)

    @property
    def label(self) -> str:
        if self.kind == "file":
            return "the user's files"
        return f"broker {self.name!r}" if self.name else "a broker"

    def same_origin(self, other: Source) -> bool:
        if self.kind != other.kind:
            return False
        return self.kind == "file" or not self.name or not other.name or self.name == other.name


@dataclass(frozen=True)
class SourceRecord:
    """One source of a dataset: when it first and last wrote candles, and how many in all."""

    source: str
    first: datetime
    last: datetime
    candles: int


@dataclass(frozen=True)
class Provenance:
    """The sources of one dataset, oldest first. ``known`` is False for a dataset stored before
    sources were recorded."""

    records: tuple[SourceRecord, ...] = ()
    known: bool = True

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> Provenance:
        text = (metadata or {}).get(METADATA_KEY)
        if text is None:
            return cls(known=False)
        rows = json.loads(text)["sources"]
        return cls(
            tuple(
                SourceRecord(
                    r["source"],
                    datetime.fromisoformat(r["first"]),
                    datetime.fromisoformat(r["last"]),
                    int(r["candles"]),
                )
                for r in rows
            )
        )

    def to_metadata(self) -> dict[str, str]:
        rows = [
            asdict(r) | {"first": r.first.isoformat(), "last": r.last.isoformat()}
            for r in self.records
        ]
        return {METADATA_KEY: json.dumps({"sources": rows}, sort_keys=True)}

    def written(self, source: str, now: datetime, candles: int) -> Provenance:
        """This provenance after ``source`` wrote ``candles`` candles at ``now``."""
        for i, record in enumerate(self.records):
            if record.source == source:
                updated = replace(record, last=now, candles=record.candles + candles)
                return Provenance((*self.records[:i], updated, *self.records[i + 1 :]))
        return Provenance((*self.records, SourceRecord(source, now, now, candles)))

    def origins(self) -> list[Source]:
        return list(dict.fromkeys(Source.parse(r.source) for r in self.records))

    def describe(self) -> str:
        if not self.known:
            return "an unrecorded source (stored before sources were recorded)"
        labels = dict.fromkeys(s.label for s in self.origins())
        return " and ".join(labels) or "no recorded source"


@dataclass(frozen=True)
class StoredDataset:
    """One dataset as stored: its candles (sorted by ``ts``) and their provenance."""

    symbol: str
    timeframe: Timeframe
    candles: pl.DataFrame
    provenance: Provenance

    @property
    def name(self) -> str:
        return f"{self.symbol} {self.timeframe.name}"


def check_import(
    stored: StoredDataset, good: pl.DataFrame, source: str, policy: ImportPolicy
) -> None:
    """Raise :class:`ImportRefusedError` when importing ``good`` (validated candles, sorted)
    from ``source`` into ``stored`` must not go ahead under ``policy``. Replacing the whole
    dataset is allowed when the import has candles to put in its place."""
    existing = stored.candles
    if existing.is_empty():
        return
    if policy.replace:
        if good.is_empty():
            raise ImportRefusedError(
                f"{stored.name}: this file has no valid candle to replace the stored "
                f"{existing.height:,} with; nothing was stored"
            )
        return
    incoming, provenance = Source.parse(source), stored.provenance
    foreign = not provenance.known or not all(incoming.same_origin(s) for s in provenance.origins())
    if foreign:
        raise ImportRefusedError(
            f"{stored.name} holds {existing.height:,} candles from {provenance.describe()}; "
            "this file is another source; nothing was stored: re-run with --replace to replace "
            "them, or import it as another symbol"
        )
    if policy.allow_corrections:
        return
    step = stored.timeframe.duration
    problem = _changes(existing, good, step) or _dropped_volume(existing, good)
    if problem:
        raise ImportRefusedError(
            f"{stored.name}: {problem}; nothing was stored: if the file is right, re-run with "
            "--allow-corrections"
        )


def _differs(new: pl.Expr, old: pl.Expr) -> pl.Expr:
    return (new - old).abs() > RELATIVE_TOLERANCE * pl.max_horizontal(new.abs(), old.abs())


def _changes(existing: pl.DataFrame, good: pl.DataFrame, step: timedelta) -> str | None:
    """The diff summary of the stored candles ``good`` would change, or None."""
    columns = (*PRICE_COLUMNS, "volume")
    joined = good.join(existing, on="ts", how="inner", suffix="_old")
    changed = joined.filter(
        pl.any_horizontal(_differs(pl.col(c), pl.col(f"{c}_old")) for c in columns)
    )
    if changed.is_empty():
        return None
    size = pl.concat(
        [
            changed.select(
                "ts",
                column=pl.lit(c),
                old=pl.col(f"{c}_old"),
                new=pl.col(c),
                rel=(pl.col(c) - pl.col(f"{c}_old")).abs()
                / pl.max_horizontal(pl.col(f"{c}_old").abs(), pl.lit(1e-300)),
            )
            for c in columns
        ]
    )
    top = size.sort("rel", descending=True, nulls_last=True).row(0, named=True)
    text = (
        f"this import would change {changed.height:,} of the stored candles (largest change: "
        f"{top['column']} {top['old']:.6g} → {top['new']:.6g} at {_when(top['ts'])}; first "
        f"changed candle {_when(changed['ts'].min())})"
    )
    return text + _shift_hint(existing, changed.select("ts", *columns), step)


def _dropped_volume(existing: pl.DataFrame, good: pl.DataFrame) -> str | None:
    if good.is_empty() or (good["volume"] != 0).any() or not (existing["volume"] != 0).any():
        return None
    return (
        f"this file has no volume (all {good.height:,} candles 0) but the stored candles have "
        "volumes; volume features (OBV, MFI, volume z-score) would break"
    )


def _shift_hint(existing: pl.DataFrame, changed: pl.DataFrame, step: timedelta) -> str:
    """``; its candles match the stored ones 2 h earlier: …`` when shifting the changed candles
    by a time-zone offset makes most of them equal stored ones (naive times read in the wrong
    zone)."""
    columns = (*PRICE_COLUMNS, "volume")
    sample = changed.head(500).select("ts", *columns)
    if sample.height < 3:
        return ""
    stored = existing.select("ts", *columns)
    for shift in _zone_offsets(step):
        matched = sample.with_columns(pl.col("ts") + shift).join(stored, on="ts", suffix="_old")
        differs = pl.any_horizontal(_differs(pl.col(c), pl.col(f"{c}_old")) for c in columns)
        if matched.height >= 3 and matched.filter(~differs).height >= 0.9 * matched.height:
            hours = abs(shift / timedelta(hours=1))
            direction = "later" if shift > timedelta(0) else "earlier"
            return (
                f"; its candles match the stored ones {hours:g} h {direction}: check the "
                "file's time zone (--tz)"
            )
    return ""


def _zone_offsets(step: timedelta) -> list[timedelta]:
    """Every whole or half hour up to a day either way that is a whole number of bars, nearest
    first."""
    offsets = (timedelta(minutes=30 * k) for k in range(1, 2 * MAX_SHIFT_HOURS + 1))
    aligned = [o for o in offsets if o % step == timedelta(0)]
    return [o for pair in zip(aligned, [-o for o in aligned], strict=True) for o in pair]


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")
