"""One-bar-at-a-time versions of TA-Lib functions, bit-for-bit equal to the vectorised call.

Each stream keeps the state TA-Lib's C loop carries from bar to bar (running sums, Wilder
averages, circular buffers, extreme indices) and repeats its floating-point operations in the
same order, so a signal service can update its features per candle without re-running TA-Lib.
Inputs must be finite: NaN inputs are never passed by the project and are not handled.
A function or parameter set reproduced only approximately gets no stream (``make_stream``
returns None) and the caller falls back to the vectorised path.

The arithmetic is that of the bundled TA-Lib 0.8 library as read from its machine code, which
differs from the public C source (fused multiply-adds, scaled zero tests, a re-centring TA_VAR,
resets after runs of bars without movement). Its functions with fused multiply-adds (EMA, MACD,
ATR, NATR, BBANDS) are picked at load time for CPUs with FMA; the streams reproduce those.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

NAN = math.nan
# TA-Lib C 0.8's TA_IS_ZERO / TA_IS_ZERO_OR_NEG band (ta_utility.h: TA_EPSILON).
EPSILON = 1e-14
MAX_PERIOD = 100_000


def _load_fma() -> Callable[[float, float, float], float]:
    """A correctly rounded fused multiply-add: TA-Lib 0.8 calls C's ``fma`` in its EMA steps."""
    builtin = getattr(math, "fma", None)  # Python >= 3.13
    if builtin is not None:
        return builtin  # type: ignore[no-any-return]
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    fma = libm.fma
    fma.restype = ctypes.c_double
    fma.argtypes = (ctypes.c_double, ctypes.c_double, ctypes.c_double)
    return fma  # type: ignore[no-any-return]


_fma = _load_fma()


class Stream(Protocol):
    """A TA-Lib function fed one bar at a time."""

    outputs: tuple[str, ...]

    def push(self, *values: float) -> tuple[float, ...]:
        """The outputs at the new bar (NaN during TA-Lib's warm-up)."""
        ...


def _is_zero(value: float) -> bool:
    return -EPSILON < value < EPSILON


def _true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's true range: high-low first, then the two previous-close gaps, in that order."""
    greatest = high - low
    gap = abs(prev_close - high)
    if gap > greatest:
        greatest = gap
    gap = abs(prev_close - low)
    if gap > greatest:
        greatest = gap
    return greatest


class _SMA:
    """TA_INT_SMA: a running total that adds the new value and then drops the trailing one."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.window: deque[float] = deque()
        self.total = 0.0

    def step(self, x: float) -> float:
        self.total += x
        self.window.append(x)
        if len(self.window) < self.period:
            return NAN
        value = self.total / self.period
        self.total -= self.window.popleft()
        return value

    def push(self, x: float) -> tuple[float, ...]:
        return (self.step(x),)


class _EMA:
    """TA_EMA in default compatibility: seeded with the mean of its first ``period`` values."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.k = 2.0 / float(period + 1)
        self.count = 0
        self.prev = 0.0  # the seed's running sum until ``period`` values were seen

    def step(self, x: float) -> float:
        self.count += 1
        if self.count < self.period:
            self.prev += x
            return NAN
        if self.count == self.period:
            self.prev = (self.prev + x) / self.period
        else:
            self.prev = _fma(x - self.prev, self.k, self.prev)
        return self.prev

    def push(self, x: float) -> tuple[float, ...]:
        return (self.step(x),)


class _Identity:
    """TA_MA and TA_EMA with a period of 1 copy their input (an EMA step would not)."""

    outputs = ("real",)

    def step(self, x: float) -> float:
        return x

    def push(self, x: float) -> tuple[float, ...]:
        return (x,)


def _moving_average(period: int, matype: int) -> _SMA | _EMA | _Identity:
    """The TA_MA a composite function (STOCH, BBANDS) smooths with."""
    if period == 1:
        return _Identity()
    return _SMA(period) if matype == 0 else _EMA(period)


