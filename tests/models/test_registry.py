"""Registry side of promotion on real MLflow versions: the gate's verdict recorded as tags,
champion/previous/challenger aliases, manual promotion, rollback, aliases repaired."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from models.recording import record_training
from models.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    RegistryError,
    Reviewer,
    alias_version,
    list_models,
    load_ensemble,
    repair_aliases,
    unmet_requirements,
)
from models.tracking import setup

NAME = "candleflow.BTCUSD.1h"


def _aliases(client) -> dict[str, str | None]:
    return {
        a: (None if (v := alias_version(client, NAME, a)) is None else str(v.version))
        for a in (CHAMPION, CHALLENGER, PREVIOUS)
    }


def test_gate_manual_promotion_comparison_and_rollback(trained: tuple) -> None:
    settings, result, cfg, dataset = trained
    client = setup(settings.home)
    reviewer = Reviewer(settings, client)
    record_training(result, cfg, dataset, settings.home)  # v1 (reused if replayed)
    assert alias_version(client, NAME, CHALLENGER) is not None

    # v1 on a tiny sample cannot show a DSR of 0.95: refused, recorded, still the challenger.
    refused = reviewer.review("BTCUSD", "1h")
    assert not refused.promoted and refused.reasons and refused.reasons[0].startswith("DSR")
    tags = client.get_model_version(NAME, "1").tags
    assert tags["decision"] == "rejected" and tags["decision_reasons"].startswith("DSR")
    assert _aliases(client) == {CHAMPION: None, CHALLENGER: "1", PREVIOUS: None}

    with pytest.raises(RegistryError, match="needs a reason"):
        reviewer.promote_manually("BTCUSD", "1h", "1", " \n ")
    assert _aliases(client)[CHAMPION] is None  # refused before anything moved
    manual = reviewer.promote_manually("BTCUSD", "1h", "1", "regime shift the holdout missed")
    assert manual.kind == "manual"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["decision_kind"] == "manual" and tags["decision"] == "promoted"
    assert tags["decision_reasons"].startswith(
        "manual override (gate not applied): regime shift the holdout missed; "
        "the gate's verdict: rejected (DSR"
    )
    # The gate's own record stays on the version beside the override.
    assert tags["gate_decision"] == "rejected" and tags["gate_decision_reasons"].startswith("DSR")
    assert _aliases(client) == {CHAMPION: "1", CHALLENGER: None, PREVIOUS: None}
    assert reviewer.review("BTCUSD", "1h").kind == "no_challenger"

    other = dataclasses.replace(cfg, threshold=0.6)
    record_training(result, other, dataset, settings.home)  # v2
    compared = reviewer.review("BTCUSD", "1h")
    assert compared.version == "2" and compared.champion_version == "1"
    champion_check = next(c for c in compared.checks if c.name == "champion")
    assert "vs champion v1 on the same" in champion_check.message
    assert not compared.promoted

    reviewer.promote_manually("BTCUSD", "1h", "2", "test")
    assert _aliases(client) == {CHAMPION: "2", CHALLENGER: None, PREVIOUS: "1"}
    rolled = reviewer.rollback("BTCUSD", "1h")
    assert rolled.kind == "rollback" and rolled.champion_version == "2"
    assert _aliases(client) == {CHAMPION: "1", CHALLENGER: None, PREVIOUS: "2"}
    assert client.get_model_version(NAME, "2").tags["decision"] == "rolled back"

    (listed,) = list_models(client)
    assert listed["symbol"] == "BTCUSD" and listed["last_decision"].startswith("BTCUSD 1h v1")
    assert [v["aliases"] for v in listed["versions"]] == [[CHAMPION], [PREVIOUS]]
    with pytest.raises(RegistryError, match="no version 9"):
        reviewer.promote_manually("BTCUSD", "1h", "9", "test")


def test_unmet_requirements_name_what_differs() -> None:
    from importlib import metadata

    here = metadata.version("numpy")
    text = f"# pins\nnumpy=={here}\nscikit-learn==0.0.1\nno-such-package-x==1.0\n\n"
    assert unmet_requirements(text) == [
        f"scikit-learn==0.0.1 (here: {metadata.version('scikit-learn')})",
        "no-such-package-x==1.0 (here: not installed)",
    ]


def test_the_ensemble_read_directly_is_the_pyfunc_s(
    trained: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    import models.registry as registry

    settings, result, cfg, dataset = trained
    record_training(result, cfg, dataset, settings.home)  # v1 (reused if recorded)
    setup(settings.home)
    direct = load_ensemble(NAME, "1")
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1").unwrap_python_model().ensemble
    X = np.random.default_rng(0).normal(size=(5, len(direct.feature_columns)))
    assert direct.feature_columns == served.feature_columns
    for name, p in direct.family_probabilities(X).items():
        np.testing.assert_array_equal(p, served.family_probabilities(X)[name])
    monkeypatch.setattr(registry, "ENSEMBLE_ARTIFACT", "artifacts/elsewhere.joblib")
    assert load_ensemble(NAME, "1").feature_columns == direct.feature_columns  # via the pyfunc


def test_the_review_repairs_aliases_a_crash_left_inconsistent(trained: tuple, tmp_path) -> None:
    """A promotion cut short left v1 champion and challenger; a damaged registry left an alias
    naming a version that does not exist (which made every alias lookup raise)."""
    settings, result, cfg, dataset = trained
    record_training(result, cfg, dataset, tmp_path)  # v1, challenger
    client = setup(tmp_path)
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    client.set_registered_model_alias(NAME, PREVIOUS, "1")
    with sqlite3.connect(tmp_path / "mlflow" / "mlflow.db") as db:
        db.execute("UPDATE registered_model_aliases SET version = 9 WHERE alias = 'previous'")
    with pytest.raises(MlflowException):
        alias_version(client, NAME, PREVIOUS)

    decision = Reviewer(settings, client).review("BTCUSD", "1h")
    assert decision.kind == "no_challenger"  # v1 is champion: nothing left to review
    assert _aliases(client) == {CHAMPION: "1", CHALLENGER: None, PREVIOUS: None}
    note = client.get_registered_model(NAME).tags["alias_repair"]
    assert "previous named v9, which does not exist" in note
    assert "v1 was champion and challenger" in note
    assert repair_aliases(client, NAME) == []  # consistent now
