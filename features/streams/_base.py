"""What every stream shares: TA-Lib's fused multiply-add, its zero test and true range, the
moving averages composite functions smooth with, and the ``Stream`` protocol."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

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


fma = _load_fma()


class Stream(Protocol):
    """A TA-Lib function fed one bar at a time."""

    outputs: tuple[str, ...]

    def push(self, *values: float) -> tuple[float, ...]:
        """The outputs at the new bar (NaN during TA-Lib's warm-up)."""
        ...


def is_zero(value: float) -> bool:
    return -EPSILON < value < EPSILON


def ta_true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's true range: high-low first, then the two previous-close gaps, in that order."""
    greatest = high - low
    gap = abs(prev_close - high)
    if gap > greatest:
        greatest = gap
    gap = abs(prev_close - low)
    if gap > greatest:
        greatest = gap
    return greatest


class SMA:
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


class EMA:
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
            self.prev = fma(x - self.prev, self.k, self.prev)
        return self.prev

    def push(self, x: float) -> tuple[float, ...]:
        return (self.step(x),)


class Identity:
    """TA_MA and TA_EMA with a period of 1 copy their input (an EMA step would not)."""

    outputs = ("real",)

    def step(self, x: float) -> float:
        return x

    def push(self, x: float) -> tuple[float, ...]:
        return (x,)


def moving_average(period: int, matype: int) -> SMA | EMA | Identity:
    """The TA_MA a composite function (STOCH, BBANDS) smooths with."""
    if period == 1:
        return Identity()
    return SMA(period) if matype == 0 else EMA(period)
