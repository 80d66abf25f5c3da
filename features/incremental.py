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

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core.feature_spec import (
    CorrelatedSpec,
    FamiliesSpec,
    FeatureSpec,
    IndicatorSpec,
    talib_functions,
)
from core.timeframes import Timeframe, parse_timeframe
from features.build import FeatureError, correlated_symbols, epoch_us
from features.families import REGIME_ADX_TREND, REGIME_VOL_RATIO
from features.indicators import ATR_PERIOD, ZSCORE_WINDOW, auto_scale, raw_function
from features.streams import Stream, make_stream

NAN = math.nan
Bar = tuple[float, float, float, float, float]  # open, high, low, close, volume
_COLUMNS = ("open", "high", "low", "close", "volume")
_HOURS = 2 * np.pi * np.arange(24) / 24  # features.families.calendar's tables, the same values
_DAYS = 2 * np.pi * np.arange(7) / 7
_HOUR_SIN, _HOUR_COS = np.sin(_HOURS).tolist(), np.cos(_HOURS).tolist()
_DOW_SIN, _DOW_COS = np.sin(_DAYS).tolist(), np.cos(_DAYS).tolist()


def _div(num: float, den: float) -> float:
    """``features.indicators.safe_divide`` of one value: 0 over a zero denominator, NaN stays."""
    if den == 0.0:
        return num if math.isnan(num) else 0.0
    return num / den


class _Series:
    """A growing float64 array (amortised appends)."""

    def __init__(self) -> None:
        self.data, self.size = np.empty(1024), 0

    def append(self, value: float) -> None:
        if self.size == self.data.size:
            self.data = np.concatenate([self.data, np.empty(self.data.size)])
        self.data[self.size] = value
        self.size += 1

    def values(self) -> np.ndarray:
        return self.data[: self.size]


class _Exact:
    """A ``features.streams`` stream: TA-Lib's arithmetic one bar at a time. Before the first
    bar where no input is NaN it outputs NaN, as TA-Lib's Python wrapper starts the C function
    at that bar."""

    def __init__(self, stream: Stream) -> None:
        self.stream, self.started = stream, False
        self.now = (NAN,) * len(stream.outputs)

    def push(self, *values: float) -> None:
        if not self.started:
            if any(math.isnan(v) for v in values):
                return
            self.started = True
        self.now = self.stream.push(*values)

    def current(self) -> tuple[float, ...]:
        return self.now


class _Replay:
    """A TA-Lib function without an exact stream: its inputs kept, and the vectorised call made
    over all of them when its newest value is asked for — the very call ``compute_features``
    makes over the same candles, so the same values."""

    def __init__(self, function: str, params: Mapping[str, Any], inputs: int) -> None:
        self.function, self.params = raw_function(function), dict(params)
        self.series = [_Series() for _ in range(inputs)]
        self.now: tuple[float, ...] | None = None

    def push(self, *values: float) -> None:
        for series, value in zip(self.series, values, strict=True):
            series.append(value)
        self.now = None

    def current(self) -> tuple[float, ...]:
        if self.now is None:
            out = self.function(*(s.values() for s in self.series), **self.params)
            outputs = out if isinstance(out, tuple) else (out,)
            self.now = tuple(float(o[-1]) for o in outputs)
        return self.now

    @property
    def bars(self) -> int:
        return self.series[0].size


_Part = _Exact | _Replay


def _stream(function: str, params: Mapping[str, Any], inputs: int) -> _Part:
    """The exact stream of a TA-Lib function if ``features.streams`` has one, else a replay."""
    stream = make_stream(function, params)
    return _Replay(function, params, inputs) if stream is None else _Exact(stream)


def _sma(window: int) -> _Part:
    return _stream("SMA", {"timeperiod": window}, 1)


def _stddev(window: int) -> _Part:
    return _stream("STDDEV", {"timeperiod": window, "nbdev": 1}, 1)


class _ZScore:
    """``features.indicators.rolling_zscore``: SMA and STDDEV of the series."""

    def __init__(self, window: int) -> None:
        self.mean, self.std, self.x = _sma(window), _stddev(window), NAN

    def push(self, x: float) -> None:
        self.x = x
        self.mean.push(x)
        self.std.push(x)

    def current(self) -> float:
        return _div(self.x - self.mean.current()[0], self.std.current()[0])


