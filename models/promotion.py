"""The promotion gate: a challenger becomes ``champion`` only on evidence, and every decision says
why in numbers.

Checks (thresholds from ``[promotion]``), all required:

The evidence is the walk-forward out-of-sample record of the strategy as traded
(``models.training``), never a tag a person can edit (``models.evidence``).

1. ``dsr``: out-of-sample Deflated Sharpe Ratio ≥ ``min_dsr``, N = every trial ever tried for the
   model (all its trainings); undefined (fewer than 2 finite trial Sharpes while N > 1) fails;
2. ``auc``: out-of-sample ROC AUC ≥ 0.5 + ``min_auc_lift``; ``trades`` ≥ ``min_trades``;
   ``oos_days`` ≥ ``min_oos_days`` (enough days to see an edge at all);
3. ``sharpe``: net-of-cost out-of-sample Sharpe > 0; ``benchmark``: and > buy-and-hold's over
   the same window (``"flat"`` asks only > 0); ``pbo``: the Probability of Backtest Overfitting,
   reported, and a check when ``max_pbo`` is set;
4. ``champion`` (when one exists): both out-of-sample records (walk-forward net daily returns
   from each one's checked evidence) on their common days; the challenger needs the better net
   Sharpe and a paired circular block bootstrap of the two series must give P(challenger's
   Sharpe > champion's) ≥ ``confidence``.

An undefined number (NaN: e.g. no trades, so no Sharpe) fails its check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl

from core.config import PromotionSettings
from core.reports import CheckReport, PromoteReport

PERIODS_PER_YEAR = 365


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str


@dataclass(frozen=True)
class Comparison:
    """Challenger vs champion on the same window (annualised net Sharpe ratios)."""

    champion_version: str
    challenger_sharpe: float
    champion_sharpe: float
    confidence: float  # bootstrap P(challenger's Sharpe > champion's)
    days: int


@dataclass(frozen=True)
class Decision:
    symbol: str
    timeframe: str
    version: str
    promoted: bool
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None  # the champion it was compared with (or replaced)
    kind: str = "gate"  # gate | manual | rollback | already_champion
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def reasons(self) -> list[str]:
        """Why: the failed checks when refused, every check when promoted."""
        if self.kind != "gate":
            return [c.message for c in self.checks]
        failed = [c.message for c in self.checks if not c.passed]
        return failed if failed else [c.message for c in self.checks]

    @property
    def verdict(self) -> str:
        """What happened to the version, in words."""
        return {
            "manual": "promoted manually",
            "rollback": "restored by rollback",
            "already_champion": "already champion",
        }.get(self.kind, "promoted" if self.promoted else "not promoted")

    def summary(self) -> str:
        if self.kind == "no_challenger":
            return f"{self.symbol} {self.timeframe}: no challenger to review"
        reasons = "; ".join(self.reasons)
        return f"{self.symbol} {self.timeframe} v{self.version} {self.verdict}" + (
            f": {reasons}" if reasons else ""
        )

    def note(self) -> str:
        """The decision as markdown, for the description of the version's training run."""
        head = f"**{self.symbol} {self.timeframe} v{self.version} {self.verdict}** ({self.at})"
        checks = [f"- {'✔' if c.passed else '✘'} {c.message}" for c in self.checks]
        return "\n".join([head, "", *checks])

    def tags(self) -> dict[str, str]:
        """Model-version tags recording this decision."""
        return {
            "decision": "promoted" if self.promoted else "rejected",
            "decision_kind": self.kind,
            "decision_at": self.at,
            "decision_reasons": "; ".join(self.reasons)[:4900],
            "decision_checks": json.dumps([asdict(c) for c in self.checks])[:4900],
            "decision_compared_with": self.champion_version or "",
        }

    def report(self) -> PromoteReport:
        """The decision as a report row (CLI, ``--json``, artifacts)."""
        return PromoteReport(
            symbol=self.symbol,
            timeframe=self.timeframe,
            version=self.version,
            promoted=self.promoted,
            kind=self.kind,
            reasons=self.reasons,
            champion_version=self.champion_version,
            checks=[CheckReport(**asdict(c)) for c in self.checks],
            summary=self.summary(),
        )


