"""Streams of TA-Lib's variance family and its directional-movement and money-flow functions:
VAR (re-centred running sums), STDDEV, BBANDS, ADX, MFI."""

from __future__ import annotations

import math
from collections import deque

from features.streams._base import EMA, EPSILON, NAN, fma, ta_true_range


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


class STDDEV:
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


class BBANDS:
    """TA_BBANDS with an SMA (its fused pass: the SMA's running sum beside TA_VAR's sums, a
    zero variance giving a zero deviation) or an EMA (TA_MA then TA_STDDEV). With unequal
    widths the upper band is a fused ``nbdevup * stddev + middle``."""

    outputs = ("upperband", "middleband", "lowerband")

    def __init__(self, period: int, nbdevup: float, nbdevdn: float, matype: int) -> None:
        self.period = period
        self.var = _VAR(period)
        self.ema = EMA(period) if matype == 1 else None
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
        upper = fma(self.nbdevup, deviation, middle)
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


class ADX:
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
        true_range = ta_true_range(high, low, prev_close)
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


class MFI:
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