class _RSI:
    """Wilder's RSI as TA-Lib 0.8 computes it: divisions by the period are products with its
    reciprocal, and the ratio is taken whenever gains plus losses are positive."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.inverse = 1.0 / float(period)
        self.count = 0
        self.prev_value = 0.0
        self.gain = 0.0
        self.loss = 0.0

    def push(self, x: float) -> tuple[float, ...]:
        count = self.count
        self.count += 1
        if count == 0:
            self.prev_value = x
            return (NAN,)
        change = x - self.prev_value
        self.prev_value = x
        gain_part = change if change > 0.0 else 0.0
        loss_part = gain_part - change
        if count <= self.period:
            self.gain += gain_part
            self.loss += loss_part
            if count < self.period:
                return (NAN,)
            self.gain *= self.inverse
            self.loss *= self.inverse
        else:
            self.gain = (self.gain * (self.period - 1) + gain_part) * self.inverse
            self.loss = (loss_part + self.loss * (self.period - 1)) * self.inverse
        total = self.loss + self.gain
        return ((self.gain / total) * 100.0 if total > 0.0 else 0.0,)


class _TRANGE:
    outputs = ("real",)

    def __init__(self) -> None:
        self.prev_close = NAN

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        prev_close = self.prev_close
        self.prev_close = close
        if prev_close != prev_close:
            return (NAN,)
        return (_true_range(high, low, prev_close),)


class _ATR:
    """Wilder's ATR seeded with the mean true range; ``normalized`` gives NATR."""

    outputs = ("real",)

    def __init__(self, period: int, normalized: bool) -> None:
        self.period = period
        self.normalized = normalized
        self.alpha = float(period - 1) / float(period)
        self.beta = 1.0 - self.alpha
        self.count = 0
        self.prev_close = 0.0
        self.atr = 0.0  # the seed's running sum until ``period`` true ranges were seen

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        count = self.count
        self.count += 1
        prev_close = self.prev_close
        self.prev_close = close
        if count == 0:
            return (NAN,)
        true_range = _true_range(high, low, prev_close)
        if count < self.period:
            self.atr += true_range
            return (NAN,)
        if count == self.period:
            self.atr = (self.atr + true_range) / self.period
        else:
            # TA-Lib 0.8's fused Wilder step: alpha * atr + beta * tr, rounded once.
            self.atr = _fma(self.alpha, self.atr, true_range * self.beta)
        if not self.normalized:
            return (self.atr,)
        return (0.0 if _is_zero(close) else (self.atr / close) * 100.0,)


class _MACD:
    """TA_MACD's lockstep pass: both EMAs seeded on the same bar, then the signal EMA."""

    outputs = ("macd", "macdsignal", "macdhist")

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        if slow < fast:
            fast, slow = slow, fast
        self.fast, self.slow, self.signal = fast, slow, signal
        self.fast_k = 2.0 / float(fast + 1)
        self.slow_k = 2.0 / float(slow + 1)
        self.signal_k = 2.0 / float(signal + 1)
        self.count = 0
        self.prev_fast = 0.0  # seed sums until bar slow-1
        self.prev_slow = 0.0
        self.prev_signal = 0.0

    def push(self, x: float) -> tuple[float, ...]:
        count = self.count
        self.count += 1
        if count < self.slow:
            self.prev_slow += x
            if count >= self.slow - self.fast:
                self.prev_fast += x
            if count < self.slow - 1:
                return (NAN, NAN, NAN)
            self.prev_slow = self.prev_slow / self.slow
            self.prev_fast = self.prev_fast / self.fast
        else:
            self.prev_fast = _fma(x - self.prev_fast, self.fast_k, self.prev_fast)
            self.prev_slow = _fma(x - self.prev_slow, self.slow_k, self.prev_slow)
        macd = self.prev_fast - self.prev_slow
        signal_bar = count - (self.slow - 1)  # 0 on the first MACD-line value
        if signal_bar < self.signal:
            self.prev_signal += macd
            if signal_bar < self.signal - 1:
                return (NAN, NAN, NAN)
            self.prev_signal = self.prev_signal / self.signal
        else:
            self.prev_signal = _fma(macd - self.prev_signal, self.signal_k, self.prev_signal)
        return (macd, self.prev_signal, macd - self.prev_signal)