def _inputs(function: str) -> tuple[int, ...]:
    """Positions in a :data:`Bar` of the candle columns a TA-Lib function takes, in its order."""
    inputs = talib_functions()[function]["input_names"].values()
    names = [n for group in inputs for n in ([group] if isinstance(group, str) else group)]
    return tuple(_COLUMNS.index(n) for n in names)


class _Candles:
    """The TA-Lib functions of one candle series, one instance per function and parameters
    (the regime's ADX(14) is the spec's ADX(14) when it has one: the same call)."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[_Part, tuple[int, ...]]] = {}

    def get(self, function: str, params: Mapping[str, Any]) -> _Part:
        key = f"{function}{sorted(params.items())}"
        if key not in self.parts:
            take = _inputs(function)
            self.parts[key] = (_stream(function, params, len(take)), take)
        return self.parts[key][0]

    def push(self, bar: Bar) -> None:
        for part, take in self.parts.values():
            part.push(*(bar[i] for i in take))


class _Indicator:
    """One spec entry: its TA-Lib function and its scale (``features.indicators.scaled``)."""

    def __init__(self, spec: IndicatorSpec, candles: _Candles) -> None:
        names = talib_functions()[spec.function]["output_names"]
        self.part = candles.get(spec.function, spec.resolved_params)
        self.names = [spec.key] if len(names) == 1 else [f"{spec.key}_{n}" for n in names]
        self.scale = auto_scale(spec.function) if spec.scale == "auto" else spec.scale
        self.zscores = [_ZScore(ZSCORE_WINDOW) for _ in names] if self.scale == "zscore" else []

    def push(self) -> None:
        """After the candle functions took the bar: a z-score needs every raw value."""
        if self.zscores:
            for z, x in zip(self.zscores, self.part.current(), strict=True):
                z.push(x)

    def row(self, bar: Bar, atr: float, out: dict[str, float]) -> None:
        close, scale = bar[3], self.scale
        for k, (name, x) in enumerate(zip(self.names, self.part.current(), strict=True)):
            if scale == "level":
                x = _div(close - x, atr)
            elif scale == "diff":
                x = _div(x, atr)
            elif scale == "close":
                x = _div(x, close)
            elif scale == "zscore":
                x = self.zscores[k].current()
            out[name] = x


class _Families:
    """``features.families.family_columns`` (same names, same order)."""

    def __init__(self, spec: FamiliesSpec, with_calendar: bool, candles: _Candles) -> None:
        self.spec, self.calendar = spec, with_calendar and spec.calendar
        self.lags = list(spec.returns)
        self.log_closes: deque[float] = deque(maxlen=max([1, *self.lags]) + 1)
        self.vols = {w: _stddev(w) for w in spec.volatility if w > 1}
        self.zscores = {w: _ZScore(w) for w in spec.zscore if w > 1}
        self.volume_z = _ZScore(spec.volume_zscore) if spec.volume_zscore else None
        self.regime_vols: dict[int, _Part] = {}
        if spec.regime:
            self.adx = candles.get("ADX", {"timeperiod": 14})
            self.regime_vols = {w: self.vols.get(w) or _stddev(w) for w in (12, 48)}
        self.seconds = 0

    def push(self, bar: Bar, seconds: int) -> None:
        self.log_closes.append(math.log(bar[3]))
        logs = self.log_closes
        ret_1 = logs[-1] - logs[-2] if len(logs) > 1 else NAN
        for part in {*self.vols.values(), *self.regime_vols.values()}:
            part.push(ret_1)
        for z in self.zscores.values():
            z.push(bar[3])
        if self.volume_z is not None:
            self.volume_z.push(bar[4])
        self.seconds = seconds

    def row(self, bar: Bar, atr: float, out: dict[str, float]) -> None:
        o, h, lo, c, _ = bar
        logs, n = self.log_closes, len(self.log_closes)
        for lag in self.lags:
            out[f"ret_{lag}"] = logs[-1] - logs[-1 - lag] if n > lag else NAN
        vols = {w: part.current()[0] for w, part in self.vols.items()}
        for w, value in vols.items():
            out[f"vol_{w}"] = value
        for short, long in itertools.pairwise(vols):
            out[f"vol_{short}_over_{long}"] = _div(vols[short], vols[long])
        for w, z in self.zscores.items():
            out[f"zscore_{w}"] = z.current()
        if self.spec.candle_shape:
            out["shape_body"] = _div(c - o, atr)
            out["shape_upper"] = _div(h - max(o, c), atr)
            out["shape_lower"] = _div(min(o, c) - lo, atr)
            out["shape_range"] = _div(h - lo, atr)
        if self.volume_z is not None:
            out["volume_z"] = self.volume_z.current()
        if self.calendar:
            hour, dow = (self.seconds // 3600) % 24, (self.seconds // 86400 + 3) % 7
            out["hour_sin"], out["hour_cos"] = _HOUR_SIN[hour], _HOUR_COS[hour]
            out["dow_sin"], out["dow_cos"] = _DOW_SIN[dow], _DOW_COS[dow]
        if self.spec.regime:
            self._regime(out)

    def _regime(self, out: dict[str, float]) -> None:
        (adx,) = self.adx.current()
        ratio = _div(self.regime_vols[12].current()[0], self.regime_vols[48].current()[0])
        if math.isnan(adx) or math.isnan(ratio):
            out["regime_trend"] = out["regime_range"] = out["regime_volatile"] = NAN
            return
        volatile = ratio > REGIME_VOL_RATIO
        trend = not volatile and adx > REGIME_ADX_TREND
        out["regime_trend"] = float(trend)
        out["regime_range"] = float(not volatile and not trend)
        out["regime_volatile"] = float(volatile)


class _Block:
    """Indicators then families of one candle series (``features.build._block_jobs``)."""

    def __init__(self, spec: FeatureSpec, with_calendar: bool) -> None:
        self.candles = _Candles()
        self.atr = self.candles.get("ATR", {"timeperiod": ATR_PERIOD})
        self.indicators = [_Indicator(item, self.candles) for item in spec.indicators]
        self.families = _Families(spec.families, with_calendar, self.candles)
        self.bar: Bar | None = None

    def push(self, bar: Bar, seconds: int) -> None:
        self.candles.push(bar)
        for indicator in self.indicators:
            indicator.push()
        self.families.push(bar, seconds)
        self.bar = bar

    def row(self) -> dict[str, float]:
        """The block's features at its newest candle."""
        assert self.bar is not None
        (atr,) = self.atr.current()
        out: dict[str, float] = {}
        for indicator in self.indicators:
            indicator.row(self.bar, atr, out)
        self.families.row(self.bar, atr, out)
        return out

    def names(self) -> list[str]:
        """Its column names (from a row of made-up values)."""
        self.push((1.0, 1.0, 1.0, 1.0, 1.0), 0)
        return list(self.row())

    @property
    def replayed(self) -> int:
        """Bars the replayed functions hold (0: every function has an exact stream)."""
        parts = [p for p, _ in self.candles.parts.values()]
        parts += [*self.families.vols.values(), *self.families.regime_vols.values()]
        parts += [z.std for z in self.families.zscores.values()]
        return max((p.bars for p in parts if isinstance(p, _Replay)), default=0)


