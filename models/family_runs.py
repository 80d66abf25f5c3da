"""Each family's part of a training — tuned on the development events, walked forward with its
tuned parameters fixed, refitted on every event — scheduled as jobs on the fit pool
(``models.parallel``).

A family's walk-forward and final fit depend only on its own tuning, so they are submitted the
moment its tuning ends, never after every family's tuning: no core waits at a stage's barrier.
The walk-forward is cut into chunks of steps of about equal cost (a fit's cost grows with its
training rows), so the last jobs to run are short and both cores stay busy to the end. Every fit
is the one a sequential run makes (same data, parameters, seed and thread cap): the results do
not depend on the schedule.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.backtest import BacktestResult, backtest
from models.parallel import FitPool
from models.splits import Fold, WalkForward
from models.strategy import Setup, SingleFamily, Voting
from models.tuning import Tuned, fit, tune

if TYPE_CHECKING:
    from models.training import TrainingConfig

STAGES = ("tuning", "walk_forward", "final_fit")
WALK_CHUNKS = 3  # jobs per family's walk-forward

# The families' relative cost per fit on market data (hgb grows its trees in Python between its
# OpenMP loops; logreg's Newton steps are a few BLAS calls): the costliest are tuned first.
_COSTLIEST_FIRST = ("hgb", "lightgbm", "xgboost", "logreg")


@dataclass(frozen=True)
class FamilyRun:
    """One family's part of a training: tuned (its out-of-fold probabilities on the development
    events), walked forward (its out-of-sample probabilities), refitted on every event (the
    registered fit), and the seconds each stage's jobs took."""

    tuned: Tuned
    oof: np.ndarray
    oos_p: np.ndarray
    model: object
    seconds: dict[str, float]


def bt(
    setup: Setup,
    frame: pl.DataFrame,
    voting: Voting,
    probas: dict[str, np.ndarray],
    n_trials: int | None = None,
    sr_variance: float | None = None,
) -> BacktestResult:
    """The strategy's backtest of ``frame``'s events with these probabilities."""
    return backtest(
        setup,
        voting,
        frame["ts"],
        probas,
        n_trials=n_trials,
        sr_variance=sr_variance,
    )


def run_families(
    setup: Setup,
    frame: pl.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    walk: WalkForward,
    folds: list[Fold],
    cfg: TrainingConfig,
    journal: Path,
    key: str,
) -> dict[str, FamilyRun]:
    """Every configured family's :class:`FamilyRun`, in the configured order (module docstring).
    The first job to fail raises its error here; the jobs not yet started are cancelled."""
    pool, dev = FitPool(cfg.workers, cfg.n_threads), walk.development
    dev_frame, X_dev, y_dev = frame[dev], X[dev], y[dev]
    tunings: dict[Future[Any], str] = {}
    for family in sorted(cfg.families, key=_cost_rank):
        args = (family, setup, dev_frame, X_dev, y_dev, folds, cfg, journal, f"{family}-{key}")
        tunings[pool.submit(_tune, *args)] = family
    chunks: dict[str, list[Future[Any]]] = {}
    finals: dict[str, Future[Any]] = {}
    pending: set[Future[Any]] = set(tunings)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()  # a failed job raises here
                family = tunings.get(future)
                if family is None:
                    continue
                params = result[0].params
                # The longest first: the final fit (every event), then the later chunks.
                finals[family] = pool.submit(_final, family, params, X, y, cfg)
                parts = [
                    pool.submit(_walk, family, params, X[:end], y[:end], steps, cfg)
                    for steps, end in reversed(_chunks(walk.steps, WALK_CHUNKS))
                ]
                chunks[family] = parts[::-1]
                pending |= {finals[family], *parts}
    except BaseException:
        for future in [*tunings, *finals.values(), *(f for c in chunks.values() for f in c)]:
            future.cancel()
        raise
    by_family = {f: fut for fut, f in tunings.items()}
    return {
        f: _assemble(by_family[f].result(), chunks[f], finals[f].result()) for f in cfg.families
    }


def _assemble(
    tuning: tuple[Tuned, np.ndarray, float],
    chunks: list[Future[tuple[list[np.ndarray], float]]],
    final: tuple[object, float],
) -> FamilyRun:
    tuned, oof, tune_s = tuning
    walked = [c.result() for c in chunks]
    oos_p = np.concatenate([p for probas, _ in walked for p in probas])
    seconds = {"tuning": tune_s, "walk_forward": sum(s for _, s in walked), "final_fit": final[1]}
    return FamilyRun(tuned, oof, oos_p, final[0], seconds)


def _cost_rank(family: str) -> int:
    return _COSTLIEST_FIRST.index(family) if family in _COSTLIEST_FIRST else len(_COSTLIEST_FIRST)


def _chunks(steps: Sequence[Fold], n: int) -> list[tuple[list[Fold], int]]:
    """The steps in up to ``n`` runs of consecutive steps of about equal cost (their training
    rows), each with the rows it reads (``X[:end]``)."""
    cost = np.cumsum([s.train.size + s.test.size for s in steps], dtype=np.float64)
    cut = np.searchsorted(cost, cost[-1] * np.arange(1, n) / n, side="right") if steps else []
    bounds = sorted({0, *(int(c) for c in cut), len(steps)})
    runs = [list(steps[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return [(run, 1 + max(int(max(s.train.max(), s.test.max())) for s in run)) for run in runs]


def _tune(
    family: str,
    setup: Setup,
    dev_frame: pl.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    cfg: TrainingConfig,
    journal: Path,
    study_name: str,
) -> tuple[Tuned, np.ndarray, float]:
    """The family tuned by purged CV on the development events (``models.tuning.tune``); each
    trial's Sharpe ratio is the strategy's backtest of its out-of-fold probabilities."""

    def trial_result(p: np.ndarray) -> tuple[float, np.ndarray]:
        result = bt(setup, dev_frame, SingleFamily(family, cfg.threshold), {family: p})
        return result.strategy.sharpe, result.daily["ret"].to_numpy()

    clock = time.perf_counter()
    tuned, oof = tune(
        family,
        X,
        y,
        folds,
        trials=cfg.trials,
        timeout=cfg.timeout,
        seed=cfg.seed,
        n_threads=cfg.n_threads,
        journal=journal,
        study_name=study_name,
        sharpe_of=trial_result,
    )
    return tuned, oof, time.perf_counter() - clock


def _walk(
    family: str,
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    steps: list[Fold],
    cfg: TrainingConfig,
) -> tuple[list[np.ndarray], float]:
    """Each step's block predicted by the family refitted (``params`` fixed) on the events
    before it."""
    clock, probas = time.perf_counter(), []
    for step in steps:
        model = fit(
            family, params, X[step.train], y[step.train], seed=cfg.seed, n_threads=cfg.n_threads
        )
        probas.append(model.predict_proba(X[step.test])[:, 1])
    return probas, time.perf_counter() - clock


def _final(
    family: str, params: dict, X: np.ndarray, y: np.ndarray, cfg: TrainingConfig
) -> tuple[object, float]:
    """The registered fit: the family refitted on every event."""
    clock = time.perf_counter()
    model = fit(family, params, X, y, seed=cfg.seed, n_threads=cfg.n_threads)
    return model, time.perf_counter() - clock