class _STOCH:
    """Fast %K from the window's extremes, smoothed twice by TA_MA."""

    outputs = ("slowk", "slowd")

    def __init__(self, fastk: int, slowk: int, slowk_ma: int, slowd: int, slowd_ma: int) -> None:
        self.highs: deque[float] = deque(maxlen=fastk)
        self.lows: deque[float] = deque(maxlen=fastk)
        self.slowk = _moving_average(slowk, slowk_ma)
        self.slowd = _moving_average(slowd, slowd_ma)

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        self.highs.append(high)
        self.lows.append(low)
        if len(self.highs) < self.highs.maxlen:  # type: ignore[operator]
            return (NAN, NAN)
        # Ties in the extreme search move only its index, never the extreme's value.
        lowest = min(self.lows)
        highest = max(self.highs)
        spread = highest - lowest
        # TA-Lib 0.8: a range within 1e-14 of the extremes' magnitude is flat.
        if (abs(highest) + abs(lowest)) * EPSILON < abs(spread):
            fast_k = ((close - lowest) / spread) * 100.0
        else:
            fast_k = 0.0
        slow_k = self.slowk.step(fast_k)
        if slow_k != slow_k:
            return (NAN, NAN)
        slow_d = self.slowd.step(slow_k)
        if slow_d != slow_d:
            return (NAN, NAN)
        return (slow_k, slow_d)


class _WILLR:
    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.highs: deque[float] = deque(maxlen=period)
        self.lows: deque[float] = deque(maxlen=period)

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        self.highs.append(high)
        self.lows.append(low)
        if len(self.highs) < self.highs.maxlen:  # type: ignore[operator]
            return (NAN,)
        highest = max(self.highs)
        lowest = min(self.lows)
        spread = highest - lowest
        # TA-Lib 0.8: a range within 1e-14 of the extremes' magnitude is flat, and the
        # result is clamped to [-100, 0].
        if abs(spread) <= (abs(highest) + abs(lowest)) * EPSILON:
            return (0.0,)
        value = ((highest - close) / spread) * -100.0
        return (0.0 if value > 0.0 else max(-100.0, value),)


class _AROONOSC:
    """Aroon oscillator: TA-Lib's search keeps the most recent index of a tied extreme."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.factor = 100.0 / float(period)
        self.count = 0
        # Monotonic queues of (index, value): the front is the window's latest extreme.
        self.highs: deque[tuple[int, float]] = deque()
        self.lows: deque[tuple[int, float]] = deque()

    def push(self, high: float, low: float) -> tuple[float, ...]:
        today = self.count
        self.count += 1
        highs, lows = self.highs, self.lows
        while highs and highs[-1][1] <= high:
            highs.pop()
        highs.append((today, high))
        while lows and lows[-1][1] >= low:
            lows.pop()
        lows.append((today, low))
        trailing = today - self.period
        if trailing < 0:
            return (NAN,)
        if highs[0][0] < trailing:
            highs.popleft()
        if lows[0][0] < trailing:
            lows.popleft()
        return (self.factor * (highs[0][0] - lows[0][0]),)


class _CCI:
    """TA_CCI re-sums its circular buffer in slot order on every bar, so the slots are kept."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.buffer = [0.0] * period
        self.count = 0

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        last = (high + low + close) / 3
        self.buffer[self.count % self.period] = last
        self.count += 1
        if self.count < self.period:
            return (NAN,)
        average = 0.0
        for value in self.buffer:
            average += value
        average /= self.period
        deviation = 0.0
        for value in self.buffer:
            deviation += abs(value - average)
        distance = last - average
        # TA-Lib 0.8 treats both terms as zero within 1e-14 of the average's magnitude.
        tolerance = abs(average) * EPSILON
        if tolerance >= abs(distance):
            return (0.0,)
        mean_deviation = deviation / self.period
        if tolerance >= abs(mean_deviation):
            return (0.0,)
        denominator = mean_deviation * 0.015
        return (distance / denominator if denominator != 0.0 else 0.0,)


