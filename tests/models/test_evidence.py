"""The gate's evidence is the training run's hashed evaluation, never the version's tags: forged
tags refuse the version, an altered or missing evaluation.json refuses it, numbers are compared at
full precision, and an honest version with the evidence is still crowned."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.config import Settings
from core.store import CandleStore
from models.evidence import (
    EVALUATION_ARTIFACT,
    EVALUATION_DIGEST,
    evaluation_bytes,
    evidence,
    prior_trials,
    sha256,
    tag_disagreements,
    tag_text,
)
from models.recording import record_training
from models.registry import CHAMPION, Reviewer, alias_version
from models.tracking import setup
from models.training import train_dataset
from tests.models.conftest import Trained

NAME = "candleflow.BTCUSD.1h"
# What a training would need to show to pass the default gate (no champion yet).
GOOD = {
    "oos_dsr": 0.99,
    "oos_roc_auc": 0.6,
    "oos_trades": 100.0,
    "oos_sharpe_annual": 3.0,
    "oos_bh_sharpe_annual": 0.1,
    "oos_days": 400.0,
}


def _record(trained: Trained, home: Path, **metrics: float) -> tuple[Settings, MlflowClient]:
    """v1 in a fresh registry, recorded honestly, its training having shown ``metrics``."""
    result = dataclasses.replace(trained.result, metrics=trained.result.metrics | metrics)
    record_training(result, trained.cfg, trained.dataset, home)
    return trained.settings.model_copy(update={"home": home}), setup(home)


def _evaluation_path(client: MlflowClient, run_id: str) -> Path:
    """The stored evaluation.json itself (a local artifact store)."""
    return Path(urlparse(client.get_run(run_id).info.artifact_uri).path) / EVALUATION_ARTIFACT


def test_the_evaluation_digest_is_a_run_param_that_cannot_change(
    trained: Trained, tmp_path: Path
) -> None:
    _, client = _record(trained, tmp_path)
    mv = client.get_model_version(NAME, "1")
    data = _evaluation_path(client, mv.run_id).read_bytes()
    logged = client.get_run(mv.run_id).data.params[EVALUATION_DIGEST]
    assert logged == sha256(data) == mv.tags[EVALUATION_DIGEST]
    assert evaluation_bytes(json.loads(data)) == data  # canonical: the same bytes again
    with pytest.raises(MlflowException):
        client.log_param(mv.run_id, EVALUATION_DIGEST, "0" * 64)


def test_forged_tags_on_a_rejected_model_never_promote(trained: Trained, tmp_path: Path) -> None:
    settings, client = _record(trained, tmp_path)
    reviewer = Reviewer(settings, client)
    assert not reviewer.review("BTCUSD", "1h").promoted  # the real evidence is not enough
    for key, value in GOOD.items():  # as done in the MLflow UI
        client.set_model_version_tag(NAME, "1", key, tag_text(value))

    decision = reviewer.review("BTCUSD", "1h")
    assert not decision.promoted and decision.kind == "gate"
    check = decision.checks[0]
    real = trained.result.metrics["oos_dsr"]
    assert check.name == "evidence" and not check.passed
    assert f"oos_dsr: tag 0.99, run {real!r}" in check.message
    assert check.message.endswith("tags were edited; the gate reads the run")
    assert decision.reasons[0] == check.message
    dsr = next(c for c in decision.checks if c.name == "dsr")  # judged on the run's number
    assert not dsr.passed and dsr.value == (real if math.isfinite(real) else None)
    tags = client.get_model_version(NAME, "1").tags
    assert tags["decision"] == "rejected" and "tags were edited" in tags["decision_reasons"]
    assert alias_version(client, NAME, CHAMPION) is None


def test_an_altered_or_missing_evaluation_is_refused(trained: Trained, tmp_path: Path) -> None:
    settings, client = _record(trained, tmp_path)
    run_id = client.get_model_version(NAME, "1").run_id
    stored = _evaluation_path(client, run_id)
    forged = json.loads(stored.read_bytes())
    forged["ensemble"] |= GOOD
    upload = tmp_path / "upload" / "evaluation.json"
    upload.parent.mkdir()
    upload.write_bytes(evaluation_bytes(forged))  # canonical bytes: only the digest can tell
    client.log_artifact(run_id, str(upload), "evaluation")
    for key, value in GOOD.items():  # tags consistent with the forged file
        client.set_model_version_tag(NAME, "1", key, tag_text(value))
    assert json.loads(stored.read_bytes())["ensemble"]["oos_dsr"] == 0.99  # re-uploaded

    reviewer = Reviewer(settings, client)
    decision = reviewer.review("BTCUSD", "1h")
    assert not decision.promoted
    (check,) = decision.checks
    assert check.name == "evidence" and "the artifact was altered; retrain it" in check.message

    stored.unlink()
    decision = reviewer.review("BTCUSD", "1h", "1")
    assert not decision.promoted
    assert f"has no {EVALUATION_ARTIFACT}: retrain it" in decision.checks[0].message
    assert alias_version(client, NAME, CHAMPION) is None


def test_numbers_are_exact_a_dsr_just_under_the_bar_fails(trained: Trained, tmp_path: Path) -> None:
    settings, client = _record(trained, tmp_path, **(GOOD | {"oos_dsr": 0.9499996}))
    assert settings.promotion.min_dsr == 0.95
    mv = client.get_model_version(NAME, "1")
    assert mv.tags["oos_dsr"] == "0.95"  # the display copy rounds: it must not decide
    numbers = evidence(client, mv)
    expected = trained.result.metrics | GOOD | {"oos_dsr": 0.9499996}
    assert numbers == {k: (v if math.isfinite(v) else None) for k, v in expected.items()}
    assert tag_disagreements(mv.tags, numbers) == []  # honest tags

    decision = Reviewer(settings, client).review("BTCUSD", "1h")
    assert not decision.promoted
    (failed,) = [c for c in decision.checks if not c.passed]
    assert failed.name == "dsr" and failed.value == 0.9499996
    n, effective = int(expected["trials_total"]), expected["trials_effective"]
    assert (
        failed.message == f"DSR (N = {n} trials ever, {effective:.1f} independent) 0.9499996 < 0.95"
    )


def test_an_honest_model_with_the_evidence_is_crowned(trained: Trained, tmp_path: Path) -> None:
    settings, client = _record(trained, tmp_path, **GOOD)
    decision = Reviewer(settings, client).review("BTCUSD", "1h")
    assert decision.promoted and decision.kind == "gate", decision.reasons
    assert decision.checks[0].name == "evidence" and decision.checks[0].passed
    assert str(alias_version(client, NAME, CHAMPION).version) == "1"
    again = Reviewer(settings, client).review("BTCUSD", "1h", "1")  # a retried review
    assert again.kind == "already_champion"


def test_tags_agree_when_they_are_the_display_copy() -> None:
    run = {"oos_dsr": 0.41034567891, "oos_trades": 42.0, "oos_psr": None}
    assert tag_disagreements({"oos_dsr": "0.410346", "oos_trades": "42"}, run) == []
    assert tag_disagreements({"oos_trades": "42.0", "oos_psr": "nan"}, run) == []
    assert tag_disagreements({"cv_roc_auc": "nan", "unrelated": "x"}, run) == []
    assert tag_disagreements({"oos_dsr": "0.41", "oos_psr": "0.9"}, run) == [
        "oos_psr: tag 0.9, run nan",  # in the order of VERSION_METRICS
        "oos_dsr: tag 0.41, run 0.41034567891",
    ]
    # A tag added by hand under the name of any number of the run claims that number too.
    assert tag_disagreements({"oos_dsr": "0.99"}, run | {"oos_dsr": 0.2}) == [
        "oos_dsr: tag 0.99, run 0.2"
    ]


def test_the_models_n_is_kept_with_its_registered_evidence(
    trained: Trained, tmp_path: Path
) -> None:
    """A lost journal never lowers N: the next training starts from the registered count."""
    _, client = _record(trained, tmp_path, trials_total=57.0)
    assert prior_trials(client, NAME) == 57
    assert prior_trials(client, "candleflow.NOPE.1h") == 0
    t = trained
    again = train_dataset(
        t.dataset,
        CandleStore(t.settings.home).read("BTCUSD", "1h"),
        t.cfg,
        tmp_path / "a-new-journal",
        prior_trials=57,
    )
    assert again.metrics["trials_total"] == 57 + again.metrics["trials"]
