"""A PNG chart of one signal: the last candles (high–low wick, open–close body), the signal marked
at its candle with action, tier and probability, and the stop-loss / take-profit levels when the
signal is an order. Files only: drawn straight onto a Pillow image, never a display (the same chart
as a matplotlib figure cost ~70 ms, most of it laying out its text; this one ~5 ms)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from core.candles import PRICE_COLUMNS
from core.timeframes import as_utc

SIZE = (800, 400)  # px
BOX = (72, 30, 788, 368)  # the price area: left, top, right, bottom (px)
UP, DOWN = (38, 166, 154), (239, 83, 80)
SL_COLOR, TP_COLOR = (198, 40, 40), (46, 125, 50)
MARK, BAND = (21, 101, 192), (221, 232, 245)  # the signal, and its candle's band
GRID, FRAME, INK = (233, 233, 233), (110, 110, 110), (30, 30, 30)
ACTIONS = {1: "BUY", 0: "FLAT", -1: "SELL"}
MAX_TICKS = 7


def _level(value: float | None) -> float | None:
    """A drawable price, or None for a missing one (None or NaN)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _action_name(action: int | str) -> str:
    if isinstance(action, str):
        return action.upper()
    return ACTIONS.get(int(action), str(action))


def _window(candles: pl.DataFrame, signal_ts: datetime, last_n: int) -> tuple[pl.DataFrame, int]:
    """The last ``last_n`` candles by time and the row of the signal's candle among them."""
    if last_n < 1:
        raise ValueError(f"last_n must be ≥ 1, got {last_n}")
    missing = [c for c in ("ts", *PRICE_COLUMNS) if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {missing}; found {candles.columns}")
    if candles.is_empty():
        raise ValueError("no candles to chart: the candle frame is empty")
    frame = candles.sort("ts").tail(last_n)
    times = [as_utc(t) for t in frame["ts"].to_list()]
    when = as_utc(signal_ts)
    if when not in times:
        raise ValueError(
            f"the signal candle {when:%Y-%m-%d %H:%M} UTC is not among the {frame.height} charted"
            f" candles ({times[0]:%Y-%m-%d %H:%M} … {times[-1]:%Y-%m-%d %H:%M} UTC); pass the"
            " candles up to the signal, or a larger last_n"
        )
    return frame, times.index(when)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class _Scale:
    """Prices and candle positions to pixels: candle i centred in its slot, prices from ``lo``
    (bottom of the box) to ``hi`` (top)."""

    lo: float
    hi: float
    n: int

    def x(self, i: float) -> float:
        left, _, right, _ = BOX
        return left + (i + 0.5) * (right - left) / self.n

    def y(self, price: float) -> float:
        _, top, _, bottom = BOX
        return bottom - (price - self.lo) / (self.hi - self.lo) * (bottom - top)


def _scale(frame: pl.DataFrame, levels: list[float]) -> _Scale:
    """Every candle and level in view, with 5 % of the range to spare on each side."""
    values = np.r_[frame["low"].to_numpy(), frame["high"].to_numpy(), levels].astype(np.float64)
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.01, 1e-9)
    return _Scale(lo - pad, hi + pad, frame.height)