class _OBV:
    outputs = ("real",)

    def __init__(self) -> None:
        self.obv = NAN
        self.prev_close = 0.0

    def push(self, close: float, volume: float) -> tuple[float, ...]:
        if self.obv != self.obv:
            self.obv = volume
        elif close > self.prev_close:
            self.obv += volume
        elif close < self.prev_close:
            self.obv -= volume
        self.prev_close = close
        return (self.obv,)


class _Lagged:
    """MOM and ROC: the new value against the one ``period`` bars back."""

    outputs = ("real",)

    def __init__(self, period: int, rate: bool) -> None:
        self.window: deque[float] = deque(maxlen=period + 1)
        self.rate = rate

    def push(self, x: float) -> tuple[float, ...]:
        window = self.window
        window.append(x)
        if len(window) < window.maxlen:  # type: ignore[operator]
            return (NAN,)
        old = window[0]
        if not self.rate:
            return (x - old,)
        return (((x / old) - 1.0) * 100.0 if old != 0.0 else 0.0,)


class _ULTOSC:
    """Three running (close - true low, true range) totals over the sorted periods. TA-Lib 0.8
    counts the bars in a row with neither buying pressure nor range: once they span a period,
    that period's totals are zero (not rounding residue); a total is used when positive."""

    outputs = ("real",)

    def __init__(self, period1: int, period2: int, period3: int) -> None:
        # TA-Lib weighs the shortest period 4, the middle 2, the longest 1, whatever the order.
        self.periods = tuple(sorted((period1, period2, period3)))
        self.lookback = self.periods[2]
        self.terms: deque[tuple[float, float]] = deque(maxlen=self.lookback)
        self.a = [0.0, 0.0, 0.0]
        self.b = [0.0, 0.0, 0.0]
        self.count = 0
        self.prev_close = 0.0
        self.idle = 0  # bars in a row with zero buying pressure and zero true range

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        today = self.count
        self.count += 1
        prev_close = self.prev_close
        self.prev_close = close
        if today == 0:
            return (NAN,)
        buying = close - min(low, prev_close)
        true_range = _true_range(high, low, prev_close)
        self.terms.append((buying, true_range))
        self.idle = self.idle + 1 if buying == 0.0 and true_range == 0.0 else 0
        a, b = self.a, self.b
        periods = self.periods
        for j, period in enumerate(periods):
            if today > self.lookback - period:
                a[j] += buying
                b[j] += true_range
        if today < self.lookback:
            return (NAN,)
        idle = self.idle
        if idle >= periods[0]:
            for j, period in enumerate(periods):
                if idle >= period:
                    a[j] = b[j] = 0.0
            self.idle = min(idle, periods[2])
        output = 0.0
        if b[0] > 0.0:
            output += (a[0] / b[0]) * 4.0
        if b[1] > 0.0:
            output += 2.0 * (a[1] / b[1])
        if b[2] > 0.0:
            output += a[2] / b[2]
        for j, period in enumerate(periods):
            old_buying, old_range = self.terms[-period]
            a[j] -= old_buying
            b[j] -= old_range
        return (100.0 * (output / 7.0),)


