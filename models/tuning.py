"""Optuna per model family on purged folds: seeded TPE, median pruning across folds, a journal on
disk so an interrupted tuning resumes, and every trial counted (the Deflated Sharpe Ratio needs
the number tried and the spread of their Sharpe ratios, not just the winner's).

A study is named by family and a key of everything that shapes its folds and objective (data,
specs, evaluation layout, folds, embargo, threshold, strategy and costs, seed): the same data and
config resume (and, once its budget is spent, reuse) the same study, so a re-run gives the same
parameters; any change starts a new study. Every study of a model stays in its journal, so the
trials of all its trainings are counted (:func:`journal_trials`). A journal torn by a kill or a
full disk mid-append is repaired when opened (:func:`open_journal`): only the torn bytes go.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeAlias

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from sklearn.metrics import roc_auc_score

from models.family import TrainingSet
from models.metrics import effective_trials
from models.splits import Fold
from models.zoo import balanced_sample_weight, get_family

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

# Out-of-fold probabilities → the trial's daily Sharpe ratio and daily returns (the strategy's
# backtest on the development set).
SharpeOf = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class Tuned:
    family: str
    params: dict
    cv_auc: float
    trials: int  # every trial tried: complete, pruned or failed
    trial_sharpes: list[float] = field(default_factory=list)
    trial_returns: list[np.ndarray] = field(default_factory=list)  # daily, completed trials
    new_trials: int = 0  # of the trials, those tried by this call (the rest resumed)


BALANCED_ENOUGH = 0.4  # minority share at which class weights stay within 0.83–1.25: none used


def class_weights(y: np.ndarray) -> np.ndarray | None:
    """Balanced sample weights for an imbalanced target; ``None`` when the classes are close to
    even (scikit-learn 1.9's histogram GBM is ~10× slower with weights, for almost no change)."""
    share = float(np.mean(y)) if y.size else 0.5
    return None if min(share, 1 - share) >= BALANCED_ENOUGH else balanced_sample_weight(y)


def fit(family: str, params: dict, X: np.ndarray, y: np.ndarray, *, seed: int, n_threads: int):
    """A fitted model of ``family`` (class-weighted where the target is imbalanced)."""
    model = get_family(family).build(params, seed=seed, n_threads=n_threads)
    return model.fit(X, y, sample_weight=class_weights(y))


# A fold and its training set, class-weighted as fit() weights it: made once per tuning, so that
# every trial reuses what a family derives from the training set (its binning).
FoldSet: TypeAlias = tuple[Fold, TrainingSet]


def fold_sets(X: np.ndarray, y: np.ndarray, folds: list[Fold]) -> list[FoldSet]:
    """Each fold with its training set (:data:`FoldSet`)."""
    return [(f, TrainingSet(X[f.train], y[f.train], class_weights(y[f.train]))) for f in folds]


def out_of_fold(
    family: str,
    params: dict,
    X: np.ndarray,
    folds: list[FoldSet],
    *,
    seed: int,
    n_threads: int,
) -> np.ndarray:
    """Each development row predicted by the model trained on its fold's purged training set."""
    oof = np.full(X.shape[0], np.nan)
    for fold, data in folds:
        oof[fold.test] = get_family(family).fit_predict(
            data, params, X[fold.test], seed=seed, n_threads=n_threads
        )
    return oof


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else 0.5


def _objective(
    family: str,
    X: np.ndarray,
    y: np.ndarray,
    folds: list[FoldSet],
    seed: int,
    n_threads: int,
    sharpe_of: SharpeOf,
    cache: dict[int, np.ndarray],
):
    def objective(trial: optuna.Trial) -> float:
        model_family = get_family(family)
        params = model_family.suggest(trial)
        oof, aucs = np.full(y.size, np.nan), []
        for step, (fold, data) in enumerate(folds):
            oof[fold.test] = model_family.fit_predict(
                data, params, X[fold.test], seed=seed, n_threads=n_threads
            )
            aucs.append(_auc(y[fold.test], oof[fold.test]))
            trial.report(float(np.mean(aucs)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        sharpe, daily = sharpe_of(oof)
        trial.set_user_attr("sharpe", sharpe if math.isfinite(sharpe) else None)
        trial.set_user_attr("daily", [float(r) for r in daily])
        cache[trial.number] = oof
        return float(np.mean(aucs))

    return objective


def pruner() -> optuna.pruners.BasePruner:
    """Median pruning across folds: from the 4th trial on (so within the default budget of 4), a
    trial whose mean AUC after its second fold is below the median of the completed trials' at
    that fold stops there; it still counts as tried."""
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def tune(
    family: str,
    X: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    *,
    trials: int,
    timeout: float | None,
    seed: int,
    n_threads: int,
    journal: Path,
    study_name: str,
    sharpe_of: SharpeOf,
) -> tuple[Tuned, np.ndarray]:
    """Tune ``family``; return its result and the best parameters' out-of-fold probabilities."""
    storage = open_journal(journal)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner(),
    )
    cache: dict[int, np.ndarray] = {}
    sets = fold_sets(X, y, folds)
    before = len(study.trials)
    remaining = trials - before
    if remaining > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(
                _objective(family, X, y, sets, seed, n_threads, sharpe_of, cache),
                n_trials=remaining,
                timeout=timeout,
                gc_after_trial=False,
            )
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"{family}: no tuning trial completed ({len(study.trials)} tried)")
    best = study.best_trial
    oof = cache.get(best.number)
    if oof is None:  # the best trial ran in an earlier (resumed) process
        oof = out_of_fold(family, best.params, X, sets, seed=seed, n_threads=n_threads)
    sharpes = [t.user_attrs["sharpe"] for t in completed if t.user_attrs.get("sharpe") is not None]
    returns = [np.asarray(t.user_attrs["daily"]) for t in completed if "daily" in t.user_attrs]
    tuned = Tuned(
        family,
        dict(best.params),
        float(best.value),
        trials=len(study.trials),
        new_trials=len(study.trials) - before,
        trial_sharpes=sharpes,
        trial_returns=returns,
    )
    return tuned, oof


class JournalTrials(NamedTuple):
    """Every trial ever tried for a model (``n``), the finite Sharpe ratios of those that
    completed, and ``effective``: how many independent trials ``n`` amounts to."""

    n: int
    sharpes: list[float]
    effective: float


def journal_trials(journal: Path) -> JournalTrials:
    """Every trial ever tried for the model whose journal this is (all its studies: every
    training, every family, complete, pruned or failed), the finite Sharpe ratios of those that
    completed, and their effective number: the N and the spread of the Deflated Sharpe Ratio.

    The effective number is counted per training (the studies of one key share their development
    days, so their trials' daily returns line up) and summed over trainings, which counts trials
    of different trainings as independent of each other (the cautious side). Within a training,
    the completed trials' correlation gives the share of independent ones
    (:func:`effective_share`), applied to every trial tried there, pruned and failed included."""
    if not journal.exists():
        return JournalTrials(0, [], 0.0)
    storage = open_journal(journal)
    tried: dict[str, int] = {}
    returns: dict[str, list[np.ndarray]] = {}
    sharpes: list[float] = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        key = summary.study_name.partition("-")[2] or summary.study_name
        tried[key] = tried.get(key, 0) + len(trials)
        completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        sharpes += [
            float(t.user_attrs["sharpe"])
            for t in completed
            if t.user_attrs.get("sharpe") is not None
        ]
        returns.setdefault(key, []).extend(
            np.asarray(t.user_attrs["daily"], dtype=np.float64)
            for t in completed
            if "daily" in t.user_attrs
        )
    effective = sum(n * effective_share(returns.get(key, [])) for key, n in tried.items())
    return JournalTrials(sum(tried.values()), sharpes, float(effective))


def effective_share(returns: list[np.ndarray]) -> float:
    """The effective number of independent trials among these daily return series
    (:func:`models.metrics.effective_trials`, on their common first days) per series; a series
    that cannot be compared (under 3 days, non-finite) counts as independent, and fewer than two
    comparable ones give 1."""
    comparable = [r for r in returns if r.size >= 3 and np.isfinite(r).all()]
    if len(comparable) < 2:
        return 1.0
    days = min(r.size for r in comparable)  # the same window; a trade may end a day later
    matrix = np.column_stack([r[:days] for r in comparable])
    alone = len(returns) - len(comparable)  # not comparable: each counts as independent
    return (effective_trials(matrix) + alone) / len(returns)


def open_journal(journal: Path) -> JournalStorage:
    """The journal's storage, its torn lines cut first (:func:`repair_journal`)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    if journal.exists() and _torn(journal.read_bytes()):
        lock = JournalFileSymlinkLock(str(journal))  # Optuna's own: no append is under way
        lock.acquire()
        try:
            repair_journal(journal)
        finally:
            lock.release()
    return JournalStorage(JournalFileBackend(str(journal)))


_OP_START = b'{"op_code":'  # how every journal operation's line starts


def _intact(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return False


def _lines(data: bytes) -> list[bytes]:
    """The journal's lines with their newline; a last one without is torn."""
    *whole, tail = data.split(b"\n")
    return [line + b"\n" for line in whole] + ([tail] if tail else [])


def _torn(data: bytes) -> bool:
    return any(not (line.endswith(b"\n") and _intact(line)) for line in _lines(data))


def _mend(line: bytes) -> bytes:
    """What stays of one journal line: all of an intact one; of a torn one, the whole operation
    an appender wrote after it (a torn line has no newline, so the next append continued it);
    else nothing."""
    if not line.endswith(b"\n"):
        return b""
    if _intact(line):
        return line
    start = line.rfind(_OP_START)
    return line[start:] if start > 0 and _intact(line[start:]) else b""


def repair_journal(journal: Path) -> int:
    """Cut the torn lines of an Optuna journal (a kill or a full disk mid-append) and keep every
    intact operation, so no trial recorded whole is lost from the count. Optuna's readers skip
    a torn last line, but the next append continues it and from then on every read fails with a
    bare JSONDecodeError. Only the torn bytes go: every later appender saw them as absent, so
    the operations it appended after them stay as written. Returns the bytes cut (0: intact)."""
    data = journal.read_bytes()
    lines = _lines(data)
    kept = [_mend(line) for line in lines]
    if kept == lines:
        return 0
    repaired = b"".join(kept)
    tmp = journal.with_name(journal.name + ".repair")
    with open(tmp, "wb") as f:
        f.write(repaired)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, journal)
    cut = sum(1 for old, new in zip(lines, kept, strict=True) if old != new)
    logger.warning(
        "Optuna journal %s was torn (a kill or a full disk mid-append): cut %d byte(s) from %d"
        " line(s), kept %d intact operation(s)",
        journal,
        len(data) - len(repaired),
        cut,
        sum(1 for line in kept if line),
    )
    return len(data) - len(repaired)