def _price_ticks(lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Round prices within [lo, hi], at most ``MAX_TICKS`` of them, and the decimals to show."""
    raw = (hi - lo) / MAX_TICKS
    exponent = math.floor(math.log10(raw))
    mantissa = next(m for m in (1, 2, 2.5, 5, 10) if m * 10.0**exponent >= raw)
    step = mantissa * 10.0**exponent
    ticks = np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step
    decimals = -exponent + (mantissa == 2.5) - (mantissa == 10)
    return ticks, max(0, decimals)


def _draw_axes(draw: ImageDraw.ImageDraw, s: _Scale, frame: pl.DataFrame) -> None:
    # Positions, not times, on the x axis: market closures (weekends) leave no gaps.
    left, top, right, bottom = BOX
    font = _font(11)
    ticks, decimals = _price_ticks(s.lo, s.hi)
    for price in ticks:
        y = s.y(price)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 6, y), f"{price:.{decimals}f}", font=font, fill=INK, anchor="rm")
    times = frame["ts"].to_list()
    for i in range(0, frame.height, max(1, math.ceil(frame.height / MAX_TICKS))):
        x = s.x(i)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        draw.line([(x, bottom), (x, bottom + 4)], fill=FRAME)
        label = f"{as_utc(times[i]):%m-%d %H:%M}"
        draw.text((x, bottom + 6), label, font=font, fill=INK, anchor="mt")
    draw.rectangle(BOX, outline=FRAME)


def _draw_candles(draw: ImageDraw.ImageDraw, s: _Scale, frame: pl.DataFrame) -> None:
    o, h, lo, c = (frame[col].to_numpy().astype(np.float64) for col in PRICE_COLUMNS)
    half = max(1.0, (BOX[2] - BOX[0]) / s.n * 0.3)
    for i in range(frame.height):
        if not np.isfinite([o[i], h[i], lo[i], c[i]]).all():
            continue
        x, color = s.x(i), UP if c[i] >= o[i] else DOWN
        draw.line([(x, s.y(h[i])), (x, s.y(lo[i]))], fill=color)
        y0, y1 = sorted((s.y(o[i]), s.y(c[i])))
        draw.rectangle([(x - half, y0), (x + half, max(y1, y0 + 1))], fill=color)


def _draw_levels(
    draw: ImageDraw.ImageDraw, s: _Scale, stop_loss: float | None, take_profit: float | None
) -> None:
    """Dashed SL / TP lines, each named at its right end."""
    left, _, right, _ = BOX
    for name, value, color in (("SL", stop_loss, SL_COLOR), ("TP", take_profit, TP_COLOR)):
        if value is None:
            continue
        y = s.y(value)
        for x in range(left, right, 10):
            draw.line([(x, y), (min(x + 6, right), y)], fill=color, width=2)
        draw.text((right - 4, y - 2), f"{name} {value:g}", font=_font(11), fill=color, anchor="rb")


def _draw_signal(
    draw: ImageDraw.ImageDraw, s: _Scale, frame: pl.DataFrame, i: int, label: str, side: str
) -> None:
    high, low, close = (float(frame[col][i]) for col in ("high", "low", "close"))
    x = s.x(i)
    if side == "BUY":  # a triangle under the candle pointing up, the label below it
        tip = s.y(low) + 4
        draw.polygon([(x, tip), (x - 7, tip + 12), (x + 7, tip + 12)], fill=MARK)
        anchor_y, below = tip + 16, True
    elif side == "SELL":
        tip = s.y(high) - 4
        draw.polygon([(x, tip), (x - 7, tip - 12), (x + 7, tip - 12)], fill=MARK)
        anchor_y, below = tip - 16, False
    else:
        y = s.y(close)
        draw.ellipse([(x - 6, y - 6), (x + 6, y + 6)], fill=MARK)
        anchor_y, below = y - 10, False
    font = _font(12)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), label, font=font, spacing=2)
    w, h = right - left + 12, bottom - top + 10
    x0 = x - w if i > s.n / 2 else x
    y0 = anchor_y if below else anchor_y - h
    x0, y0 = min(max(x0, 1), SIZE[0] - w - 1), min(max(y0, 1), SIZE[1] - h - 1)
    draw.rounded_rectangle([(x0, y0), (x0 + w, y0 + h)], radius=5, fill="white", outline=MARK)
    draw.multiline_text((x0 + 6 - left, y0 + 5 - top), label, font=font, fill=INK, spacing=2)


def signal_chart(
    candles: pl.DataFrame,
    *,
    symbol: str,
    timeframe: str,
    signal_ts: datetime,
    action: int | str,
    probability: float | None,
    tier: str,
    stop_loss: float | None,
    take_profit: float | None,
    path: Path,
    last_n: int = 120,
) -> Path:
    """Draw the last ``last_n`` candles with the signal at ``signal_ts`` (a candle among them)
    and its SL / TP lines (None or NaN: not drawn) into the PNG ``path``; returns ``path``."""
    frame, i = _window(candles, signal_ts, last_n)
    side = _action_name(action)
    p, sl, tp = _level(probability), _level(stop_loss), _level(take_profit)
    label = f"{side} · {tier}\np = {'n/a' if p is None else f'{p:.3f}'}"
    s = _scale(frame, [v for v in (sl, tp) if v is not None])
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    band = max(3.0, (BOX[2] - BOX[0]) / s.n * 0.5)  # the signal's candle, highlighted
    draw.rectangle([(s.x(i) - band, BOX[1] + 1), (s.x(i) + band, BOX[3] - 1)], fill=BAND)
    _draw_axes(draw, s, frame)
    _draw_candles(draw, s, frame)
    _draw_levels(draw, s, sl, tp)
    _draw_signal(draw, s, frame, i, label, side)
    title = f"{symbol} {timeframe} · price, signal at {as_utc(signal_ts):%Y-%m-%d %H:%M} UTC"
    draw.text((SIZE[0] / 2, 8), title, font=_font(14), fill=INK, anchor="mt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", compress_level=1)  # written once, read a few times
    return path