class _VAR:
    """TA_VAR as TA-Lib 0.8 computes it: running sums of the values minus an anchor (the first
    value, later the window mean). The sums are rebuilt around the window mean when the
    variance is lost in cancellation (under 1e-6 of the mean square), when the dropped square
    dwarfs the remaining sum (1e6), or after ``32 * period`` bars without a rebuild; a rebuilt
    variance under 1e-12 of its mean square is zero. ``step`` gives NaN during the warm-up."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.inverse = 1.0 / float(period)
        self.window: deque[float] = deque()
        self.anchor = NAN  # set by the first value (inputs are finite)
        self.total = 0.0  # sum of (value - anchor) over the window
        self.squares = 0.0  # sum of (value - anchor) ** 2
        self.countdown = 32 * period

    def step(self, x: float) -> float:
        window = self.window
        window.append(x)
        anchor = self.anchor
        if anchor != anchor:
            anchor = self.anchor = x
        d = x - anchor
        total = self.total + d
        squares = self.squares + d * d
        if len(window) < self.period:
            self.total = total
            self.squares = squares
            return NAN
        inverse = self.inverse
        mean = inverse * total
        var = inverse * squares - mean * mean
        trailing = window[0] - anchor
        dropped = trailing * trailing
        squares -= dropped
        if inverse * squares * 1e-6 > var or dropped > squares * 1e6:
            var = self._recentre()
        else:
            self.countdown -= 1
            if self.countdown == 0:
                var = self._recentre()
            else:
                self.total = total - trailing
                self.squares = squares
        window.popleft()
        return var

    def _recentre(self) -> float:
        """The window's variance from sums around its mean; the sums then drop its oldest value."""
        window = self.window
        inverse = self.inverse
        total = 0.0
        for value in window:
            total += value
        anchor = total * inverse
        total = 0.0
        squares = 0.0
        for value in window:
            d = value - anchor
            total += d
            squares += d * d
        mean = inverse * total
        mean_square = inverse * squares
        var = mean_square - mean * mean
        if var < mean_square * 1e-12:
            var = 0.0
        trailing = window[0] - anchor
        self.anchor = anchor
        self.total = total - trailing
        self.squares = squares - trailing * trailing
        self.countdown = 32 * self.period
        return var


def _sqrt(value: float) -> float:
    """C's sqrt: NaN below zero."""
    return math.sqrt(value) if value >= 0.0 else NAN


class _STDDEV:
    """TA_STDDEV: the square root of TA_VAR, times ``nbdev``."""

    outputs = ("real",)

    def __init__(self, period: int, nbdev: float) -> None:
        self.var = _VAR(period)
        self.nbdev = nbdev

    def push(self, x: float) -> tuple[float, ...]:
        var = self.var.step(x)
        if var != var:
            return (NAN,)
        return (_sqrt(var) * self.nbdev,)


class _BBANDS:
    """TA_BBANDS with an SMA (its fused pass: the SMA's running sum beside TA_VAR's sums, a
    zero variance giving a zero deviation) or an EMA (TA_MA then TA_STDDEV). With unequal
    widths the upper band is a fused ``nbdevup * stddev + middle``."""

    outputs = ("upperband", "middleband", "lowerband")

    def __init__(self, period: int, nbdevup: float, nbdevdn: float, matype: int) -> None:
        self.period = period
        self.var = _VAR(period)
        self.ema = _EMA(period) if matype == 1 else None
        self.window_sum = 0.0
        self.trailing: deque[float] = deque()
        self.nbdevup = nbdevup
        self.nbdevdn = nbdevdn

    def push(self, x: float) -> tuple[float, ...]:
        var = self.var.step(x)
        if self.ema is not None:
            middle = self.ema.step(x)
            if middle != middle:
                return (NAN, NAN, NAN)
            deviation = _sqrt(var)
        else:
            trailing = self.trailing
            trailing.append(x)
            self.window_sum += x
            if len(trailing) < self.period:
                return (NAN, NAN, NAN)
            middle = self.window_sum / self.period
            self.window_sum -= trailing.popleft()
            deviation = 0.0 if var == 0.0 else _sqrt(var)
        if self.nbdevup == self.nbdevdn:
            width = self.nbdevup * deviation
            return (middle + width, middle, middle - width)
        upper = _fma(self.nbdevup, deviation, middle)
        return (upper, middle, middle - self.nbdevdn * deviation)


