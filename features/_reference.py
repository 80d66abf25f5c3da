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
            reach_up = c[j] if spec.touch == "close" else h[j]
            reach_dn = c[j] if spec.touch == "close" else lo[j]
            if reach_dn <= dn:  # checked first: a bar crossing both counts as the lower barrier
                label, k = -1, step
                price = c[j] if spec.touch == "close" else (min(o[j], dn) if s > 0 else dn)
                break
            if reach_up >= up:
                label, k = 1, step
                price = c[j] if spec.touch == "close" else (up if s > 0 else max(o[j], up))
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
