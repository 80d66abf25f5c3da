"""Tuning's journal: a line torn by a kill or a full disk mid-append is cut when the journal is
opened, with a warning naming the file, and every intact trial is still counted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from models.splits import Fold
from models.tuning import journal_trials, repair_journal, tune


def _tune(journal: Path, trials: int, study: str = "logreg-a") -> int:
    """A tiny logreg tuning into ``journal``; the number of trials its study holds."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=120) > 0).astype(np.int8)
    idx = np.arange(120)
    folds = [Fold(idx[idx >= 60], idx[idx < 60]), Fold(idx[idx < 60], idx[idx >= 60])]
    tuned, _ = tune(
        "logreg",
        X,
        y,
        folds,
        trials=trials,
        timeout=None,
        seed=7,
        n_threads=1,
        journal=journal,
        study_name=study,
        sharpe_of=lambda p: (float(np.mean(p)), np.zeros(3)),
    )
    return tuned.trials


def test_a_torn_tail_is_cut_with_a_warning_and_intact_trials_stay_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "BTCUSD_1h.journal"
    assert _tune(journal, 3) == 3
    intact = journal.read_bytes()
    last = intact.splitlines(keepends=True)[-1]
    with open(journal, "ab") as f:  # a kill mid-append: half an operation, no newline
        f.write(last[: len(last) // 2])

    with caplog.at_level(logging.WARNING, logger="models.tuning"):
        n, sharpes, _ = journal_trials(journal)
    assert (n, len(sharpes)) == (3, 3)
    assert journal.read_bytes() == intact
    (record,) = [r for r in caplog.records if "torn" in r.getMessage()]
    assert str(journal) in record.getMessage()
    assert f"cut {len(last) // 2} byte(s) from 1 line(s)" in record.getMessage()

    # The journal works again: the same study resumes and tries the rest of a larger budget.
    assert _tune(journal, 5) == 5
    assert journal_trials(journal)[0] == 5


def test_a_tuning_after_a_torn_tail_works_without_a_json_error(tmp_path: Path) -> None:
    journal = tmp_path / "BTCUSD_1h.journal"
    _tune(journal, 2)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_st')
    assert _tune(journal, 2, study="logreg-b") == 2  # a second study appends after the tail
    assert journal_trials(journal)[0] == 4


def test_operations_appended_after_a_torn_line_are_kept(tmp_path: Path) -> None:
    """Today's torn journals: the next append continued the torn line, so that line holds the
    torn bytes and then a whole operation; only the torn bytes go."""
    journal = tmp_path / "BTCUSD_1h.journal"
    _tune(journal, 3)
    intact = journal.read_bytes()
    lines = intact.splitlines(keepends=True)
    torn = lines[1][:40]  # half of a trial's creation, written by a process killed meanwhile
    journal.write_bytes(b"".join([*lines[:5], torn, *lines[5:]]) + b"\x00\x00\x00\n")

    assert repair_journal(journal) == len(torn) + 4
    assert journal.read_bytes() == intact
    assert journal_trials(journal)[0] == 3
    assert repair_journal(journal) == 0  # intact: untouched


def test_an_intact_journal_is_not_rewritten(tmp_path: Path) -> None:
    journal = tmp_path / "BTCUSD_1h.journal"
    _tune(journal, 2)
    before = journal.stat().st_mtime_ns
    assert journal_trials(journal)[0] == 2
    assert journal.stat().st_mtime_ns == before


def _add_trials(journal: Path, study_name: str, series: list[np.ndarray], pruned: int = 0) -> None:
    """Completed trials carrying ``series`` as their daily returns, and ``pruned`` pruned ones."""
    import optuna

    from models.tuning import open_journal

    study = optuna.create_study(study_name=study_name, storage=open_journal(journal))
    for i, daily in enumerate(series):
        attrs = {"sharpe": float(daily.mean() / daily.std()), "daily": [float(r) for r in daily]}
        study.add_trial(
            optuna.trial.create_trial(
                params={"C": float(i + 1)},
                distributions={"C": optuna.distributions.FloatDistribution(0.1, 100.0)},
                value=0.5,
                user_attrs=attrs,
            )
        )
    for _ in range(pruned):
        study.add_trial(
            optuna.trial.create_trial(
                params={"C": 1.0},
                distributions={"C": optuna.distributions.FloatDistribution(0.1, 100.0)},
                state=optuna.trial.TrialState.PRUNED,
            )
        )


def test_the_effective_number_of_trials_is_counted_per_training(tmp_path: Path) -> None:
    """Every trial counts in N. The effective number: within one training (one study key, every
    family) the completed trials' correlation gives the independent share, applied to all tried
    there, pruned ones too; trials of different trainings add up as independent."""
    rng = np.random.default_rng(11)
    a, b, c, d = (rng.normal(0.0005, 0.01, 180) for _ in range(4))
    journal = tmp_path / "BTCUSD_1h.journal"
    # Training k1: logreg tried 4 (3 copies of one strategy and 1 pruned); hgb 2 copies of another.
    _add_trials(journal, "logreg-k1", [a, a * 2, a + 0.001], pruned=1)
    _add_trials(journal, "hgb-k1", [b, b * 3])
    # Training k2 (another split): two unrelated strategies.
    _add_trials(journal, "logreg-k2", [c, d])

    record = journal_trials(journal)
    assert record.n == 8 and len(record.sharpes) == 7
    # k1: 6 tried × 2 independent of 5 completed = 2.4; k2: 2 × 2/2 = 2.
    assert record.effective == pytest.approx(2.4 + 2.0, abs=0.1)
    assert record.effective < record.n
