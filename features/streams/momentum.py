"""Streams of TA-Lib's momentum, volatility-range and volume functions: RSI, TRANGE, ATR / NATR,
MACD, STOCH, WILLR, AROONOSC, CCI, OBV, MOM / ROC, ULTOSC."""

from __future__ import annotations

from collections import deque

from features.streams._base import (
    EPSILON,
    NAN,
    fma,
    is_zero,
    moving_average,
    ta_true_range,
)


class RSI:
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


class TRANGE:
    outputs = ("real",)

    def __init__(self) -> None:
        self.prev_close = NAN

    def push(self, high: float, low: float, close: float) -> tuple[float, ...]:
        prev_close = self.prev_close
        self.prev_close = close
        if prev_close != prev_close:
            return (NAN,)
        return (ta_true_range(high, low, prev_close),)


class ATR:
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
        true_range = ta_true_range(high, low, prev_close)
        if count < self.period:
            self.atr += true_range
            return (NAN,)
        if count == self.period:
            self.atr = (self.atr + true_range) / self.period
        else:
            # TA-Lib 0.8's fused Wilder step: alpha * atr + beta * tr, rounded once.
            self.atr = fma(self.alpha, self.atr, true_range * self.beta)
        if not self.normalized:
            return (self.atr,)
        return (0.0 if is_zero(close) else (self.atr / close) * 100.0,)


class MACD:
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
            self.prev_fast = fma(x - self.prev_fast, self.fast_k, self.prev_fast)
            self.prev_slow = fma(x - self.prev_slow, self.slow_k, self.prev_slow)
        macd = self.prev_fast - self.prev_slow
        signal_bar = count - (self.slow - 1)  # 0 on the first MACD-line value
        if signal_bar < self.signal:
            self.prev_signal += macd
            if signal_bar < self.signal - 1:
                return (NAN, NAN, NAN)
            self.prev_signal = self.prev_signal / self.signal
        else:
            self.prev_signal = fma(macd - self.prev_signal, self.signal_k, self.prev_signal)
        return (macd, self.prev_signal, macd - self.prev_signal)


class STOCH:
    """Fast %K from the window's extremes, smoothed twice by TA_MA."""

    outputs = ("slowk", "slowd")

    def __init__(self, fastk: int, slowk: int, slowk_ma: int, slowd: int, slowd_ma: int) -> None:
        self.highs: deque[float] = deque(maxlen=fastk)
        self.lows: deque[float] = deque(maxlen=fastk)
        self.slowk = moving_average(slowk, slowk_ma)
        self.slowd = moving_average(slowd, slowd_ma)

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


class WILLR:
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


class AROONOSC:
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


class CCI:
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


class OBV:
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


class Lagged:
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


class ULTOSC:
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
        true_range = ta_true_range(high, low, prev_close)
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
