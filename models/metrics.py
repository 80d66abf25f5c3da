"""Metrics for models and strategies: how well P(win) classifies, and what a return series is worth
once luck is accounted for (Sharpe, probabilistic and deflated Sharpe, win rate, profit factor,
drawdown). Plain functions over numpy arrays (polars Series are accepted too).

Conventions, chosen once for every caller:

* Sharpe ratios are **per period** of the series given (mean / std with ``ddof=1``, no risk-free
  rate); :func:`annualised_sharpe` multiplies by ``sqrt(periods_per_year)``.
* Statistically undefined results are ``NaN``, never an exception: a Sharpe of fewer than 2
  returns or of a constant series (zero variance, the 0/0 of a strategy that never trades),
  a PSR / DSR of fewer than 3 returns, an AUC with one class, the win rate or profit factor of no
  trades. Invalid *inputs* (non-finite returns, probabilities outside [0, 1], a raw kurtosis
  below 1, fewer than one trial, a negative variance) raise :class:`MetricsError`.
* PSR / DSR use the *biased* (population) sample skewness and RAW kurtosis (normal = 3). Those are
  the moments of the empirical distribution, for which γ4 ≥ 1 + γ3² holds, so the variance term
  ``1 − γ3·SR + (γ4 − 1)/4·SR²`` is never negative.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from core.errors import CandleflowError

logger = logging.getLogger(__name__)

EULER_GAMMA = float(np.euler_gamma)


class MetricsError(CandleflowError, ValueError):
    """A metric was asked of inputs it cannot take (names the input and what is allowed)."""


def _returns(returns: Any, name: str = "returns") -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 1:
        raise MetricsError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise MetricsError(f"{name} has {bad} non-finite value(s) (NaN or inf); drop or fix them")
    return arr


# --- classification --------------------------------------------------------------------------


def classification_report(y_true: Any, proba: Any, threshold: float = 0.5) -> dict[str, float]:
    """Quality of the probabilities ``proba`` = P(y = 1) against binary outcomes ``y_true``.

    Keys: ``roc_auc`` (NaN when ``y_true`` holds one class only: ranking is undefined),
    ``log_loss``, ``brier``, ``precision`` and ``recall`` of the rule ``proba ≥ threshold`` (NaN
    when nothing is predicted positive, resp. nothing is positive), ``positive_rate`` (share
    predicted positive), ``base_rate`` (share actually positive) and ``n``.
    """
    y = np.asarray(y_true)
    p = _returns(proba, "proba")
    if y.ndim != 1 or y.shape != p.shape:
        raise MetricsError(f"y_true {y.shape} and proba {p.shape} must be 1-D of the same length")
    if y.size == 0:
        raise MetricsError("classification_report needs at least one row")
    if not np.isin(y, (0, 1)).all():
        raise MetricsError(f"y_true must hold only 0/1, got values {np.unique(y)[:10].tolist()}")
    if p.min() < 0 or p.max() > 1:
        raise MetricsError(f"proba must lie in [0, 1], got [{p.min()}, {p.max()}]")
    if not 0 <= threshold <= 1:
        raise MetricsError(f"threshold must lie in [0, 1], got {threshold}")
    y = y.astype(np.int8)
    pred = (p >= threshold).astype(np.int8)
    one_class = np.unique(y).size < 2
    if one_class:
        logger.warning("classification_report: y_true has one class only; roc_auc is NaN")
    return {
        "roc_auc": math.nan if one_class else float(skm.roc_auc_score(y, p)),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p, labels=[0, 1])),
        "precision": float(skm.precision_score(y, pred, zero_division=np.nan)),
        "recall": float(skm.recall_score(y, pred, zero_division=np.nan)),
        "positive_rate": float(pred.mean()),
        "base_rate": float(y.mean()),
        "n": float(y.size),
    }


# --- Sharpe family ---------------------------------------------------------------------------


def sharpe(returns: Any) -> float:
    """Per-period Sharpe ratio ``mean / std`` (``ddof=1``); NaN for < 2 returns or zero variance."""
    r = _returns(returns)
    if r.size < 2 or np.ptp(r) == 0:  # ptp, not std == 0: a constant's std can round to 1e-18
        return math.nan
    return float(r.mean() / r.std(ddof=1))


def annualised_sharpe(returns: Any, periods_per_year: float) -> float:
    """:func:`sharpe` × sqrt(``periods_per_year``) (e.g. 365 for a daily 24/7 series)."""
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise MetricsError(f"periods_per_year must be a positive number, got {periods_per_year}")
    return sharpe(returns) * math.sqrt(periods_per_year)


def psr_from_stats(
    sr: float, n: int, skew: float, kurtosis: float, sr_benchmark: float = 0.0
) -> float:
    """PSR from summary statistics (Bailey & López de Prado 2012): the probability that the true
    per-period Sharpe exceeds ``sr_benchmark``, given the observed per-period ``sr`` over ``n``
    returns of skewness ``skew`` and RAW kurtosis ``kurtosis`` (3 for a normal)::

        PSR = Φ( (sr − sr_benchmark)·sqrt(n − 1) / sqrt(1 − skew·sr + (kurtosis − 1)/4·sr²) )

    NaN when ``sr`` is NaN, ``n < 2`` or the variance term is not positive (degenerate series).
    """
    if not math.isfinite(kurtosis) or kurtosis < 1:
        raise MetricsError(
            f"kurtosis must be the RAW kurtosis (≥ 1, normal = 3), got {kurtosis}; "
            "excess kurtosis + 3 is the raw one"
        )
    if not math.isfinite(sr_benchmark):
        raise MetricsError(f"sr_benchmark must be finite, got {sr_benchmark}")
    if math.isnan(sr) or n < 2:
        return math.nan
    variance_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not variance_term > 0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(variance_term)
    return float(stats.norm.cdf(z))


def probabilistic_sharpe_ratio(returns: Any, sr_benchmark: float = 0.0) -> float:
    """PSR of a return series against the per-period benchmark ``sr_benchmark`` (see
    :func:`psr_from_stats`; biased sample skewness and raw kurtosis). NaN for fewer than 3 returns
    (two points always have skewness 0 and kurtosis 1) or zero variance."""
    r = _returns(returns)
    sr = sharpe(r)
    if r.size < 3 or math.isnan(sr):
        return math.nan
    skew = float(stats.skew(r, bias=True))
    kurt = float(stats.kurtosis(r, fisher=False, bias=True))
    return psr_from_stats(sr, r.size, skew, kurt, sr_benchmark)


def expected_max_sharpe(n_trials: float, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` per-period Sharpe ratios of skill-less strategies whose
    Sharpe estimates have variance ``sr_variance`` (Bailey & López de Prado 2014)::

        E[max SR] = sqrt(V)·((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))),  γ = Euler–Mascheroni

    ``N`` may be an effective (non-integer) number of independent trials
    (:func:`effective_trials`). ``N = 1`` gives 0: a single trial has no selection to deflate (the
    formula's Φ⁻¹(0) = −∞ has no meaning there), and just above 1, where the formula dips below
    0, it is held at 0 (the benchmark is never easier than the PSR's). ``sr_variance`` must be in
    the units of the Sharpe it deflates (per period).
    """
    if isinstance(n_trials, bool) or not (math.isfinite(n_trials) and n_trials >= 1):
        raise MetricsError(f"n_trials must be a number ≥ 1, got {n_trials}")
    if not (math.isfinite(sr_variance) and sr_variance >= 0):
        raise MetricsError(f"sr_variance must be a finite number ≥ 0, got {sr_variance}")
    if n_trials == 1:
        return 0.0
    n = float(n_trials)
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(
        1 - 1 / (n * math.e)
    )
    return float(math.sqrt(sr_variance) * max(z, 0.0))