def _dx(plus_dm: float, minus_dm: float, true_range: float) -> float:
    """TA_ADX's DX, or NaN where it takes none (no range, or DIs summing to about zero)."""
    if not true_range > 0.0:
        return NAN
    minus_di = (minus_dm / true_range) * 100.0
    plus_di = (plus_dm / true_range) * 100.0
    di_sum = minus_di + plus_di
    if -EPSILON < di_sum < EPSILON:
        return NAN
    return (abs(minus_di - plus_di) / di_sum) * 100.0


class _ADX:
    """Wilder's ADX as TA-Lib 0.8 computes it: DM and TR sums seeded over ``period - 1`` bars,
    the first ADX the mean of ``period`` DX values; a DX is taken only when the smoothed TR is
    positive and the DI sum is outside (-1e-14, 1e-14)."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.float_period = float(period)
        self.weight = float(period - 1)
        self.count = 0
        self.prev_high = 0.0
        self.prev_low = 0.0
        self.prev_close = 0.0
        self.plus_dm = 0.0
        self.minus_dm = 0.0
        self.true_range = 0.0
        self.adx = 0.0  # the sum of the first DX values until the first ADX

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        count = self.count
        self.count += 1
        prev_close = self.prev_close
        diff_plus = high - self.prev_high
        diff_minus = self.prev_low - low
        self.prev_high = high
        self.prev_low = low
        self.prev_close = close
        if count == 0:
            return (NAN,)
        period = self.float_period
        true_range = _true_range(high, low, prev_close)
        if count < self.period:
            if diff_minus > 0.0 and diff_minus > diff_plus:
                self.minus_dm += diff_minus
            elif diff_plus > 0.0 and diff_plus > diff_minus:
                self.plus_dm += diff_plus
            self.true_range += true_range
            return (NAN,)
        minus_dm = self.minus_dm - self.minus_dm / period
        plus_dm = self.plus_dm - self.plus_dm / period
        if diff_minus > 0.0 and diff_minus > diff_plus:
            minus_dm += diff_minus
        elif diff_plus > 0.0 and diff_plus > diff_minus:
            plus_dm += diff_plus
        self.minus_dm = minus_dm
        self.plus_dm = plus_dm
        smoothed = self.true_range - self.true_range / period + true_range
        self.true_range = smoothed
        dx = _dx(plus_dm, minus_dm, smoothed)
        last_seed = 2 * self.period - 1
        if count <= last_seed:
            if dx == dx:
                self.adx += dx
            if count < last_seed:
                return (NAN,)
            self.adx /= period
        elif dx == dx:
            self.adx = (self.adx * self.weight + dx) / period
        return (self.adx,)


class _MFI:
    """TA-Lib 0.8's MFI: a typical-price change within 1e-14 of the prices' magnitude is no
    flow, ``period`` bars in a row without flow zero the sums (and the output), and the
    positive flow is clamped to [0, total] before the ratio."""

    outputs = ("real",)

    def __init__(self, period: int) -> None:
        self.period = period
        self.positive = [0.0] * period
        self.negative = [0.0] * period
        self.slot = 0
        self.positive_sum = 0.0
        self.negative_sum = 0.0
        self.idle = 0  # consecutive bars without money flow
        self.count = 0
        self.prev_typical = 0.0

    def push(self, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        typical = (high + low + close) / 3.0
        count = self.count
        self.count += 1
        prev = self.prev_typical
        self.prev_typical = typical
        if count == 0:
            return (NAN,)
        slot = self.slot
        period = self.period
        if count > period:
            self.positive_sum -= self.positive[slot]
            self.negative_sum -= self.negative[slot]
        change = typical - prev
        if (abs(typical) + abs(prev)) * EPSILON >= abs(change):
            flow_in = flow_out = 0.0
            idle = True
        else:
            flow = volume * typical
            if change < 0.0:
                flow_in, flow_out = 0.0, flow
            else:
                flow_in, flow_out = flow, 0.0
            idle = flow == 0.0
        self.positive_sum += flow_in
        self.negative_sum += flow_out
        self.positive[slot] = flow_in
        self.negative[slot] = flow_out
        self.slot = 0 if slot + 1 >= period else slot + 1
        reset = False
        if idle:
            self.idle += 1
            if self.idle >= period:
                self.idle = period
                self.positive_sum = self.negative_sum = 0.0
                reset = True
        else:
            self.idle = 0
        if count < period:
            return (NAN,)
        positive = self.positive_sum
        total = positive + self.negative_sum
        if count > period and reset:
            return (0.0,)
        clamped = 0.0 if positive < 0.0 else (total if total < positive else positive)
        if total <= 0.0:
            # The first value is 0 here; later ones keep the clamped flow.
            return (0.0 if count == period else clamped,)
        return ((clamped / total) * 100.0,)


def _period(params: Mapping[str, Any], name: str, minimum: int) -> int | None:
    """An integral period within TA-Lib's accepted range, or None."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not float(value).is_integer() or not minimum <= value <= MAX_PERIOD:
        return None
    return int(value)


