"""The features of a symbol × timeframe kept up to date one closed candle at a time, for a
process that scores the same symbols again and again (the signal service).

:func:`features.build.compute_features` rebuilds every series over a tail of thousands of bars
for each decision (TA-Lib's recursive indicators need that tail to forget their start). Here each
indicator keeps its state (``features.streams``: TA-Lib's arithmetic, one bar at a time), so a new
candle costs one step of each: **the same values bit for bit** as ``compute_features`` over the
candles this stream has seen since it started (tests/features/test_incremental.py checks every
column of the default spec, with a higher timeframe stored or resampled and a correlated symbol).

A stream starts on the same tail the live path builds from (``features.dataset.recent``), so its
first row is the live path's; later rows differ from a fresh tail's by what that tail forgets
(under 1e-10, ``features.dataset.tail_bars``). A TA-Lib function or parameter set without an
exact stream (``features.streams`` lacks it, or it disagrees with TA-Lib on this CPU) is
*replayed*: its inputs are kept and TA-Lib is called over all of them when its newest value is
asked for — the same call as the full build's, so still the same values, at TA-Lib's cost.

No look-ahead, as in ``features.build``: a higher timeframe's or another symbol's candle is
visible from the first base bar whose close is at or after its close.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from core.feature_spec import FeatureSpec
from core.timeframes import Timeframe, parse_timeframe
from features.build import correlated_symbols, epoch_us
from features.incremental.parts import COLUMNS, Bar, Block, Correlated, Higher, Replay


class OutOfStep(Exception):
    """The stored candles no longer continue what a stream has seen (a revised or removed
    candle): start a new stream."""


class ColumnsDiffer(Exception):
    """The columns a stream builds are not the ones asked for (the spec differs)."""


@dataclass
class _Source:
    """Candles of a higher timeframe or another symbol waiting to become visible."""

    key: str
    take: Callable[[Bar], None]
    start_us: np.ndarray
    close_us: np.ndarray
    bars: np.ndarray  # rows of open, high, low, close, volume
    next: int = 0


_RECENT = 64  # candles read from a frame's end when the last one seen is among them


def _unseen(
    frame: pl.DataFrame, last_us: int | None, last_bar: Bar | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Open times (µs) and bars of ``frame``'s candles after the one opened at ``last_us``
    (all of them when None); that one must still be there, unchanged (else
    :class:`OutOfStep`). Only the frame's end is read when it holds that candle."""
    if last_us is not None and frame.height > _RECENT:
        recent = frame.tail(_RECENT)
        if epoch_us(recent["ts"].head(1))[0] <= last_us:
            frame = recent
    starts = epoch_us(frame["ts"])
    first = 0
    if last_us is not None:
        first = int(np.searchsorted(starts, last_us, "left"))
        if first >= starts.size or starts[first] != last_us:
            raise OutOfStep(f"{name}: the last candle seen is no longer stored")
    bars = np.column_stack([frame[c].to_numpy()[first:] for c in COLUMNS]).astype(np.float64)
    if last_us is not None:
        if tuple(bars[0].tolist()) != last_bar:
            raise OutOfStep(f"{name}: the last candle seen was revised")
        return starts[first + 1 :], bars[1:]
    return starts, bars


