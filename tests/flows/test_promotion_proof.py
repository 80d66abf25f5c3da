"""The proof that the pipeline refuses fake edges and recognises real ones: full collect →
dataset → train → promote runs on the simulated market (a fixed end date, so every run sees the
same candles), with the default configuration but for the edge.

* **Canary** — ``edge = 0`` (a driftless random walk): nothing may be promoted and the holdout
  AUCs sit around 0.5. Any promotion means leakage or a broken gate.
* **Leak control** — the same market with one look-ahead feature planted: the canary's checks
  must catch it (proof that the canary can fail).
* **Recovery** — the default planted edge: most symbols are promoted, with holdout AUC above 0.5
  and a positive net Sharpe.

Per-symbol holdout AUCs at ``edge = 0`` scatter with a standard deviation of ~0.03 at this size
(overlapping 24-bar labels make the effective sample small; measured in bench/bench_promotion.py),
so the canary bounds their mean by 0.5 ± 0.03 and each one by 0.5 ± 0.08 — far below what a leak
produces (the leak control's AUCs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from statistics import mean

import polars as pl
import pytest

from core.reports import TrainReport

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

END = datetime(2026, 11, 1, tzinfo=UTC)
SYMBOLS = ["EURUSD", "GBPUSD", "XAUUSD", "BTCUSD", "ETHUSD", "US500"]


def pipeline(monkeypatch: pytest.MonkeyPatch, edge: float, symbols: list[str]) -> list[dict]:
    from core.config import load_settings
    from flows.build_dataset import build_datasets
    from flows.collect_candles import collect_candles
    from flows.train_models import configured

    monkeypatch.setenv("CANDLEFLOW_SIMULATED__EDGE", str(edge))
    collect_candles(symbols=symbols, end=END)
    build_datasets(symbols=symbols)
    return configured(load_settings())(symbols=symbols)


def champions() -> list[str]:
    from core.config import load_settings
    from models.registry import list_models
    from models.tracking import setup

    models = list_models(setup(load_settings().home))
    return [m["model"] for m in models if any("champion" in v["aliases"] for v in m["versions"])]


def _aucs(rows: list[TrainReport]) -> list[float]:
    return [r.metrics["oos_auc"] for r in rows]


def test_canary_no_edge_promotes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = pipeline(monkeypatch, 0.0, SYMBOLS)
    assert len(rows) == 6 and not any(r.error for r in rows)
    assert [r.promoted for r in rows] == [False] * 6, [
        r.promotion and r.promotion.reasons for r in rows
    ]
    assert champions() == []
    aucs = _aucs(rows)
    assert abs(mean(aucs) - 0.5) <= 0.03, aucs
    assert all(abs(a - 0.5) <= 0.08 for a in aucs), aucs


def test_leak_control_the_canary_catches_a_look_ahead_feature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import features.dataset
    from features.build import Features, compute_features

    def leaky(candles: pl.DataFrame, *args, **kwargs) -> Features:
        built = compute_features(candles, *args, **kwargs)
        close = candles["close"]
        future = (close.shift(-6) / close - 1).fill_null(0.0)  # the next 6 bars: a look-ahead
        frame = built.frame.with_columns(future.alias("leak_future_ret"))
        return Features(frame, [*built.columns, "leak_future_ret"], built.spec, built.skipped)

    monkeypatch.setattr(features.dataset, "compute_features", leaky)
    rows = pipeline(monkeypatch, 0.0, ["EURUSD", "BTCUSD"])
    aucs = _aucs(rows)
    assert all(a > 0.58 for a in aucs), aucs  # far outside the canary's band
    assert any(r.promoted for r in rows), [r.promotion and r.promotion.reasons for r in rows]


def test_recovery_the_planted_edge_is_found_and_promoted(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import load_settings

    rows = pipeline(monkeypatch, load_settings().simulated.edge, SYMBOLS)
    assert not any(r.error for r in rows)
    promoted = [r for r in rows if r.promoted]
    assert len(promoted) >= 4, [(r.symbol, r.promotion and r.promotion.reasons) for r in rows]
    assert mean(_aucs(rows)) >= 0.55 and all(a > 0.52 for a in _aucs(promoted))
    assert all(r.metrics["oos_sharpe"] > 0 for r in promoted)
    assert sorted(champions()) == sorted(f"candleflow.{r.symbol}.1h" for r in promoted)
