"""Metrics: classification on a hand-checked example; Sharpe, PSR and DSR against arithmetic written
out here (stdlib ``statistics.NormalDist``, not scipy), against the published DSR example and
against the exact expected maximum of N normals; the documented edge cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import integrate, stats

from models.metrics import (
    MetricsError,
    annualised_sharpe,
    classification_report,
    deflated_sharpe_ratio,
    effective_trials,
    expected_max_sharpe,
    max_drawdown,
    probabilistic_sharpe_ratio,
    profit_factor,
    psr_from_stats,
    sharpe,
    win_rate,
)

PHI = NormalDist()
GAMMA = 0.5772156649015329  # Euler–Mascheroni
# Deviations from the mean 0.02 are (−2, −1, 0, +3) × 0.01: every moment is a small fraction.
RETURNS = [0.0, 0.01, 0.02, 0.05]


# --- classification --------------------------------------------------------------------------


def test_classification_report_by_hand() -> None:
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    out = classification_report(y, p, threshold=0.5)
    # Positive/negative pairs ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); wrong:
    # (0.35 < 0.4) → AUC 3/4.
    assert out["roc_auc"] == pytest.approx(0.75)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert out["log_loss"] == pytest.approx(expected_ll)
    assert out["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    # Predicted positive: only 0.8 → one true positive of one predicted, of two positives.
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(0.5)
    assert out["positive_rate"] == pytest.approx(0.25)
    assert out["base_rate"] == pytest.approx(0.5)
    assert out["n"] == 4.0
    assert all(isinstance(v, float) for v in out.values())


def test_classification_threshold_moves_precision_and_recall() -> None:
    out = classification_report([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.3)
    # Predicted positive: 0.4, 0.35, 0.8 → 2 true of 3 predicted; both positives found.
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1.0)
    assert out["positive_rate"] == pytest.approx(0.75)


def test_classification_one_class_has_nan_auc_and_nothing_predicted_nan_precision() -> None:
    out = classification_report([1, 1, 1], [0.2, 0.3, 0.4], threshold=0.9)
    assert math.isnan(out["roc_auc"])
    assert math.isnan(out["precision"])  # nothing predicted positive
    assert out["recall"] == 0.0
    assert out["log_loss"] == pytest.approx(-(math.log(0.2) + math.log(0.3) + math.log(0.4)) / 3)


@pytest.mark.parametrize(
    ("y", "p", "threshold", "match"),
    [
        ([0, 1], [0.5], 0.5, "same length"),
        ([0, 2], [0.5, 0.5], 0.5, "0/1"),
        ([0, 1], [0.5, 1.5], 0.5, r"\[0, 1\]"),
        ([0, 1], [0.5, np.nan], 0.5, "non-finite"),
        ([0, 1], [0.5, 0.5], 1.5, "threshold"),
        ([], [], 0.5, "at least one"),
    ],
)
def test_classification_rejects_bad_input(y, p, threshold, match) -> None:
    with pytest.raises(MetricsError, match=match):
        classification_report(y, p, threshold)


# --- Sharpe, PSR, DSR ------------------------------------------------------------------------


def test_sharpe_by_hand() -> None:
    # mean 0.02; Σ dev² = (4 + 1 + 0 + 9)·1e-4 = 14e-4; var (ddof 1) = 14e-4 / 3
    # SR = 0.02 / sqrt(14e-4 / 3) = sqrt(4e-4 · 3 / 14e-4) = sqrt(6/7)
    assert sharpe(RETURNS) == pytest.approx(math.sqrt(6 / 7), rel=1e-12)
    assert annualised_sharpe(RETURNS, 365) == pytest.approx(math.sqrt(6 / 7) * math.sqrt(365))
    assert sharpe([-r for r in RETURNS]) == pytest.approx(-math.sqrt(6 / 7))


def test_psr_by_hand() -> None:
    # Population moments in units of 0.01 (they are scale-free ratios):
    # m2 = (4 + 1 + 0 + 9)/4 = 3.5, m3 = (−8 − 1 + 0 + 27)/4 = 4.5, m4 = (16 + 1 + 0 + 81)/4 = 24.5
    skew = 4.5 / 3.5**1.5  # ≈ 0.6872
    kurt = 24.5 / 3.5**2  # = 2.0 (raw)
    sr = math.sqrt(6 / 7)
    variance_term = 1 - skew * sr + (kurt - 1) / 4 * sr**2  # ≈ 0.5780
    z = (sr - 0.0) * math.sqrt(4 - 1) / math.sqrt(variance_term)  # ≈ 2.109
    expected = PHI.cdf(z)
    assert expected == pytest.approx(0.98254, abs=1e-5)  # the arithmetic above, once more
    assert probabilistic_sharpe_ratio(RETURNS) == pytest.approx(expected, rel=1e-12)
    assert psr_from_stats(sr, 4, skew, kurt) == pytest.approx(expected, rel=1e-12)

    # Against a benchmark SR* = 0.5 the numerator shrinks: (sr − 0.5)·sqrt(3).
    z_bench = (sr - 0.5) * math.sqrt(3) / math.sqrt(variance_term)
    assert probabilistic_sharpe_ratio(RETURNS, 0.5) == pytest.approx(PHI.cdf(z_bench))


def test_psr_moments_are_population_skew_and_raw_kurtosis() -> None:
    rng = np.random.default_rng(7)
    r = rng.standard_t(4, 500) * 0.01 + 0.001
    dev = r - r.mean()
    m2, m3, m4 = (np.mean(dev**k) for k in (2, 3, 4))
    sr = r.mean() / r.std(ddof=1)
    variance_term = 1 - (m3 / m2**1.5) * sr + (m4 / m2**2 - 1) / 4 * sr**2
    expected = PHI.cdf(sr * math.sqrt(len(r) - 1) / math.sqrt(variance_term))
    assert probabilistic_sharpe_ratio(r) == pytest.approx(expected, rel=1e-10)


def test_expected_max_sharpe_by_hand() -> None:
    n, v = 10, 0.04
    by_hand = math.sqrt(v) * (
        (1 - GAMMA) * PHI.inv_cdf(1 - 1 / n) + GAMMA * PHI.inv_cdf(1 - 1 / (n * math.e))
    )
    # (0.4228·1.2816 + 0.5772·1.7894)·0.2 ≈ 0.3149
    assert by_hand == pytest.approx(0.31492, abs=1e-4)
    assert expected_max_sharpe(n, v) == pytest.approx(by_hand, rel=1e-10)
    assert expected_max_sharpe(1, 5.0) == 0.0  # one trial: nothing selected, nothing to deflate
    assert expected_max_sharpe(100, 0.0) == 0.0
    assert expected_max_sharpe(10, 4 * v) == pytest.approx(2 * by_hand)  # scales with sqrt(V)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_expected_max_sharpe_approximates_the_exact_maximum_of_normals(n: int) -> None:
    # E[max of n iid N(0, 1)] = ∫ x · n φ(x) Φ(x)^(n−1) dx; the closed form is within a few %.
    def density(x: float) -> float:
        return x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)

    exact = integrate.quad(density, -12, 12)[0]
    approx = expected_max_sharpe(n, 1.0)
    assert approx == pytest.approx(exact, rel=0.03)


def test_published_dsr_example() -> None:
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example: N = 100
    trials with annualised V[SR] = 1/2, a selected annualised SR of 2.5 over T = 1250 daily
    returns (250 a year), skewness −3, raw kurtosis 10 → E[max SR] ≈ 0.1132 per day, DSR ≈ 0.9004.
    """
    per_day_variance = 0.5 / 250
    sr_star = expected_max_sharpe(100, per_day_variance)
    assert sr_star == pytest.approx(0.1132, abs=5e-5)
    dsr = psr_from_stats(2.5 / math.sqrt(250), 1250, skew=-3.0, kurtosis=10.0, sr_benchmark=sr_star)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_dsr_is_psr_against_the_expected_maximum() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.01, 400)
    assert deflated_sharpe_ratio(r, 1, 0.3) == pytest.approx(probabilistic_sharpe_ratio(r))
    bench = expected_max_sharpe(50, 0.002)
    assert deflated_sharpe_ratio(r, 50, 0.002) == pytest.approx(
        probabilistic_sharpe_ratio(r, bench)
    )
    # More trials, or more dispersed trials, can only lower the DSR.
    assert deflated_sharpe_ratio(r, 50, 0.002) < deflated_sharpe_ratio(r, 5, 0.002)
    assert deflated_sharpe_ratio(r, 50, 0.004) < deflated_sharpe_ratio(r, 50, 0.002)
    assert deflated_sharpe_ratio(r, 50, 0.002) < probabilistic_sharpe_ratio(r)


