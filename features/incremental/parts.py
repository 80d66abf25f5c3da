"""The parts of a feature stream: each TA-Lib function exact (``features.streams``) or replayed,
z-scores, one candle series' indicators and families (``features.build._block_jobs``), a higher
timeframe's block and a correlated symbol's columns, each as of its newest closed candle."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from core.feature_spec import (
    CorrelatedSpec,
    FamiliesSpec,
    FeatureSpec,
    IndicatorSpec,
    talib_functions,
)
from core.timeframes import Timeframe
from features.build import FeatureError
from features.families import REGIME_ADX_TREND, REGIME_VOL_RATIO
from features.indicators import ATR_PERIOD, ZSCORE_WINDOW, auto_scale, raw_function
from features.streams import Stream, make_stream

NAN = math.nan
Bar = tuple[float, float, float, float, float]  # open, high, low, close, volume
COLUMNS = ("open", "high", "low", "close", "volume")
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


class Replay:
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


_Part = _Exact | Replay


def _stream(function: str, params: Mapping[str, Any], inputs: int) -> _Part:
    """The exact stream of a TA-Lib function if ``features.streams`` has one, else a replay."""
    stream = make_stream(function, params)
    return Replay(function, params, inputs) if stream is None else _Exact(stream)


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
    return tuple(COLUMNS.index(n) for n in names)


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


class Block:
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
        return max((p.bars for p in parts if isinstance(p, Replay)), default=0)


class Higher:
    """A higher timeframe's block as known at each base bar: its candles (stored, or aggregated
    from the base candles like ``features.build.resample``) enter as they close."""

    def __init__(self, spec: FeatureSpec, tf: Timeframe, resampled: bool) -> None:
        self.tf, self.resampled = tf, resampled
        self.prefix = f"tf{tf.name}_"
        self.block = Block(spec, with_calendar=False)
        self.bucket: int | None = None  # resampled: the open bucket and its base bars
        self.pending: list[Bar] = []
        self.names = [self.prefix + n for n in Block(spec, False).names()]

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


class Correlated:
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