class FeatureStream:
    """The feature row of a symbol × timeframe at its newest candle, one candle at a time.

    ``catch_up`` feeds it the candles it has not seen (the base series, and the higher
    timeframes' stored candles and correlated symbols' candles it is given); ``row`` is the
    features at the newest base candle, by column name, as ``compute_features`` names them.
    """

    def __init__(self, spec: FeatureSpec, timeframe: str | Timeframe, symbol: str) -> None:
        self.spec, self.tf, self.symbol = spec, parse_timeframe(timeframe), symbol
        self.base = Block(spec, with_calendar=True)
        self.higher: list[Higher] = []
        self.correlated: dict[str, Correlated] = {}
        self.last_us: int | None = None  # the newest base candle's open time, µs
        self.last_bar: Bar | None = None
        self.bars = 0  # base candles taken
        self._row: dict[str, float] | None = None
        self._seen: dict[str, tuple[int, Bar]] = {}  # per stored series: its last candle taken
        self._started = False

    def start(
        self,
        higher: Mapping[str, pl.DataFrame | None],
        correlated: Mapping[str, pl.DataFrame | None],
    ) -> None:
        """Which higher timeframes are stored (else resampled) and which correlated symbols have
        candles: fixed at the start, as ``compute_features`` decides them per build."""
        tf = self.tf
        for name in self.spec.higher_timeframes:
            htf = parse_timeframe(name)
            if htf.duration <= tf.duration or htf.seconds % tf.seconds:
                continue  # skipped by compute_features too
            source = higher.get(name)
            self.higher.append(Higher(self.spec, htf, source is None or source.is_empty()))
        for other in correlated_symbols(self.symbol, self.spec.correlated):
            data = correlated.get(other)
            if data is not None and not data.is_empty():
                self.correlated[other] = Correlated(other, self.spec.correlated)
        self._started, self._started_layout = True, self._layout(higher, correlated)

    def _layout(
        self,
        higher: Mapping[str, pl.DataFrame | None],
        correlated: Mapping[str, pl.DataFrame | None],
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Which higher timeframes are stored and which correlated symbols have candles."""
        frames = {**higher, **correlated}
        names = {n for n, f in frames.items() if f is not None and not f.is_empty()}
        return (
            tuple(n for n in self.spec.higher_timeframes if n in names),
            tuple(s for s in correlated_symbols(self.symbol, self.spec.correlated) if s in names),
        )

    def catch_up(
        self,
        candles: pl.DataFrame,
        higher: Mapping[str, pl.DataFrame | None],
        correlated: Mapping[str, pl.DataFrame | None],
    ) -> int:
        """Feed the base candles newer than the last one seen, with the other series' candles
        that close by each one's close. Returns how many base candles were new. Raises
        :class:`OutOfStep` when the candles no longer continue what was seen."""
        if not self._started:
            self.start(higher, correlated)
        elif self._layout(higher, correlated) != self._started_layout:
            raise OutOfStep(
                f"{self.symbol}: stored higher timeframes or correlated symbols changed"
            )
        starts, bars = _unseen(candles, self.last_us, self.last_bar, self.symbol)
        width = self.tf.seconds * 1_000_000
        if starts.size:
            sources = self._sources(higher, correlated)
            for start_us, bar in zip(starts.tolist(), bars.tolist(), strict=True):
                self._push(start_us, tuple(bar), start_us + width, sources)
        return int(starts.size)

    def _sources(
        self,
        higher: Mapping[str, pl.DataFrame | None],
        correlated: Mapping[str, pl.DataFrame | None],
    ) -> list[_Source]:
        """The stored higher-timeframe and correlated candles not seen yet, with what takes
        them; the last one seen must still be there, unchanged."""
        feeds: list[tuple[str, Callable[[Bar], None], pl.DataFrame | None, Timeframe]] = [
            (h.prefix, h.push_closed, higher.get(h.tf.name), h.tf)
            for h in self.higher
            if not h.resampled
        ]
        feeds += [
            (c.prefix, lambda bar, c=c: c.push(bar[3]), correlated.get(name), self.tf)
            for name, c in self.correlated.items()
        ]
        out = []
        for key, take, frame, tf in feeds:
            if frame is None or frame.is_empty():
                continue
            seen = self._seen.get(key)
            starts, bars = _unseen(frame, *(seen or (None, None)), key[:-1])
            closes = starts + tf.seconds * 1_000_000
            out.append(_Source(key, take, starts, closes, bars))
        return out

    def _push(
        self,
        start_us: int,
        bar: Bar,
        close_us: int,
        sources: Iterable[_Source],
    ) -> None:
        for source in sources:  # what closed by this candle's close becomes visible
            while source.next < source.close_us.size and source.close_us[source.next] <= close_us:
                other = tuple(source.bars[source.next].tolist())
                source.take(other)
                self._seen[source.key] = (int(source.start_us[source.next]), other)
                source.next += 1
        for h in self.higher:
            if h.resampled:
                h.push_base(start_us, bar, close_us)
        self.base.push(bar, start_us // 1_000_000)
        self.last_us, self.last_bar, self._row = start_us, bar, None
        self.bars += 1

    @property
    def row(self) -> dict[str, float]:
        """The features at the newest base candle, by name, in ``compute_features``' order
        (worked out when asked: a replayed function runs once per new candle at most)."""
        if self._row is None:
            if self.last_bar is None:
                raise OutOfStep(f"{self.symbol}: no candle taken yet")
            row = self.base.row()
            for h in self.higher:
                h.row(row)
            for c in self.correlated.values():
                c.row(row)
            self._row = row
        return self._row

    @property
    def replayed(self) -> int:
        """Bars held by its longest replayed function (0: every function streams exactly)."""
        blocks = [self.base, *(h.block for h in self.higher)]
        vols = [c.vol.bars for c in self.correlated.values() if isinstance(c.vol, Replay)]
        return max([*(b.replayed for b in blocks), *vols, 0])

    def values(self, columns: list[str]) -> np.ndarray:
        """The newest row, whose columns must be ``columns`` in order (else
        :class:`ColumnsDiffer`, naming the first ones that differ: ``compute_features`` would
        build other columns too)."""
        row = self.row
        if list(row) != columns:
            missing = [c for c in columns if c not in row][:5]
            extra = [c for c in row if c not in set(columns)][:5]
            raise ColumnsDiffer(f"missing {missing}, not in the model {extra}")
        return np.array([list(row.values())], dtype=np.float64)


class FeatureStreams:
    """One :class:`FeatureStream` per symbol × timeframe × spec, for a process that scores the
    same symbols again and again. Thread-safe: one lock per stream."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, str], FeatureStream] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._started_with: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()
        self.restarts = 0  # streams started again (a revised candle, a new stored series)
        self.renewals = 0  # streams started again on a fresh tail (their replays had grown)

    def last_row(
        self,
        candles: pl.DataFrame,
        higher: Mapping[str, pl.DataFrame | None],
        correlated: Mapping[str, pl.DataFrame | None],
        spec: FeatureSpec,
        timeframe: Timeframe,
        symbol: str,
        columns: list[str],
        spec_hash: str | None = None,
    ) -> np.ndarray:
        """The features of the newest candle of ``candles`` in ``columns``' order, one row. A
        new stream starts on ``candles`` — the tail the live path builds from; it starts again
        on a fresh tail once it holds twice the bars it started with and a function of the spec
        is replayed (its inputs grow). ``spec_hash``: the spec's hash when the caller knows it
        (hashing a spec costs ~0.2 ms)."""
        key = (symbol, timeframe.name, spec_hash or spec.hash)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            stream = self._streams.get(key)
            if (
                stream is not None
                and stream.replayed
                and stream.bars >= 2 * self._started_with[key]
            ):
                self.renewals += 1
                stream = None
            try:
                if stream is None:
                    raise OutOfStep("no stream yet")
                stream.catch_up(candles, higher, correlated)
            except OutOfStep:
                self.restarts += stream is not None
                stream = FeatureStream(spec, timeframe, symbol)
                self._streams[key] = stream
                self._started_with[key] = stream.catch_up(candles, higher, correlated)
            return stream.values(columns)

    def _grown(self, stream: FeatureStream, key: tuple[str, str, str]) -> bool:
        """A stream whose replayed functions hold twice the bars it started with."""
        return bool(stream.replayed) and stream.bars >= 2 * self._started_with[key]