class _Higher:
    """A higher timeframe's block as known at each base bar: its candles (stored, or aggregated
    from the base candles like ``features.build.resample``) enter as they close."""

    def __init__(self, spec: FeatureSpec, tf: Timeframe, resampled: bool) -> None:
        self.tf, self.resampled = tf, resampled
        self.prefix = f"tf{tf.name}_"
        self.block = _Block(spec, with_calendar=False)
        self.bucket: int | None = None  # resampled: the open bucket and its base bars
        self.pending: list[Bar] = []
        self.names = [self.prefix + n for n in _Block(spec, False).names()]

    def push_closed(self, bar: Bar) -> None:
        self.block.push(bar, 0)

    def row(self, out: dict[str, float]) -> None:
        """The block at its newest closed candle (NaN before the first)."""
        if self.block.bar is None:
            out.update(dict.fromkeys(self.names, NAN))
            return
        out.update(zip(self.names, self.block.row().values(), strict=True))

    def push_base(self, start_us: int, bar: Bar, close_us: int) -> None:
        """A base candle (resampled mode): its bucket closes when a candle of the next one
        arrives, or with the candle that ends it."""
        width = self.tf.seconds * 1_000_000
        bucket = start_us // width
        if self.bucket is not None and bucket != self.bucket:
            self._close_bucket()
        self.bucket = bucket
        self.pending.append(bar)
        if close_us >= (bucket + 1) * width:
            self._close_bucket()

    def _close_bucket(self) -> None:
        if not self.pending:
            return
        bars = np.array(self.pending, dtype=np.float64)
        self.pending, self.bucket = [], None
        # The aggregates ``resample`` computes (its reductions, for the same sums' rounding).
        at = [0]
        self.push_closed(
            (
                float(bars[0, 0]),
                float(np.maximum.reduceat(bars[:, 1], at)[0]),
                float(np.minimum.reduceat(bars[:, 2], at)[0]),
                float(bars[-1, 3]),
                float(np.add.reduceat(bars[:, 4], at)[0]),
            )
        )