def _real(params: Mapping[str, Any], name: str) -> float | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _matype(params: Mapping[str, Any], name: str) -> int | None:
    """SMA (0) and EMA (1) are reproduced; every other moving average is not."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
        return None
    return int(value)


def _single_period(cls: Callable[[int], Stream], minimum: int) -> Callable[..., Stream | None]:
    def build(params: Mapping[str, Any]) -> Stream | None:
        period = _period(params, "timeperiod", minimum)
        return None if period is None else cls(period)

    return build


def _build_macd(params: Mapping[str, Any]) -> Stream | None:
    fast = _period(params, "fastperiod", 2)
    slow = _period(params, "slowperiod", 2)
    signal = _period(params, "signalperiod", 1)
    if fast is None or slow is None or signal is None:
        return None
    return _MACD(fast, slow, signal)


def _build_stoch(params: Mapping[str, Any]) -> Stream | None:
    periods = [
        _period(params, name, 1) for name in ("fastk_period", "slowk_period", "slowd_period")
    ]
    matypes = [_matype(params, name) for name in ("slowk_matype", "slowd_matype")]
    if None in periods or None in matypes:
        return None
    fastk, slowk, slowd = periods
    return _STOCH(fastk, slowk, matypes[0], slowd, matypes[1])  # type: ignore[arg-type]


def _build_ultosc(params: Mapping[str, Any]) -> Stream | None:
    periods = [_period(params, f"timeperiod{i}", 1) for i in (1, 2, 3)]
    if None in periods:
        return None
    return _ULTOSC(*periods)  # type: ignore[arg-type]


def _deviations(params: Mapping[str, Any], names: tuple[str, ...]) -> list[float] | None:
    """Band widths within TA-Lib's accepted range (+-3e37; its default marker is not taken)."""
    values = [_real(params, name) for name in names]
    if any(value is None or abs(value) > 3e37 for value in values):
        return None
    return values  # type: ignore[return-value]


def _build_stddev(params: Mapping[str, Any]) -> Stream | None:
    period = _period(params, "timeperiod", 2)
    widths = _deviations(params, ("nbdev",))
    if period is None or widths is None:
        return None
    return _STDDEV(period, widths[0])