def test_undefined_statistics_are_nan() -> None:
    assert math.isnan(sharpe([]))
    assert math.isnan(sharpe([0.01]))  # n < 2
    assert math.isnan(sharpe([0.1, 0.1, 0.1]))  # zero variance, though the float std is ~1e-17
    assert math.isnan(sharpe([0.0] * 10))  # a strategy that never trades: 0/0
    assert math.isnan(annualised_sharpe([0.0] * 10, 365))
    assert math.isnan(probabilistic_sharpe_ratio([0.01, 0.02]))  # n < 3
    assert not math.isnan(probabilistic_sharpe_ratio([0.01, 0.02, 0.04]))
    assert math.isnan(probabilistic_sharpe_ratio([0.02] * 5))
    assert math.isnan(deflated_sharpe_ratio([0.02] * 5, 10, 0.1))
    assert math.isnan(psr_from_stats(math.nan, 10, 0.0, 3.0))
    assert math.isnan(psr_from_stats(0.5, 1, 0.0, 3.0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sharpe([0.01, np.nan]), "non-finite"),
        (lambda: sharpe([0.01, np.inf]), "non-finite"),
        (lambda: sharpe([[0.01, 0.02]]), "one-dimensional"),
        (lambda: annualised_sharpe(RETURNS, 0), "periods_per_year"),
        (lambda: psr_from_stats(0.1, 100, 0.0, 0.0), "RAW kurtosis"),  # excess passed by mistake
        (lambda: expected_max_sharpe(0, 0.1), "n_trials"),
        (lambda: expected_max_sharpe(math.nan, 0.1), "n_trials"),
        (lambda: expected_max_sharpe(True, 0.1), "n_trials"),
        (lambda: expected_max_sharpe(10, -0.1), "sr_variance"),
        (lambda: deflated_sharpe_ratio(RETURNS, 10, math.nan), "sr_variance"),
    ],
)
def test_invalid_inputs_raise(call, match) -> None:
    with pytest.raises(MetricsError, match=match):
        call()


