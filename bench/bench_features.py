"""The default feature spec on 1M candles against the same TA-Lib calls alone, same run.

Two references: (a) the spec's indicator calls on the 1M candles; (b) every TA-Lib call the
default spec implies — the indicators on the base and on the higher (4h) timeframe, plus those
the built-in families use (ATR, STDDEV, SMA). The feature build also makes the results scale-free,
computes the non-TA-Lib families, aggregates to 4h and joins as-of."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import talib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import best_of, cpu_seconds, random_candles, save
from core.feature_spec import FeatureSpec
from core.timeframes import parse_timeframe
from features.build import candle_inputs, compute_features, resample
from features.indicators import call

N = 1_000_000


def _family_talib_calls(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The TA-Lib calls the default families make (see features/families.py)."""
    h, lo, c, v = inputs["high"], inputs["low"], inputs["close"], inputs["volume"]
    r1 = np.diff(np.log(c), prepend=np.nan)
    out = [talib.ATR(h, lo, c, 14)]
    out += [talib.STDDEV(r1, w, 1) for w in (12, 48)]
    out += [f(c, w) for w in (24, 96) for f in (talib.SMA, lambda x, w: talib.STDDEV(x, w, 1))]
    return [*out, talib.SMA(v, 48), talib.STDDEV(v, 48, 1)]


def main() -> None:
    candles = random_candles(N)
    spec = FeatureSpec()
    inputs = candle_inputs(candles)
    four = candle_inputs(resample(candles, parse_timeframe("4h")))

    # The references keep their outputs until they return, as any use of them must: results
    # thrown away at once would let every call reuse the last one's memory, which hides the
    # first-touch cost of memory that any real output pays (large on this VM: ~13 ms per 8 MB).
    def indicators_only() -> list:
        return [call(item, inputs) for item in spec.indicators]

    def all_talib() -> list:
        kept = []
        for data in (inputs, four):
            kept += [call(item, data) for item in spec.indicators]
            kept.append(_family_talib_calls(data))
        return kept

    def build_features() -> None:
        compute_features(candles, spec, "1h", symbol="BENCH")

    build, only, implied = (best_of(fn) for fn in (build_features, indicators_only, all_talib))
    cpu = {
        name: cpu_seconds(fn)
        for name, fn in (
            ("build", build_features),
            ("only", indicators_only),
            ("implied", all_talib),
        )
    }
    columns = len(compute_features(candles, spec, "1h", symbol="BENCH").columns)
    # The build runs its parts on every core (TA-Lib releases the GIL); the references run
    # sequentially, as the plain calls would. CPU seconds show the work, wall seconds the wait.
    save(
        "features",
        [
            {
                "case": "feature build (default spec)",
                "wall_s": round(build, 3),
                "cpu_s": round(cpu["build"], 3),
                "rows_per_s": int(N / build),
                "columns": columns,
                "wall_ratio": 1.0,
                "cpu_ratio": 1.0,
            },
            {
                "case": "(a) the spec's TA-Lib indicator calls alone",
                "wall_s": round(only, 3),
                "cpu_s": round(cpu["only"], 3),
                "rows_per_s": int(N / only),
                "columns": None,
                "wall_ratio": round(build / only, 2),
                "cpu_ratio": round(cpu["build"] / cpu["only"], 2),
            },
            {
                "case": "(b) every TA-Lib call the spec implies",
                "wall_s": round(implied, 3),
                "cpu_s": round(cpu["implied"], 3),
                "rows_per_s": int(N / implied),
                "columns": None,
                "wall_ratio": round(build / implied, 2),
                "cpu_ratio": round(cpu["build"] / cpu["implied"], 2),
            },
        ],
    )


if __name__ == "__main__":
    main()