class _Correlated:
    """Another symbol's returns and volatility (``features.build._correlated``), as of its close."""

    def __init__(self, other: str, spec: CorrelatedSpec) -> None:
        self.prefix, self.lags = f"x{other}_", list(spec.returns)
        self.window = spec.volatility
        self.log_closes: deque[float] = deque(maxlen=max([1, *self.lags]) + 1)
        self.vol = _stddev(spec.volatility)

    def push(self, close: float) -> None:
        self.log_closes.append(math.log(close))
        logs = self.log_closes
        self.vol.push(logs[-1] - logs[-2] if len(logs) > 1 else NAN)

    def row(self, out: dict[str, float]) -> None:
        logs, n, p = self.log_closes, len(self.log_closes), self.prefix
        row = {f"{p}ret_{lag}": logs[-1] - logs[-1 - lag] if n > lag else NAN for lag in self.lags}
        row[f"{p}vol_{self.window}"] = self.vol.current()[0] if n else NAN
        if any(math.isinf(v) for v in row.values()):
            raise FeatureError(f"correlated {p[1:-1]}: ±inf in its returns")
        out.update(row)


class OutOfStep(Exception):
    """The stored candles no longer continue what a stream has seen (a revised or removed
    candle): start a new stream."""


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
    bars = np.column_stack([frame[c].to_numpy()[first:] for c in _COLUMNS]).astype(np.float64)
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
        self.base = _Block(spec, with_calendar=True)
        self.higher: list[_Higher] = []
        self.correlated: dict[str, _Correlated] = {}
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
            self.higher.append(_Higher(self.spec, htf, source is None or source.is_empty()))
        for other in correlated_symbols(self.symbol, self.spec.correlated):
            data = correlated.get(other)
            if data is not None and not data.is_empty():
                self.correlated[other] = _Correlated(other, self.spec.correlated)
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
        vols = [c.vol.bars for c in self.correlated.values() if isinstance(c.vol, _Replay)]
        return max([*(b.replayed for b in blocks), *vols, 0])

    def values(self, columns: list[str]) -> np.ndarray:
        """The newest row, whose columns must be ``columns`` in order (else KeyError, naming
        the first ones that differ: ``compute_features`` would build other columns too)."""
        row = self.row
        if list(row) != columns:
            missing = [c for c in columns if c not in row][:5]
            extra = [c for c in row if c not in set(columns)][:5]
            raise KeyError(f"missing {missing}, not in the model {extra}")
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
            try:
                if stream is None:
                    raise OutOfStep("no stream yet")
                if stream.replayed and stream.bars >= 2 * self._started_with[key]:
                    self.renewals += 1
                    raise OutOfStep("renewed")
                stream.catch_up(candles, higher, correlated)
            except OutOfStep as exc:
                self.restarts += stream is not None and str(exc) != "renewed"
                stream = FeatureStream(spec, timeframe, symbol)
                self._streams[key] = stream
                self._started_with[key] = stream.catch_up(candles, higher, correlated)
            return stream.values(columns)
