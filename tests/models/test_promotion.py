"""The promotion gate: each check refuses on its own, with its numbers; the paired bootstrap."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from core.config import PromotionSettings
from models.promotion import Comparison, Decision, compare, gate, paired_bootstrap

GOOD = {
    "oos_dsr": 0.97,
    "oos_roc_auc": 0.56,
    "oos_trades": 80.0,
    "oos_sharpe_annual": 2.1,
    "oos_bh_sharpe_annual": 0.4,
    "oos_days": 500.0,
    "trials_total": 40.0,
    "trials_effective": 9.1,
    "oos_dsr_all_trials": 0.91,
    "pbo": 0.2,
}


def _failed(checks: list) -> dict[str, str]:
    return {c.name: c.message for c in checks if not c.passed}


def test_a_challenger_with_evidence_passes_every_check() -> None:
    checks = gate(GOOD, PromotionSettings())
    names = ["dsr", "auc", "trades", "oos_days", "sharpe", "benchmark", "pbo"]
    assert [c.name for c in checks] == names
    assert all(c.passed for c in checks)


@pytest.mark.parametrize(
    ("key", "value", "check", "message"),
    [
        ("oos_dsr", 0.41, "dsr", "DSR (N = 40 trials ever, 9.1 independent) 0.410 < 0.950"),
        (
            "oos_dsr",
            None,
            "dsr",
            "DSR undefined: fewer than 2 finite trial Sharpe ratios among N = 40 trials",
        ),
        ("oos_days", 200.0, "oos_days", "out-of-sample days 200 < 365"),
        ("oos_roc_auc", 0.503, "auc", "AUC 0.503 < 0.520"),
        ("oos_trades", 12.0, "trades", "trades 12 < 30"),
        ("oos_sharpe_annual", -0.3, "sharpe", "net Sharpe -0.30 ≤ 0"),
        ("oos_bh_sharpe_annual", 2.5, "benchmark", "net Sharpe 2.10 ≤ buy-and-hold 2.50"),
    ],
)
def test_each_check_refuses_on_its_own(key: str, value, check: str, message: str) -> None:
    metrics = GOOD | {"oos_bh_sharpe_annual": -1.0} if check == "sharpe" else GOOD
    assert _failed(gate(metrics | {key: value}, PromotionSettings())) == {check: message}


def test_the_dsr_counts_trials_as_configured() -> None:
    """By default the DSR deflated by the effective number of independent trials decides;
    ``deflate_by = "all_trials"`` reads the one deflated by every trial as independent, and
    evidence recorded before effective counts (one DSR, every trial independent) serves both."""
    strict = PromotionSettings(deflate_by="all_trials")
    assert _failed(gate(GOOD, PromotionSettings())) == {}
    assert _failed(gate(GOOD, strict)) == {
        "dsr": "DSR (N = 40 trials ever, each independent) 0.910 < 0.950"
    }
    old = {k: v for k, v in GOOD.items() if k not in ("trials_effective", "oos_dsr_all_trials")}
    for settings in (PromotionSettings(), strict):
        (check,) = [c for c in gate(old, settings) if c.name == "dsr"]
        assert (
            check.passed
            and check.message == "DSR (N = 40 trials ever, each independent) 0.970 ≥ 0.950"
        )


def test_flat_benchmark_does_not_ask_to_beat_buy_and_hold() -> None:
    metrics = GOOD | {"oos_bh_sharpe_annual": 3.0}
    assert "benchmark" in _failed(gate(metrics, PromotionSettings()))
    assert _failed(gate(metrics, PromotionSettings(benchmark="flat"))) == {}


def test_thresholds_come_from_the_settings() -> None:
    strict = PromotionSettings(min_dsr=0.99, min_auc_lift=0.1, min_trades=100, max_pbo=0.1)
    assert set(_failed(gate(GOOD, strict))) == {"dsr", "auc", "trades", "pbo"}


def test_the_champion_check_needs_a_better_sharpe_with_confidence() -> None:
    settings = PromotionSettings(confidence=0.9)
    sure = Comparison("3", 2.0, 1.0, 0.95, 120)
    unsure = Comparison("3", 2.0, 1.0, 0.7, 120)
    worse = Comparison("3", 1.0, 2.0, 0.95, 120)
    assert _failed(gate(GOOD, settings, sure)) == {}
    assert "P(better) 0.70 < 0.90" in _failed(gate(GOOD, settings, unsure))["champion"]
    assert "champion" in _failed(gate(GOOD, settings, worse))
    failed = _failed(gate(GOOD, settings, None, "champion v3 could not be compared: gone"))
    assert failed == {"champion": "champion v3 could not be compared: gone"}


def test_a_decision_reads_like_the_record_it_leaves() -> None:
    checks = gate(GOOD | {"oos_dsr": 0.41, "oos_roc_auc": 0.503}, PromotionSettings())
    decision = Decision("EURUSD", "1h", "7", False, checks)
    assert decision.summary() == (
        "EURUSD 1h v7 not promoted: DSR (N = 40 trials ever, 9.1 independent) 0.410 < 0.950; "
        "AUC 0.503 < 0.520"
    )
    tags = decision.tags()
    assert tags["decision"] == "rejected" and tags["decision_reasons"].startswith("DSR (N = 40")
    promoted = Decision("EURUSD", "1h", "8", True, gate(GOOD, PromotionSettings()))
    assert promoted.tags()["decision"] == "promoted" and len(promoted.reasons) == 7


def test_paired_bootstrap_confidence() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(0.0, 0.01, 400)
    better = b + 0.004
    assert paired_bootstrap(better, b, 5, 2000, 0) > 0.99
    assert paired_bootstrap(b, better, 5, 2000, 0) < 0.01
    assert paired_bootstrap(b, b.copy(), 5, 2000, 0) == 0.5  # identical: every resample ties
    noisy = b + rng.normal(0.0, 0.01, 400)  # no edge, only noise
    assert 0.05 < paired_bootstrap(noisy, b, 5, 2000, 0) < 0.95
    assert paired_bootstrap(better, b, 5, 500, 3) == paired_bootstrap(better, b, 5, 500, 3)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap(b, b[:-1], 5, 100, 0)


def test_compare_pairs_the_common_days() -> None:
    days = pl.date_range(pl.date(2026, 1, 1), pl.date(2026, 4, 30), eager=True)
    rng = np.random.default_rng(2)
    champion = rng.normal(0.0, 0.01, days.len())
    challenger = champion + 0.003
    ours = pl.DataFrame({"day": days, "ret": challenger})
    theirs = pl.DataFrame({"day": days[5:], "ret": champion[5:]})
    result = compare(ours, theirs, "4", PromotionSettings())
    assert result.days == days.len() - 5 and result.champion_version == "4"
    assert result.challenger_sharpe > result.champion_sharpe and result.confidence > 0.9