def _value(metrics: Mapping[str, float | None], key: str) -> float:
    value = metrics.get(key)
    return float("nan") if value is None else float(value)


def _at_least(name: str, label: str, value: float, threshold: float, fmt: str = ".3f") -> Check:
    if not math.isfinite(value):
        return Check(name, False, None, threshold, f"{label} undefined (no trades?)")
    passed = value >= threshold
    op = "≥" if passed else "<"
    shown, limit = f"{value:{fmt}}", f"{threshold:{fmt}}"
    if shown == limit and value != threshold:  # e.g. 0.9499996 < 0.95 must not read 0.950 < 0.950
        shown, limit = repr(value), repr(threshold)
    return Check(name, passed, value, threshold, f"{label} {shown} {op} {limit}")


def gate(
    metrics: Mapping[str, float | None],
    settings: PromotionSettings,
    comparison: Comparison | None = None,
    comparison_error: str | None = None,
) -> list[Check]:
    """Checks 1–3 on the challenger's out-of-sample (walk-forward) evidence, and 4 from
    ``comparison`` (or the reason it could not be made)."""
    n = _value(metrics, "trials_total")
    checks = [
        _at_least("dsr", _dsr_label(metrics, settings), _dsr(metrics, settings), settings.min_dsr),
        _at_least("auc", "AUC", _value(metrics, "oos_roc_auc"), 0.5 + settings.min_auc_lift),
        _at_least("trades", "trades", _value(metrics, "oos_trades"), settings.min_trades, ".0f"),
        _at_least(
            "oos_days",
            "out-of-sample days",
            _value(metrics, "oos_days"),
            settings.min_oos_days,
            ".0f",
        ),
    ]
    if checks[0].value is None and math.isfinite(n) and n > 1:
        checks[0] = Check(
            "dsr",
            False,
            None,
            settings.min_dsr,
            f"DSR undefined: fewer than 2 finite trial Sharpe ratios among N = {n:.0f} trials",
        )
    sharpe = _value(metrics, "oos_sharpe_annual")
    checks.append(_positive_sharpe(sharpe))
    if settings.benchmark == "buy_and_hold":
        checks.append(_beats_buy_and_hold(sharpe, _value(metrics, "oos_bh_sharpe_annual")))
    checks.append(_pbo(_value(metrics, "pbo"), settings.max_pbo))
    if comparison_error is not None:
        checks.append(Check("champion", False, None, None, comparison_error))
    elif comparison is not None:
        checks.append(_beats_champion(comparison, settings.confidence))
    return checks


def _dsr(metrics: Mapping[str, float | None], settings: PromotionSettings) -> float:
    """The DSR the gate reads (``promotion.deflate_by``). Evidence recorded before effective
    trials were counted has one DSR, deflated by every trial as independent: it serves both."""
    counted = "trials_effective" in metrics
    key = "oos_dsr_all_trials" if settings.deflate_by == "all_trials" and counted else "oos_dsr"
    return _value(metrics, key)


def _dsr_label(metrics: Mapping[str, float | None], settings: PromotionSettings) -> str:
    """The DSR check's name with the N it was deflated by, e.g. "DSR (N = 40 trials ever,
    8.2 independent)"."""
    n, effective = _value(metrics, "trials_total"), _value(metrics, "trials_effective")
    if not math.isfinite(n):
        return "DSR"
    if settings.deflate_by == "all_trials" or not math.isfinite(effective):
        return f"DSR (N = {n:.0f} trials ever, each independent)"
    return f"DSR (N = {n:.0f} trials ever, {effective:.1f} independent)"


def _pbo(pbo: float, limit: float | None) -> Check:
    """The Probability of Backtest Overfitting: reported with every decision, a check only when
    ``max_pbo`` is set (trials that share one real edge rank at random out of sample, so a PBO
    near 0.5 does not by itself say the edge is false)."""
    shown = f"{pbo:.2f}" if math.isfinite(pbo) else "undefined"
    if limit is None:
        return Check("pbo", True, pbo if math.isfinite(pbo) else None, None, f"PBO {shown}")
    passed = math.isfinite(pbo) and pbo <= limit
    op = "≤" if passed else ">"
    return Check("pbo", passed, pbo, limit, f"PBO {shown} {op} {limit:.2f}")


