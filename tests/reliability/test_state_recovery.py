"""Self-healing model state. A crash injected at an exact point (a monkeypatch that raises where a
kill would land: mid-journal append, after register before alias, mid-promotion) and then a re-run
that must end consistent; a state directory copied (the copy never writes into its original) and
moved (its champion still loads)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend

from core.store import CandleStore
from features.dataset import load_inputs
from models.recording import record_training
from models.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    Reviewer,
    alias_version,
    load_ensemble,
)
from models.tracking import setup
from models.training import train_dataset
from models.tuning import journal_trials
from tests.models.conftest import Trained, trained  # noqa: F401 (the fixture)

NAME = "candleflow.BTCUSD.1h"


class Killed(BaseException):
    """What a kill looks like to the code it lands in: nothing after it runs."""


def _aliases(client: MlflowClient) -> dict[str, str | None]:
    return {
        a: (None if (v := alias_version(client, NAME, a)) is None else str(v.version))
        for a in (CHAMPION, CHALLENGER, PREVIOUS)
    }


def _intact_trials(journal: Path) -> int:
    """Trials whose creation was written whole (read as Optuna's journal format)."""
    count = 0
    for line in journal.read_bytes().split(b"\n"):
        try:
            count += json.loads(line).get("op_code") == 4  # create trial
        except ValueError:
            continue
    return count


def test_a_kill_mid_journal_append_leaves_a_journal_the_next_training_repairs(
    trained: Trained,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, _, cfg, dataset = trained
    cfg = dataclasses.replace(cfg, workers=1)  # in this process, where the kill is planted
    candles = load_inputs(CandleStore(settings.home), "BTCUSD", "1h", settings.features).candles
    append, calls = JournalFileBackend.append_logs, []

    def torn_append(self: JournalFileBackend, logs: list[dict]) -> None:
        calls.append(len(logs))
        if len(calls) < 12:
            return append(self, logs)
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with open(self._file_path, "ab") as f:
            f.write(text.encode()[: len(text) // 2])  # the kill lands mid-write
        raise Killed

    monkeypatch.setattr(JournalFileBackend, "append_logs", torn_append)
    with pytest.raises(Killed):
        train_dataset(dataset, candles, cfg, tmp_path)
    monkeypatch.undo()
    journal = tmp_path / "BTCUSD_1h.journal"
    torn = journal.read_bytes()
    assert not torn.endswith(b"\n")
    intact = torn[: torn.rfind(b"\n") + 1]  # every operation written whole before the kill
    assert _intact_trials(journal) >= 1

    with caplog.at_level(logging.WARNING, logger="models.tuning"):
        again = train_dataset(dataset, candles, cfg, tmp_path)
    assert any(str(journal) in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)
    assert journal.read_bytes().startswith(intact)  # kept, and the torn bytes gone
    n = journal_trials(journal).n
    assert n == again.metrics["trials_total"] == len(cfg.families) * cfg.trials


def test_a_crash_after_register_before_alias_ends_consistent_on_rerun(
    trained: Trained,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, result, cfg, dataset = trained

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", killed)
    with pytest.raises(Killed):
        record_training(result, cfg, dataset, tmp_path)
    monkeypatch.undo()
    client = setup(tmp_path)
    (registered,) = client.search_model_versions(f"name='{NAME}'")
    assert _aliases(client) == {CHAMPION: None, CHALLENGER: None, PREVIOUS: None}

    again = record_training(result, cfg, dataset, tmp_path)
    assert again.reused and again.version == str(registered.version) == "1"
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1
    assert _aliases(client) == {CHAMPION: None, CHALLENGER: "1", PREVIOUS: None}
    assert client.get_run(again.run_id).info.status == "FINISHED"


def test_a_crash_mid_promotion_is_repaired_by_the_next_review(
    trained: Trained,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, result, cfg, dataset = trained
    record_training(result, cfg, dataset, tmp_path)  # v1
    record_training(result, dataclasses.replace(cfg, threshold=0.6), dataset, tmp_path)  # v2
    client = setup(tmp_path)
    reviewer = Reviewer(settings, client)
    reviewer.promote_manually("BTCUSD", "1h", "1", "first champion")

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    # Between moving the champion and removing the promoted version's challenger alias.
    monkeypatch.setattr(MlflowClient, "delete_registered_model_alias", killed)
    with pytest.raises(Killed):
        reviewer.promote_manually("BTCUSD", "1h", "2", "regime shift")
    monkeypatch.undo()
    assert _aliases(client) == {CHAMPION: "2", CHALLENGER: "2", PREVIOUS: "1"}  # the crash hit
    assert client.get_model_version(NAME, "2").tags["decision_kind"] == "manual"  # recorded first

    decision = reviewer.review("BTCUSD", "1h")
    assert decision.kind == "no_challenger"
    assert _aliases(client) == {CHAMPION: "2", CHALLENGER: None, PREVIOUS: "1"}
    assert (
        "v2 was champion and challenger" in client.get_registered_model(NAME).tags["alias_repair"]
    )
    rolled = reviewer.rollback("BTCUSD", "1h")  # the repaired aliases work on
    assert rolled.version == "1" and _aliases(client)[CHAMPION] == "1"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_copied_home_never_writes_into_its_original_and_a_moved_home_loads(
    trained: Trained,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    _, result, cfg, dataset = trained
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    record_training(result, cfg, dataset, a)  # v1
    shutil.copytree(a, b)
    before = _snapshot(a)

    second = record_training(result, dataclasses.replace(cfg, threshold=0.6), dataset, b)
    assert second.version == "2"
    assert _snapshot(a) == before  # nothing written into the original
    artifacts = setup(b).get_run(second.run_id).info.artifact_uri
    assert artifacts.startswith(b.resolve().as_uri() + "/")

    shutil.move(a, c)
    client = setup(c)
    challenger = alias_version(client, NAME, CHALLENGER)
    assert challenger is not None and str(challenger.version) == "1"
    ensemble = load_ensemble(NAME, "1", client)
    assert ensemble.feature_columns == result.ensemble.feature_columns
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1").unwrap_python_model().ensemble
    assert served.feature_columns == ensemble.feature_columns