def effective_trials(returns: Any) -> float:
    """The effective number of independent trials among the columns of ``returns`` (one column per
    trial, one row per period, the same periods), from the eigenvalues λ of their correlation
    matrix (Galwey 2009, an effective number of tests for correlated tests)::

        M_eff = (Σ sqrt(λ))² / Σ λ

    M uncorrelated trials give M, M copies of one trial give 1, two uncorrelated groups of copies
    give 2; it moves smoothly in between. A constant column (a trial that never traded) has no
    correlation to share and counts as one independent trial; so does a lone column. Non-finite
    returns raise :class:`MetricsError`."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise MetricsError(f"returns must be a 2-D array (periods × trials), got {r.ndim}-D")
    if not np.isfinite(r).all():
        raise MetricsError("returns must be finite")
    varying = r.std(axis=0) > 0
    constant = int((~varying).sum())
    m = int(varying.sum())
    if m < 2 or r.shape[0] < 3:
        return float(constant + m)
    eigenvalues = np.clip(np.linalg.eigvalsh(np.corrcoef(r[:, varying], rowvar=False)), 0, None)
    return float(constant + np.sqrt(eigenvalues).sum() ** 2 / eigenvalues.sum())


def deflated_sharpe_ratio(returns: Any, n_trials: float, sr_variance: float) -> float:
    """DSR: the PSR of ``returns`` against :func:`expected_max_sharpe` (``n_trials`` trials whose
    per-period Sharpe ratios have variance ``sr_variance``). Equals the PSR vs 0 when N = 1."""
    return probabilistic_sharpe_ratio(returns, expected_max_sharpe(n_trials, sr_variance))


# --- trade statistics ------------------------------------------------------------------------


def win_rate(net: Any) -> float:
    """Share of trades with a net return > 0 (a trade at exactly 0 is not a win); NaN if none."""
    r = _returns(net, "net")
    return float(np.mean(r > 0)) if r.size else math.nan


def profit_factor(net: Any) -> float:
    """Sum of winning net returns / |sum of losing ones|: inf with wins and no losses, 0 with
    losses and no wins, NaN with no trades or only zero-return trades."""
    r = _returns(net, "net")
    wins, losses = float(r[r > 0].sum()), float(-r[r < 0].sum())
    if losses == 0:
        return math.inf if wins > 0 else math.nan
    return wins / losses


def max_drawdown(returns: Any) -> float:
    """Largest fall of the compounded equity ``Π(1 + r)`` (starting at 1) from a previous peak, as
    a positive fraction of that peak (0.25 = a 25 % drawdown); 0 for an empty series."""
    r = _returns(returns)
    equity = np.cumprod(np.r_[1.0, 1.0 + r])
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak))


# --- backtest overfitting --------------------------------------------------------------------


def probability_of_backtest_overfitting(returns: Any, blocks: int = 16) -> float:
    """PBO by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu,
    2015). ``returns``: T × N, the per-period returns of N configurations over the same T periods.
    The periods are cut into ``blocks`` (even; fewer when T is short) contiguous blocks; for each
    half of them taken as in-sample, the configuration with the best in-sample Sharpe is ranked
    among all N by its Sharpe on the other half, ``ω = rank / (N + 1)``. PBO is the share of
    splits with ``logit(ω) < 0`` (the in-sample winner below the out-of-sample median; a tie at 0
    counts one half). A Sharpe of zero variance (a configuration that never trades) counts as 0.
    NaN for fewer than 2 configurations or fewer than 8 periods."""
    from itertools import combinations

    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise MetricsError(f"returns must be T × N, got shape {m.shape}")
    _returns(m.ravel())
    t, n = m.shape
    s = min(blocks - blocks % 2, (t // 4) * 2)
    if n < 2 or s < 2 or t < 8:
        return math.nan
    edges = np.linspace(0, t, s + 1).astype(int)
    sums = np.add.reduceat(m, edges[:-1], axis=0)
    squares = np.add.reduceat(m * m, edges[:-1], axis=0)
    counts = np.diff(edges).astype(np.float64)
    chosen = np.array(
        [[b in c for b in range(s)] for c in combinations(range(s), s // 2)], dtype=np.float64
    )

    def block_sharpe(weights: np.ndarray) -> np.ndarray:
        k = weights @ counts
        mean = (weights @ sums) / k[:, None]
        var = ((weights @ squares) - k[:, None] * mean**2) / (k[:, None] - 1)
        out = np.zeros_like(mean)
        np.divide(mean, np.sqrt(np.maximum(var, 0)), out=out, where=var > 1e-24)
        return out

    inside, outside = block_sharpe(chosen), block_sharpe(1.0 - chosen)
    best = np.argmax(inside, axis=1)
    winner = outside[np.arange(best.size), best][:, None]
    rank = (outside < winner).sum(axis=1) + 0.5 * ((outside == winner).sum(axis=1) - 1) + 1
    omega = rank / (n + 1)
    logit = np.log(omega / (1 - omega))
    return float(np.mean(logit < 0) + 0.5 * np.mean(logit == 0))