def _positive_sharpe(sharpe: float) -> Check:
    if not math.isfinite(sharpe):
        return Check("sharpe", False, None, 0.0, "net Sharpe undefined (no trades)")
    op = ">" if sharpe > 0 else "≤"
    return Check("sharpe", sharpe > 0, sharpe, 0.0, f"net Sharpe {sharpe:.2f} {op} 0")


def _beats_buy_and_hold(sharpe: float, bh: float) -> Check:
    if not (math.isfinite(sharpe) and math.isfinite(bh)):
        return Check("benchmark", False, None, None, "Sharpe vs buy-and-hold undefined")
    passed = sharpe > bh
    op = ">" if passed else "≤"
    message = f"net Sharpe {sharpe:.2f} {op} buy-and-hold {bh:.2f}"
    return Check("benchmark", passed, sharpe, bh, message)


def _beats_champion(c: Comparison, confidence: float) -> Check:
    head = (
        f"vs champion v{c.champion_version} on the same {c.days} days: net Sharpe "
        f"{c.challenger_sharpe:.2f} vs {c.champion_sharpe:.2f}, P(better) {c.confidence:.2f}"
    )
    if not math.isfinite(c.challenger_sharpe):
        return Check("champion", False, None, confidence, head + " (challenger made no trades)")
    better = not math.isfinite(c.champion_sharpe) or c.challenger_sharpe > c.champion_sharpe
    passed = better and c.confidence >= confidence
    op = "≥" if c.confidence >= confidence else "<"
    return Check("champion", passed, c.confidence, confidence, f"{head} {op} {confidence:.2f}")


def compare(
    challenger: pl.DataFrame,
    champion: pl.DataFrame,
    champion_version: str,
    settings: PromotionSettings,
) -> Comparison:
    """Both daily net return series (``day``, ``ret``) on their common days, and the bootstrap
    confidence."""
    joined = challenger.select("day", a="ret").join(
        champion.select("day", b="ret"), on="day", how="inner"
    )
    a, b = (joined[c].to_numpy().astype(np.float64) for c in ("a", "b"))
    confidence = (
        paired_bootstrap(a, b, settings.block_days, settings.bootstrap_samples, settings.seed)
        if a.size >= 2
        else float("nan")
    )
    scale = math.sqrt(PERIODS_PER_YEAR)
    return Comparison(
        champion_version,
        _sharpe(a) * scale,
        _sharpe(b) * scale,
        confidence,
        joined.height,
    )


def _sharpe(x: np.ndarray) -> float:
    if x.size < 2 or not np.any(x):
        return float("nan")  # no trade on the window: nothing was measured
    sd = float(np.std(x, ddof=1))
    return float(np.mean(x) / sd) if sd > 0 else float("nan")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, block: int, samples: int, seed: int) -> float:
    """P(Sharpe(a) > Sharpe(b)) under a circular block bootstrap that resamples the *same* days
    for both series (keeping their correlation and, within blocks, their autocorrelation). Ties
    count one half; a series without variance in a resample has Sharpe 0 there."""
    n = a.size
    if n != b.size:
        raise ValueError(f"paired series differ in length: {n} vs {b.size}")
    if n < 2:
        return float("nan")
    block = max(1, min(block, n))
    rng = np.random.default_rng(seed)
    k = -(-n // block)
    starts = rng.integers(0, n, size=(samples, k))
    idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(samples, k * block)[:, :n]
    sa, sb = _row_sharpe(a[idx]), _row_sharpe(b[idx])
    return float(np.mean(sa > sb) + 0.5 * np.mean(sa == sb))


def _row_sharpe(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=1, ddof=1)
    mean = x.mean(axis=1)
    out = np.zeros_like(mean)
    np.divide(mean, sd, out=out, where=sd > 0)
    return out


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float | None]:
    """The evaluation numbers a registered version carries as tags (``nan`` → None), rounded to
    6 digits and editable: for display (``models list``) only. The gate reads the training run's
    hashed evaluation (``models.evidence.evidence``)."""
    out: dict[str, float | None] = {}
    for key, text in tags.items():
        if key.startswith(("oos_", "cv_")) or key == "trials":
            try:
                value = float(text)
            except ValueError:
                continue
            out[key] = value if math.isfinite(value) else None
    return out
