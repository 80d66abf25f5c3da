"""Training one symbol × timeframe: tuning on a development period, then a walk-forward
out-of-sample record of the whole procedure — the evidence the gate reads.

Target: "a long trade entered at this bar wins" (triple-barrier label +1) against the rest.
* **Development** (the first ``training.development`` share of the events, purged and embargoed
  before the first out-of-sample event): purged K-fold, Optuna per family, ensemble weights on
  the out-of-fold probabilities. Nothing later is seen by any selection step.
* **Walk-forward**: every later event is predicted by the families refitted, with the tuned
  parameters fixed, every ``refit_every_bars`` on the events whose labels ended before the block
  (anchored, or a rolling window). The strategy's backtest of these predictions is the
  out-of-sample record (``oos_*``), deflated by every trial ever tried for the model (the
  journal of all its trainings) counted as the effective number of independent trials they
  amount to (``trials_effective``; ``oos_dsr_all_trials`` counts each as independent), and
  accompanied by the Probability of Backtest Overfitting of this training's trials.
* **The registered model** is the walk's next step: the families refitted on every event.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from core.config import Settings
from core.timeframes import parse_timeframe
from features.dataset import Dataset, DatasetMeta
from models.backtest import BacktestResult
from models.ensemble import Ensemble, fit_weights
from models.family_runs import STAGES, FamilyRun, bt, run_families
from models.metrics import (
    classification_report,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
)
from models.parallel import FitPool, fit_workers
from models.splits import Fold, WalkForward, overlaps, purged_kfold, walk_forward
from models.strategy import Setup, Strategy
from models.tuning import Tuned, journal_trials
from models.zoo import blas_cap

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    families: tuple[str, ...]
    development: float
    refit_every: timedelta
    window: timedelta | None
    folds: int
    embargo: timedelta
    trials: int
    timeout: float | None
    seed: int
    threshold: float
    method: str
    min_agree: int
    n_threads: int
    strategy: Strategy
    workers: int = 1  # families fitted at once, in processes (models.parallel): speed only

    @classmethod
    def from_settings(cls, settings: Settings, symbol: str, timeframe: str) -> TrainingConfig:
        t, tf = settings.training, parse_timeframe(timeframe)
        bars = settings.labels.horizon if t.embargo_bars is None else t.embargo_bars
        window = None if t.walk_forward == "anchored" else t.window_bars * tf.duration
        return cls(
            tuple(t.families),
            t.development,
            t.refit_every_bars * tf.duration,
            window,
            t.folds,
            bars * tf.duration,
            t.trials,
            t.timeout_seconds,
            t.seed,
            t.threshold,
            t.ensemble,
            t.min_agree,
            t.n_threads,
            Strategy.from_settings(settings, symbol),
            fit_workers(t.n_threads) if t.fit_processes else 1,
        )

    def study_key(self, digest: str) -> str:
        """Everything that shapes a study's folds and objective: the data and specs (``digest``),
        the evaluation layout, folds, embargo, threshold, strategy and costs, seed."""
        budget = ("trials", "timeout", "workers")  # how long and how fast, not what is tuned
        shape = {k: v for k, v in self.__dict__.items() if k not in budget}
        text = f"{digest}|{sorted((k, repr(v)) for k, v in shape.items())}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FoldRecord:
    """A development fold or a walk-forward step, as recorded with the training."""

    kind: str  # development | walk_forward
    fold: int
    train: int
    test: int
    test_start: str
    test_end: str


@dataclass(frozen=True)
class TrainingData:
    """What a training reads: the dataset and the candles it came from (the backtest's prices)."""

    dataset: Dataset
    candles: pl.DataFrame


@dataclass
class TrainingResult:
    ensemble: Ensemble
    tuned: dict[str, Tuned]
    metrics: dict[str, float]  # the ensemble's: cv_*, oos_*, pbo, trials, trials_total, …
    family_metrics: dict[str, dict[str, float]]
    predictions: pl.DataFrame  # out-of-fold (dev) and out-of-sample probabilities per family
    oos_backtest: BacktestResult
    folds: list[FoldRecord] = field(default_factory=list)
    data_hash: str = ""
    # tuning, walk_forward, final_fit (each summed over the families), families_wall
    seconds: dict[str, float] = field(default_factory=dict)


def data_hash(dataset: Dataset) -> str:
    """Identifies the training data: every value of every row, and the specs."""
    frame, meta = dataset.frame, dataset.meta
    rows = frame.hash_rows(seed=0).sum()  # every column: features, labels, timestamps
    # The label spec as the sorted dict it was hashed as since the first release (hashes, and
    # the Optuna studies keyed by them, stay valid).
    label_spec = dict(sorted(meta.label_spec.model_dump(mode="json").items()))
    text = f"{meta.spec_hash}|{label_spec}|{frame.height}|{rows}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fold_record(ts: pl.Series, rows: np.ndarray, folds: list[Fold], kind: str) -> list[FoldRecord]:
    return [
        FoldRecord(
            kind,
            i,
            int(f.train.size),
            int(f.test.size),
            ts[int(rows[f.test[0]])].isoformat(),
            ts[int(rows[f.test[-1]])].isoformat(),
        )
        for i, f in enumerate(folds)
    ]


def _setup(cfg: TrainingConfig, meta: DatasetMeta, candles: pl.DataFrame) -> Setup:
    return Setup(cfg.strategy, candles, meta.label_spec, meta.symbol, meta.timeframe)


def _layout(frame: pl.DataFrame, cfg: TrainingConfig) -> tuple[WalkForward, list[Fold]]:
    ts, t1 = frame["ts"], frame["label_t1"]
    walk = walk_forward(
        ts, t1, cfg.development, cfg.refit_every, window=cfg.window, embargo=cfg.embargo
    )
    dev = walk.development
    folds = purged_kfold(ts.gather(dev), t1.gather(dev), cfg.folds, cfg.embargo)
    start, end = ts.dt.epoch("us").to_numpy(), t1.dt.epoch("us").to_numpy()
    # Cheap, and the one thing that must never happen: a training label meeting a test label.
    for fold in folds:
        if overlaps(start[dev], end[dev], fold.train, fold.test):
            raise AssertionError("purged folds overlap: a training label meets a test label")
    for step in walk.steps:
        if overlaps(start, end, step.train, step.test[:1]) or step.train.size == 0:
            raise AssertionError("a walk-forward step trains on a label that meets its block")
    return walk, folds


def train_dataset(
    dataset: Dataset,
    candles: pl.DataFrame,
    cfg: TrainingConfig,
    journal_dir: Path,
    prior_trials: int = 0,
) -> TrainingResult:
    """Tune, combine, walk forward, refit on everything and evaluate (module docstring).
    ``prior_trials``: the N the model's registered evidence already holds (its newest version's
    ``trials_total``), so a lost or deleted journal never lowers it."""
    FitPool(cfg.workers, cfg.n_threads).warm("models.family_runs")  # while the data is prepared
    # Every fit's BLAS cap held once for the whole training: set and lifted once, not per fit.
    with blas_cap(cfg.n_threads):
        return _train(dataset, candles, cfg, journal_dir, prior_trials)


def _train(
    dataset: Dataset,
    candles: pl.DataFrame,
    cfg: TrainingConfig,
    journal_dir: Path,
    prior_trials: int,
) -> TrainingResult:
    frame, meta = dataset.frame, dataset.meta
    X = frame.select(meta.feature_columns).to_numpy().astype(np.float64)
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    walk, folds = _layout(frame, cfg)
    setup, digest = _setup(cfg, meta, candles), data_hash(dataset)
    journal = journal_dir / f"{meta.symbol}_{meta.timeframe}.journal"
    clock = time.perf_counter()
    runs = run_families(setup, frame, X, y, walk, folds, cfg, journal, cfg.study_key(digest))
    wall = time.perf_counter() - clock
    tuned = {f: r.tuned for f, r in runs.items()}
    oof = {f: r.oof for f, r in runs.items()}
    oos_p = {f: r.oos_p for f, r in runs.items()}
    ensemble = _ensemble(runs, y[walk.development], meta, cfg)
    # Each stage's seconds summed over the families (its work), and the wall time of them all.
    seconds = {k: sum(r.seconds[k] for r in runs.values()) for k in STAGES}
    seconds["families_wall"] = wall
    journal_record = journal_trials(journal)
    n = max(journal_record.n, prior_trials + sum(t.new_trials for t in tuned.values()))
    # A lost journal never lowers N (the registered floor); its effective share stays the one
    # the trials on record show.
    share = journal_record.effective / journal_record.n if journal_record.n else 1.0
    evidence = _Evidence(
        frame,
        walk.development,
        walk.oos,
        y,
        oof,
        oos_p,
        len(walk.steps),
        n,
        n * share,
        journal_record.sharpes,
    )
    result = _evaluate(ensemble, tuned, evidence, setup, cfg)
    result.folds = _fold_record(frame["ts"], walk.development, folds, "development")
    result.folds += _fold_record(frame["ts"], np.arange(frame.height), walk.steps, "walk_forward")
    result.data_hash = digest
    result.seconds = seconds  # where the time went (bench/bench_promotion.py)
    return result


def _ensemble(
    runs: dict[str, FamilyRun], y_dev: np.ndarray, meta: DatasetMeta, cfg: TrainingConfig
) -> Ensemble:
    """The registered model: the families refitted on every event, weighted on the development
    out-of-fold probabilities."""
    oof = {f: r.oof for f, r in runs.items()}
    weights = (
        fit_weights(oof, y_dev) if cfg.method == "weighted" else {f: 1 / len(oof) for f in oof}
    )
    return Ensemble(
        {f: r.model for f, r in runs.items()},
        weights,
        list(meta.feature_columns),
        cfg.method,
        cfg.threshold,
        cfg.min_agree,
        metadata=meta.model_metadata(),
    )


@dataclass(frozen=True)
class _Evidence:
    frame: pl.DataFrame
    dev: np.ndarray
    oos: np.ndarray
    y: np.ndarray
    oof: dict[str, np.ndarray]
    oos_p: dict[str, np.ndarray]
    refits: int
    trials_total: int
    trials_effective: float
    trial_sharpes: list[float]


@dataclass(frozen=True)
class _Deflation:
    """The DSR's inputs: ``n`` every trial ever tried, ``effective`` how many independent trials
    they amount to, ``variance`` their Sharpe ratios' variance (NaN: undefined)."""

    n: int
    effective: float
    variance: float


def _deflation(e: _Evidence, tuned: dict[str, Tuned], oos_days: int) -> _Deflation:
    """N (every trial ever tried for the model, at least this training's), its effective number
    (:func:`models.tuning.journal_trials`) and the variance of the trials' daily Sharpe ratios in
    the units of the out-of-sample record: NaN when fewer than two are finite while N > 1 (the DSR
    is then undefined and the gate refuses).

    The trials were scored on the development days; the null variance of a Sharpe estimate is
    inversely proportional to its sample length (Lo 2002: ≈ (1 + SR²/2)/T), so their spread is
    rescaled by ``dev_days / oos_days`` to be the spread of Sharpe ratios measured on as many days
    as the record the DSR judges."""
    n = max(e.trials_total, sum(t.trials for t in tuned.values()))
    effective = min(max(e.trials_effective, 1.0), float(n))
    sharpes = [s for s in e.trial_sharpes if math.isfinite(s)]
    if len(sharpes) < 2:
        return _Deflation(n, effective, 0.0 if n == 1 else math.nan)
    dev_days = max((r.size for t in tuned.values() for r in t.trial_returns), default=oos_days)
    variance = float(np.var(sharpes, ddof=1)) * dev_days / max(oos_days, 1)
    return _Deflation(n, effective, variance)


def _pbo(tuned: dict[str, Tuned]) -> float:
    """PBO over this training's completed trials (their daily returns on the development set)."""
    series = [r for t in tuned.values() for r in t.trial_returns]
    if len(series) < 2:
        return math.nan
    days = min(r.size for r in series)  # the same window; a trade may end a day later
    return probability_of_backtest_overfitting(np.column_stack([r[:days] for r in series]))


def _evaluate(
    ensemble: Ensemble,
    tuned: dict[str, Tuned],
    e: _Evidence,
    setup: Setup,
    cfg: TrainingConfig,
) -> TrainingResult:
    oos_frame, dev_frame = e.frame[e.oos], e.frame[e.dev]
    result = bt(setup, oos_frame, ensemble, e.oos_p)
    deflation = _deflation(e, tuned, result.daily.height)
    dsr_all_trials = math.nan
    if math.isfinite(deflation.variance):
        result = result.deflated(deflation.effective, deflation.variance)
        returns = result.daily["ret"].to_numpy()
        dsr_all_trials = deflated_sharpe_ratio(returns, deflation.n, deflation.variance)
    dev_bt = bt(setup, dev_frame, ensemble, e.oof)
    oof_p, _ = ensemble.combine(e.oof)
    oos_ens, _ = ensemble.combine(e.oos_p)
    y_dev, y_oos = e.y[e.dev], e.y[e.oos]
    metrics = {
        **{f"cv_{k}": v for k, v in classification_report(y_dev, oof_p, cfg.threshold).items()},
        **{f"oos_{k}": v for k, v in classification_report(y_oos, oos_ens, cfg.threshold).items()},
        **{f"oos_{k}": v for k, v in result.to_dict().items()},
        "cv_sharpe_annual": dev_bt.strategy.sharpe_annual,
        "trials": float(sum(t.trials for t in tuned.values())),
        "trials_total": float(deflation.n),
        "trials_effective": deflation.effective,
        "trial_sharpe_variance": deflation.variance,
        "oos_dsr_all_trials": dsr_all_trials,
        "pbo": _pbo(tuned),
        "oos_rows": float(e.oos.size),
        "dev_rows": float(e.dev.size),
        "refits": float(e.refits),
    }
    family_metrics = {
        f: {
            "cv_auc": tuned[f].cv_auc,
            "trials": float(tuned[f].trials),
            "weight": ensemble.weights[f],
            **{
                f"oos_{k}": v
                for k, v in classification_report(y_oos, e.oos_p[f], cfg.threshold).items()
            },
        }
        for f in tuned
    }
    predictions = _predictions(e, oof_p, oos_ens)
    return TrainingResult(ensemble, tuned, _finite(metrics), family_metrics, predictions, result)


def _predictions(e: _Evidence, oof_p: np.ndarray, oos_ens: np.ndarray) -> pl.DataFrame:
    """Out-of-fold (dev) and out-of-sample probabilities per family and combined, per event."""
    return pl.concat(
        [
            pl.DataFrame(
                {
                    "ts": e.frame["ts"].gather(idx),
                    "set": name,
                    "y": e.y[idx],
                    **{f"proba_{f}": np.asarray(p[f], dtype=np.float64) for f in p},
                    "proba": np.asarray(combined, dtype=np.float64),
                }
            )
            for name, idx, p, combined in (
                ("dev", e.dev, e.oof, oof_p),
                ("oos", e.oos, e.oos_p, oos_ens),
            )
        ]
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """NaN stays NaN (undefined, e.g. no trades); ±inf (a profit factor without losses) is kept
    as a large number that every store accepts."""
    return {k: (math.copysign(1e12, v) if math.isinf(v) else float(v)) for k, v in metrics.items()}