def _build_bbands(params: Mapping[str, Any]) -> Stream | None:
    period = _period(params, "timeperiod", 2)
    widths = _deviations(params, ("nbdevup", "nbdevdn"))
    matype = _matype(params, "matype")
    if period is None or widths is None or matype is None:
        return None
    return _BBANDS(period, widths[0], widths[1], matype)


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Stream | None]] = {
    "RSI": _single_period(_RSI, 2),
    "ATR": _single_period(lambda p: _ATR(p, normalized=False), 1),
    # NATR(1) is TA-Lib's plain true range, not normalised: the period-1 shortcut returns TRANGE.
    "NATR": _single_period(lambda p: _ATR(p, normalized=p > 1), 1),
    "MACD": _build_macd,
    "STOCH": _build_stoch,
    "CCI": _single_period(_CCI, 2),
    "OBV": lambda params: _OBV(),
    "WILLR": _single_period(_WILLR, 2),
    "ROC": _single_period(lambda p: _Lagged(p, rate=True), 1),
    "MOM": _single_period(lambda p: _Lagged(p, rate=False), 1),
    "EMA": _single_period(lambda p: _Identity() if p == 1 else _EMA(p), 1),
    "SMA": _single_period(_SMA, 1),
    "AROONOSC": _single_period(_AROONOSC, 2),
    "ULTOSC": _build_ultosc,
    "TRANGE": lambda params: _TRANGE(),
    "STDDEV": _build_stddev,
    "BBANDS": _build_bbands,
    "ADX": _single_period(_ADX, 2),
    "MFI": _single_period(_MFI, 2),
}


def make_stream(function: str, params: Mapping[str, Any]) -> Stream | None:
    """A fresh stream for TA-Lib function ``function`` with ``params`` (every parameter named,
    as talib's abstract interface lists them), or None when it cannot be reproduced exactly —
    including on this machine: the first stream of each function and parameters is checked
    against TA-Lib on a test series (``agrees_with_talib``), since the library picks its code
    by CPU at load time."""
    builder = _BUILDERS.get(function)
    if builder is None:
        return None
    stream = builder(params)
    if stream is None or not agrees_with_talib(function, tuple(sorted(params.items()))):
        return None
    return stream


@functools.cache
def agrees_with_talib(function: str, params: tuple[tuple[str, Any], ...]) -> bool:
    """Whether a stream of ``function`` gives TA-Lib's values bit for bit on a test series
    here (600 bars: a walk with a flat run and a jump), worked out once per process."""
    import numpy as np
    import talib
    from talib import abstract

    builder = _BUILDERS[function]
    stream = builder(dict(params))
    if stream is None:
        return False
    rng = np.random.default_rng(20261201)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    close[200:260] = close[199]  # a flat run: TA-Lib's zero tests and resets
    close[400:] *= 3.0  # a jump: re-centred sums
    spread = np.abs(rng.normal(0, 0.004, 600)) * close
    spread[200:260] = 0.0
    candles = {
        "open": np.r_[close[0], close[:-1]],
        "high": close + spread,
        "low": close - spread,
        "close": close,
        "volume": np.where((np.arange(600) // 50) % 5 == 0, 0.0, rng.uniform(1, 1e4, 600)),
    }
    candles["high"] = np.maximum(candles["high"], candles["open"])
    candles["low"] = np.minimum(candles["low"], candles["open"])
    info = abstract.Function(function).info["input_names"].values()
    names = [n for group in info for n in ([group] if isinstance(group, str) else group)]
    inputs = [candles["close"] if n not in candles else candles[n] for n in names]
    expected = getattr(talib, function)(*inputs, **dict(params))
    expected = expected if isinstance(expected, tuple) else (expected,)
    pushed = [stream.push(*(float(x[i]) for x in inputs)) for i in range(600)]
    got = np.array(pushed, dtype=np.float64).T
    return all(np.array_equal(g, e, equal_nan=True) for g, e in zip(got, expected, strict=True))


def supported(function: str, params: Mapping[str, Any]) -> bool:
    """Whether ``make_stream`` gives an exact stream for this function and parameters."""
    return make_stream(function, params) is not None
