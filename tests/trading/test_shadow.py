from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from core.feature_spec import LabelSpec
from features.labels import triple_barrier
from tests.conftest import T0
from trading.shadow import REPORT_SCHEMA, known_outcomes, shadow_report, signal_outcomes

# σ ≈ 0.2 % on the zig-zag, so the barriers sit ≈ ±0.4 % away: the zig-zag (±0.2 % around the
# entry) never reaches them, a 6 % spike always does.
LABELS = LabelSpec(pt=2.0, sl=2.0, horizon=5, vol="ewm", vol_window=5, touch="high_low")
N = 120
WIN_A, LOSS_B, TIMEOUT_C, WIN_EARLY_E, PENDING_D = 30, 60, 90, 115, N - 1
SPIKES = {32: 106.0, 62: 94.0, 117: 106.0}  # after A: up; after B: down; after E: up


def _at(i: int) -> datetime:
    return T0 + timedelta(hours=i)


def _candles(n: int = N, spikes: dict[int, float] = SPIKES) -> pl.DataFrame:
    close = [spikes.get(i, 100.0 * (1 + 0.001 * (-1) ** i)) for i in range(n)]
    opens = [close[0], *close[:-1]]
    return pl.DataFrame(
        {
            "ts": [_at(i) for i in range(n)],
            "open": opens,
            "high": [max(o, c) for o, c in zip(opens, close, strict=True)],
            "low": [min(o, c) for o, c in zip(opens, close, strict=True)],
            "close": close,
            "volume": [1.0] * n,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def _signal(
    bar: int, version: str, *, shadow: bool = False, action: int = 1, status: str = "OK", **kw: Any
) -> dict[str, Any]:
    row = {
        "symbol": "EURUSD",
        "timeframe": "1h",
        "ts": _at(bar),
        "model_version": version,
        "shadow": shadow,
        "status": status,
        "action": action,
        "probability": 0.6,
    }
    return row | kw


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us", "UTC")})


def test_known_outcomes_by_hand() -> None:
    outcomes = dict(known_outcomes(_candles(), "1h", LABELS).select("ts", "label").iter_rows())
    assert outcomes[_at(WIN_A)] == 1  # the spike up two bars later: take-profit
    assert outcomes[_at(LOSS_B)] == -1  # the spike down: stop-loss
    assert outcomes[_at(TIMEOUT_C)] == 0  # five zig-zag bars: time-out
    assert outcomes[_at(WIN_EARLY_E)] == 1  # take-profit before its horizon is over
    assert _at(PENDING_D) not in outcomes  # no bar after it yet
    assert _at(N - 3) not in outcomes  # 2 bars after it, none touching: horizon not elapsed


def test_known_outcomes_agree_with_the_training_labels() -> None:
    """Wherever the labels are complete, the live outcome is the label itself."""
    candles = _candles()
    labels = triple_barrier(candles, LABELS).filter(pl.col("label").is_not_null())
    live = known_outcomes(candles, "1h", LABELS)
    joined = labels.select("ts", "label").join(live, on="ts", how="left", suffix="_live")
    assert joined.height == N - LABELS.horizon - LABELS.vol_window  # σ warm-up, last horizon
    assert joined["label_live"].null_count() == 0
    assert (joined["label"].cast(pl.Int8) == joined["label_live"]).all()
    assert set(joined["label"]) == {-1, 0, 1}


def _signals() -> pl.DataFrame:
    return _frame(
        [
            _signal(WIN_A, "3"),
            _signal(LOSS_B, "3"),
            _signal(40, "3", action=0),  # flat: a signal, not a BUY
            _signal(TIMEOUT_C, "4"),  # promoted in between: version 4
            _signal(WIN_EARLY_E, "4"),
            _signal(PENDING_D, "4"),
            _signal(LOSS_B + 1, "4", status="STALE"),  # not OK: never counts
            _signal(WIN_A, "5", shadow=True),
            _signal(LOSS_B, "5", shadow=True, action=0),
            _signal(WIN_EARLY_E, "5", shadow=True),
            _signal(TIMEOUT_C, "5", shadow=True, status="ERROR", action=None),
        ]
    )


def test_report_separates_champion_and_shadow() -> None:
    report = shadow_report(_signals(), {("EURUSD", "1h"): _candles()}, LABELS)
    assert report.schema == pl.Schema(REPORT_SCHEMA)
    rows = {r["role"]: r for r in report.iter_rows(named=True)}
    assert set(rows) == {"champion", "shadow"}
    champion, shadow = rows["champion"], rows["shadow"]
    assert (champion["symbol"], champion["timeframe"]) == ("EURUSD", "1h")
    assert champion["model_versions"] == "3,4"
    assert (champion["signals"], champion["buys"], champion["resolved"]) == (6, 5, 4)
    assert (champion["wins"], champion["pending"]) == (2, 1)
    assert champion["hit_rate"] == pytest.approx(0.5)
    assert shadow["model_versions"] == "5"
    assert (shadow["signals"], shadow["buys"], shadow["resolved"]) == (3, 2, 2)
    assert (shadow["wins"], shadow["pending"], shadow["hit_rate"]) == (2, 0, 1.0)


def test_only_ok_signals_count() -> None:
    signals = _signals().with_columns(status=pl.lit("STALE"))
    report = shadow_report(signals, {("EURUSD", "1h"): _candles()}, LABELS)
    assert report.is_empty()
    assert report.schema == pl.Schema(REPORT_SCHEMA)


def test_nothing_resolved_gives_nan_and_missing_candles_stay_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signals = _frame(
        [
            _signal(PENDING_D, "1", symbol="BTCUSD"),
            _signal(10, "1", symbol="ETHUSD"),
        ]
    )
    candles = {("BTCUSD", "1h"): _candles(), ("EURUSD", "1h"): _candles()}
    with caplog.at_level(logging.WARNING):
        report = shadow_report(signals, candles, LABELS)
    assert "no candles for ETHUSD 1h" in caplog.text
    assert report["symbol"].to_list() == ["BTCUSD", "ETHUSD"]
    assert report["pending"].to_list() == [1, 1]
    assert report["resolved"].to_list() == [0, 0]
    assert all(math.isnan(x) for x in report["hit_rate"])


def test_outcomes_per_signal_and_naive_times() -> None:
    signals = _signals().with_columns(pl.col("ts").dt.replace_time_zone(None))
    out = signal_outcomes(signals, {("EURUSD", "1h"): _candles()}, LABELS)
    champion = out.filter(~pl.col("shadow")).sort("ts")
    assert champion["label"].to_list() == [1, None, -1, 0, 1, None]  # bars 30, 40, 60, 90, 115, 119


def test_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="model_version"):
        shadow_report(_signals().drop("model_version"), {}, LABELS)
