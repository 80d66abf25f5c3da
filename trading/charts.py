"""A PNG chart of one signal: the last candles (high–low wick, open–close body), the signal marked
at its candle with action, tier and probability, and the stop-loss / take-profit levels when the
signal is an order. Files only: drawn on matplotlib's Agg canvas, never a display."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.candles import PRICE_COLUMNS
from core.timeframes import as_utc

UP, DOWN = "#26a69a", "#ef5350"
SL_COLOR, TP_COLOR = "#c62828", "#2e7d32"
ACTIONS = {1: "BUY", 0: "FLAT", -1: "SELL"}
MAX_TICKS = 8


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


def _draw_candles(ax: Axes, frame: pl.DataFrame) -> None:
    o, h, lo, c = (frame[col].to_numpy().astype(np.float64) for col in PRICE_COLUMNS)
    x = np.arange(frame.height)
    colors = np.where(c >= o, UP, DOWN)
    ax.vlines(x, lo, h, colors=colors, linewidth=0.8)
    # A flat bar (open == close) still shows a sliver of body.
    span = np.nanmax(h) - np.nanmin(lo) if np.isfinite(h).any() else 0.0
    height = np.maximum(np.abs(c - o), span * 0.002)
    # Bodies as one thick line collection: 120 bar patches cost ~10× more to draw.
    bottom = np.minimum(o, c)
    ax.vlines(x, bottom, bottom + height, colors=colors, linewidth=3.5)


def _draw_signal(ax: Axes, frame: pl.DataFrame, i: int, label: str, side: str) -> None:
    high, low, close = (float(frame[col][i]) for col in ("high", "low", "close"))
    if side == "BUY":
        y, marker, offset = low, "^", -28
    elif side == "SELL":
        y, marker, offset = high, "v", 20
    else:
        y, marker, offset = close, "o", 20
    ax.plot([i], [y], marker=marker, markersize=11, color="#1565c0", zorder=5)
    ax.axvline(i, color="#1565c0", alpha=0.15, linewidth=6, zorder=0)
    ax.annotate(
        label,
        (i, y),
        xytext=(0, offset),
        textcoords="offset points",
        ha="right" if i > frame.height / 2 else "left",
        fontsize=9,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#1565c0"},
    )


def _draw_levels(ax: Axes, stop_loss: float | None, take_profit: float | None) -> None:
    for name, value, color in (("SL", stop_loss, SL_COLOR), ("TP", take_profit, TP_COLOR)):
        if value is not None:
            ax.axhline(value, color=color, linestyle="--", linewidth=1.2, label=f"{name} {value:g}")
    if stop_loss is not None or take_profit is not None:
        ax.legend(loc="upper left", fontsize=8)


def _time_axis(ax: Axes, frame: pl.DataFrame) -> None:
    # Positions, not times, on the x axis: market closures (weekends) leave no gaps.
    step = max(1, math.ceil(frame.height / MAX_TICKS))
    ticks = list(range(0, frame.height, step))
    times = frame["ts"].to_list()
    ax.set_xticks(ticks, [f"{as_utc(times[t]):%m-%d %H:%M}" for t in ticks], fontsize=8)
    ax.set_xlim(-1, frame.height)


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
    p = _level(probability)
    label = f"{side} · {tier}\np = {'n/a' if p is None else f'{p:.3f}'}"
    fig = Figure(figsize=(10, 5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_candles(ax, frame)
    _draw_levels(ax, _level(stop_loss), _level(take_profit))
    _draw_signal(ax, frame, i, label, side)
    _time_axis(ax, frame)
    ax.grid(alpha=0.25)
    ax.set_title(f"{symbol} {timeframe} · signal at {as_utc(signal_ts):%Y-%m-%d %H:%M} UTC")
    ax.set_ylabel("price")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
