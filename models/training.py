"""Training one symbol × timeframe: holdout and purged folds, Optuna per family, an ensemble
weighted on out-of-fold predictions only, and an honest evaluation on the untouched holdout.

Target: "a long trade entered at this bar wins" (triple-barrier label +1) against the rest.
Every model selection step (tuning, ensemble weights, threshold) sees only the development set;
the holdout is scored once, at the end, net of costs, and its Deflated Sharpe Ratio counts every
trial of every family.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.config import Settings
from core.instruments import instrument
from core.timeframes import parse_timeframe
from models.backtest import BacktestResult, Costs, backtest
from models.ensemble import Ensemble, fit_weights
from models.metrics import classification_report
from models.splits import Fold, holdout_split, overlaps, purged_kfold
from models.tuning import Tuned, fit, tune

logger = logging.getLogger(__name__)
PERIODS_PER_YEAR = 365  # the backtest's daily series holds every calendar day


@dataclass(frozen=True)
class TrainingConfig:
    families: tuple[str, ...]
    holdout: float
    folds: int
    embargo: timedelta
    trials: int
    timeout: float | None
    seed: int
    threshold: float
    method: str
    min_agree: int
    n_threads: int
    costs: Costs

    @classmethod
    def from_settings(cls, settings: Settings, symbol: str, timeframe: str) -> TrainingConfig:
        t, tf = settings.training, parse_timeframe(timeframe)
        bars = settings.labels.horizon if t.embargo_bars is None else t.embargo_bars
        spec = settings.costs.for_symbol(symbol, instrument(symbol).asset_class.value)
        return cls(
            tuple(t.families),
            t.holdout,
            t.folds,
            bars * tf.duration,
            t.trials,
            t.timeout_seconds,
            t.seed,
            t.threshold,
            t.ensemble,
            t.min_agree,
            t.n_threads,
            Costs(spec.fee_bps, spec.spread_bps, spec.slippage_bps),
        )


@dataclass
class TrainingResult:
    ensemble: Ensemble
    tuned: dict[str, Tuned]
    metrics: dict[str, float]  # the ensemble's: cv_*, holdout_*, backtest, trials, …
    family_metrics: dict[str, dict[str, float]]
    folds: list[dict[str, Any]]  # fold boundaries, for the record
    predictions: pl.DataFrame  # out-of-fold (dev) and holdout probabilities per family + ensemble
    holdout_backtest: BacktestResult
    data_hash: str
    extra: dict[str, Any] = field(default_factory=dict)


def data_hash(frame: pl.DataFrame, metadata: dict[str, Any]) -> str:
    """Identifies the training data: every value of every row, and the specs."""
    rows = frame.hash_rows(seed=0).sum()  # every column: features, labels, timestamps
    text = f"{metadata['spec_hash']}|{metadata['label_spec']}|{frame.height}|{rows}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fold_record(ts: pl.Series, dev: np.ndarray, folds: list[Fold]) -> list[dict[str, Any]]:
    return [
        {
            "fold": i,
            "train": int(f.train.size),
            "test": int(f.test.size),
            "test_start": ts[int(dev[f.test[0]])].isoformat(),
            "test_end": ts[int(dev[f.test[-1]])].isoformat(),
        }
        for i, f in enumerate(folds)
    ]


def _bt(
    frame: pl.DataFrame,
    score: np.ndarray,
    threshold: float,
    cfg: TrainingConfig,
    candles: pl.DataFrame,
    n_trials: int | None = None,
    sr_variance: float | None = None,
) -> BacktestResult:
    return backtest(
        frame,
        score,
        threshold,
        cfg.costs,
        periods_per_year=PERIODS_PER_YEAR,
        candles=candles,
        n_trials=n_trials,
        sr_variance=sr_variance,
    )


def _split(frame: pl.DataFrame, cfg: TrainingConfig) -> tuple[np.ndarray, np.ndarray, list[Fold]]:
    ts, t1 = frame["ts"], frame["label_t1"]
    dev, hold = holdout_split(ts, t1, cfg.holdout, cfg.embargo)
    folds = purged_kfold(ts.gather(dev), t1.gather(dev), cfg.folds, cfg.embargo)
    start, end = (s.dt.epoch("us").to_numpy() for s in (ts.gather(dev), t1.gather(dev)))
    for fold in folds:  # cheap, and the one thing that must never happen
        if overlaps(start, end, fold.train, fold.test):
            raise AssertionError("purged folds overlap: a training label meets a test label")
    return dev, hold, folds


def train_dataset(
    frame: pl.DataFrame,
    metadata: dict[str, Any],
    candles: pl.DataFrame,
    cfg: TrainingConfig,
    journal_dir: Path,
) -> TrainingResult:
    """Tune, combine, refit and evaluate (see the module docstring)."""
    columns = metadata["feature_columns"]
    X = frame.select(columns).to_numpy().astype(np.float64)
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    dev, hold, folds = _split(frame, cfg)
    dev_frame, hold_frame = frame[dev], frame[hold]
    digest = data_hash(frame, metadata)

    def dev_sharpe(oof: np.ndarray) -> float:
        return _bt(dev_frame, oof, cfg.threshold, cfg, candles).strategy.sharpe

    tuned, oof = {}, {}
    for family in cfg.families:
        tuned[family], oof[family] = tune(
            family,
            X[dev],
            y[dev],
            folds,
            trials=cfg.trials,
            timeout=cfg.timeout,
            seed=cfg.seed,
            n_threads=cfg.n_threads,
            journal=journal_dir / f"{metadata['symbol']}_{metadata['timeframe']}.journal",
            study_name=f"{family}-{digest}-{cfg.seed}",
            sharpe_of=dev_sharpe,
        )
    weights = (
        fit_weights(oof, y[dev]) if cfg.method == "weighted" else {f: 1 / len(oof) for f in oof}
    )
    models, hold_p = {}, {}
    for family, result in tuned.items():
        model = fit(family, result.params, X[dev], y[dev], seed=cfg.seed, n_threads=cfg.n_threads)
        models[family], hold_p[family] = model, model.predict_proba(X[hold])[:, 1]
    ensemble = Ensemble(
        models,
        weights,
        list(columns),
        cfg.method,
        cfg.threshold,
        cfg.min_agree,
        metadata={
            k: metadata[k]
            for k in ("symbol", "timeframe", "spec_hash", "feature_spec", "label_spec")
        },
    )
    return _evaluate(
        ensemble,
        tuned,
        oof,
        hold_p,
        frame,
        dev,
        hold,
        folds,
        y,
        candles,
        cfg,
        digest,
        dev_frame,
        hold_frame,
    )


def _evaluate(
    ensemble: Ensemble,
    tuned: dict[str, Tuned],
    oof: dict[str, np.ndarray],
    hold_p: dict[str, np.ndarray],
    frame: pl.DataFrame,
    dev: np.ndarray,
    hold: np.ndarray,
    folds: list[Fold],
    y: np.ndarray,
    candles: pl.DataFrame,
    cfg: TrainingConfig,
    digest: str,
    dev_frame: pl.DataFrame,
    hold_frame: pl.DataFrame,
) -> TrainingResult:
    n_trials = sum(t.trials for t in tuned.values())
    sharpes = [s for t in tuned.values() for s in t.trial_sharpes]
    sr_variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    oof_p, _ = ensemble.combine(oof)
    hold_ens, _ = ensemble.combine(hold_p)
    score, threshold = ensemble.score(hold_p)
    result = _bt(hold_frame, score, threshold, cfg, candles, n_trials, sr_variance)
    dev_score, _ = ensemble.score(oof)
    dev_bt = _bt(dev_frame, dev_score, threshold, cfg, candles)
    metrics = {
        **{f"cv_{k}": v for k, v in classification_report(y[dev], oof_p, cfg.threshold).items()},
        **{
            f"holdout_{k}": v
            for k, v in classification_report(y[hold], hold_ens, cfg.threshold).items()
        },
        **{f"holdout_{k}": v for k, v in result.to_dict().items()},
        "cv_sharpe_annual": dev_bt.strategy.sharpe_annual,
        "trials": float(n_trials),
        "trial_sharpe_variance": sr_variance,
        "holdout_rows": float(hold.size),
        "dev_rows": float(dev.size),
    }
    family_metrics = {
        f: {
            "cv_auc": tuned[f].cv_auc,
            "trials": float(tuned[f].trials),
            "weight": ensemble.weights[f],
            **{
                f"holdout_{k}": v
                for k, v in classification_report(y[hold], hold_p[f], cfg.threshold).items()
            },
        }
        for f in tuned
    }
    predictions = pl.concat(
        [
            pl.DataFrame(
                {
                    "ts": frame["ts"].gather(idx),
                    "set": name,
                    "y": y[idx],
                    **{f"proba_{f}": np.asarray(p[f], dtype=np.float64) for f in p},
                    "proba": np.asarray(combined, dtype=np.float64),
                }
            )
            for name, idx, p, combined in (
                ("dev", dev, oof, oof_p),
                ("holdout", hold, hold_p, hold_ens),
            )
        ]
    )
    return TrainingResult(
        ensemble,
        tuned,
        _finite(metrics),
        family_metrics,
        _fold_record(frame["ts"], dev, folds),
        predictions,
        result,
        digest,
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """NaN stays NaN (undefined, e.g. no trades); ±inf (a profit factor without losses) is kept
    as a large number that every store accepts."""
    return {k: (math.copysign(1e12, v) if math.isinf(v) else float(v)) for k, v in metrics.items()}
