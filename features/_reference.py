"""A straightforward per-event loop of the triple-barrier method: the readable specification that
the vectorised :func:`features.labels.triple_barrier` must match exactly (tests and ``bench/``)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from core.feature_spec import LabelSpec
from features.labels import volatility


def triple_barrier_loop(
    frame: pl.DataFrame,
    spec: LabelSpec,
    side: np.ndarray | None = None,
    pip_size: float = 0.0001,
) -> list[dict | None]:
    """One dict per bar (``label``, ``barrier``, ``exit``, ``bars``, ``ret``, ``pips``) or ``None``
    where the outcome is incomplete."""
    o, h, lo, c = (frame[col].to_list() for col in ("open", "high", "low", "close"))
    sigma = volatility(frame, spec)
    n, out = len(c), []
    for i in range(n):
        s = 1.0 if side is None else float(np.sign(side[i]))
        if i + spec.horizon >= n or not math.isfinite(sigma[i]) or s == 0:
            out.append(None)
            continue
        up = c[i] * math.exp((spec.pt if s > 0 else spec.sl) * sigma[i])
        dn = c[i] * math.exp(-(spec.sl if s > 0 else spec.pt) * sigma[i])
        label, k, price = 0, spec.horizon, c[i + spec.horizon]
        for step in range(1, spec.horizon + 1):
            j = i + step
            hit = _touch(spec.touch, s, up, dn, o[j], h[j], lo[j], c[j])
            if hit is not None:
                label, price = hit
                k = step
                break
        won = label * (1 if s > 0 else -1)
        out.append(
            {
                "label": label,
                "barrier": {1: "tp", -1: "sl", 0: "time"}[won],
                "exit": i + k,
                "bars": k,
                "ret": s * (price / c[i] - 1.0),
                "pips": s * (price - c[i]) / pip_size,
            }
        )
    return out


def _touch(
    touch: str, s: float, up: float, dn: float, o: float, h: float, lo: float, c: float
) -> tuple[int, float] | None:
    """(label, exit price) when bar j reaches a barrier. ``close``: the close decides, the lower
    barrier first. ``high_low``: the order of ``core.strategy.exit_for_candle`` — an open at or
    beyond the stop, an open beyond the take-profit, then the stop's touch, then the take's."""
    if touch == "close":
        if c <= dn:
            return -1, c
        return (1, c) if c >= up else None
    stop, take = (dn, up) if s > 0 else (up, dn)
    stop_label, take_label = (-1, 1) if s > 0 else (1, -1)
    if s * (o - stop) <= 0:
        return stop_label, o
    if s * (o - take) >= 0:
        return take_label, o
    if (lo <= stop) if s > 0 else (h >= stop):
        return stop_label, stop
    if (h >= take) if s > 0 else (lo <= take):
        return take_label, take
    return None