# --- trade statistics ------------------------------------------------------------------------


def test_win_rate_and_profit_factor_by_hand() -> None:
    net = [0.02, -0.01, -0.03, 0.05, 0.0]
    assert win_rate(net) == pytest.approx(2 / 5)  # the 0.0 trade is not a win
    assert profit_factor(net) == pytest.approx((0.02 + 0.05) / (0.01 + 0.03))
    assert profit_factor([0.01, 0.02]) == math.inf
    assert profit_factor([-0.01]) == 0.0
    assert math.isnan(profit_factor([0.0, 0.0]))
    assert math.isnan(win_rate([])) and math.isnan(profit_factor([]))


def test_max_drawdown_by_hand() -> None:
    # equity 1 → 1.1 → 0.88 → 0.924 → 1.2012 → 1.08108: worst fall 1.1 → 0.88 = 20 %
    assert max_drawdown([0.1, -0.2, 0.05, 0.3, -0.1]) == pytest.approx(0.2)
    # The starting capital is a peak: 1 → 0.9 → 0.945
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(0.1)
    assert max_drawdown([0.01, 0.02]) == 0.0
    assert max_drawdown([]) == 0.0


def test_effective_trials_counts_independent_ones() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 0.01, (400, 2))
    # Uncorrelated trials: as many as there are (up to sampling noise in the correlations).
    assert effective_trials(rng.normal(0.0, 0.01, (2000, 8))) == pytest.approx(8, rel=0.02)
    # Copies of one trial, scaled or shifted: one.
    copies = np.column_stack([base[:, 0] * k + 0.001 * k for k in (1, 2, 3, 4)])
    assert effective_trials(copies) == pytest.approx(1.0)
    # Two uncorrelated groups of copies: two, whatever the group sizes.
    groups = np.column_stack([base[:, 0]] * 5 + [base[:, 1]] * 3)
    assert effective_trials(groups) == pytest.approx(2.0, abs=0.05)  # sample correlation ≠ 0
    # Correlated trials lie in between, and more correlation is fewer independent trials.
    common = rng.normal(0.0, 0.01, (2000, 1))
    loose = common + rng.normal(0.0, 0.01, (2000, 6))
    tight = common + rng.normal(0.0, 0.003, (2000, 6))
    assert 1.0 < effective_trials(tight) < effective_trials(loose) < 6.0


def test_effective_trials_edge_cases() -> None:
    rng = np.random.default_rng(6)
    r = rng.normal(0.0, 0.01, (100, 3))
    never_traded = np.zeros((100, 1))
    # A trial that never traded cannot be correlated: it counts as one independent trial.
    assert effective_trials(np.column_stack([r[:, :1], r[:, :1], never_traded])) == (
        pytest.approx(2.0)
    )
    assert effective_trials(r[:, :1]) == 1.0
    with pytest.raises(MetricsError, match="2-D"):
        effective_trials(r[:, 0])
    with pytest.raises(MetricsError, match="finite"):
        effective_trials(np.column_stack([r, np.full(100, np.nan)]))


def test_expected_max_sharpe_takes_an_effective_number_of_trials() -> None:
    # Between integers it lies between their values; it never goes below 0 (just above N = 1
    # the formula would); fewer trials than one is refused.
    assert expected_max_sharpe(8, 1.0) < expected_max_sharpe(8.5, 1.0) < expected_max_sharpe(9, 1.0)
    assert expected_max_sharpe(1.05, 1.0) == 0.0
    assert 0.0 < expected_max_sharpe(1.5, 1.0) < expected_max_sharpe(2, 1.0)
    with pytest.raises(MetricsError, match="≥ 1"):
        expected_max_sharpe(0.5, 1.0)
