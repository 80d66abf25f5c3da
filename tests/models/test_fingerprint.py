"""The code fingerprint: recorded with the model from the rows it was trained on, reproduced by
unchanged code from the candle store, and a changed feature function or model named when not."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import features.families
from core.store import CandleStore
from models.fingerprint import (
    REFERENCE_ROWS,
    Fingerprint,
    FingerprintError,
    load_fingerprint,
    verify,
)
from models.recording import record_training
from models.registry import load_ensemble
from models.tracking import setup
from tests.models.conftest import Trained

NAME = "candleflow.BTCUSD.1h"


@pytest.fixture(scope="module")
def recorded(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """v1 in its own registry: its stored fingerprint, the ensemble read back, its spec."""
    home = tmp_path_factory.mktemp("fingerprinted")
    record_training(trained.result, trained.cfg, trained.dataset, home)
    client = setup(home)
    ensemble = load_ensemble(NAME, "1", client)
    fp = load_fingerprint(client.get_model_version_download_uri(NAME, "1"))
    return fp, ensemble, trained.dataset.meta.feature_spec


def _verify(recorded: tuple, trained: Trained, ensemble=None) -> str | None:
    fp, stored, spec = recorded
    store = CandleStore(trained.settings.home)
    return verify(fp, ensemble or stored, spec, store, "BTCUSD", "1h")


def test_the_fingerprint_holds_the_last_rows_trained_on(recorded: tuple, trained: Trained) -> None:
    fp, ensemble, _ = recorded
    tail = trained.dataset.frame.tail(REFERENCE_ROWS)
    assert list(fp.ts) == tail["ts"].to_list()
    X = tail.select(ensemble.feature_columns).to_numpy()
    assert np.array_equal(np.array(fp.features), X)  # exact floats through JSON
    for family, p in ensemble.family_probabilities(X).items():
        assert np.array_equal(np.array(fp.probabilities[family]), p)
    assert Fingerprint.from_json(fp.to_json()) == fp
    assert fp.libraries["ta-lib"] and fp.libraries["lightgbm"]


def test_unchanged_code_reproduces_the_fingerprint(recorded: tuple, trained: Trained) -> None:
    assert _verify(recorded, trained) is None


def test_a_changed_feature_function_is_named(
    recorded: tuple, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = features.families._candle_shape

    def drifted(inputs, atr):  # a "fix" to the feature code after training
        return {k: v * (1 + 1e-7) for k, v in original(inputs, atr).items()}

    monkeypatch.setattr(features.families, "_candle_shape", drifted)
    problem = _verify(recorded, trained)
    assert problem is not None, "a changed feature passed"
    assert problem.startswith("code fingerprint differs: feature shape_body at "), problem
    assert " here, " in problem and " at training (the feature code" in problem
    assert "np.float64" not in problem  # plain numbers a person can read


def test_a_changed_model_is_named_by_family(recorded: tuple, trained: Trained) -> None:
    _, ensemble, _ = recorded
    changed = copy.deepcopy(ensemble)  # what another library version might compute
    logreg = changed.models["logreg"]
    inner = getattr(logreg, "estimator_", logreg)
    inner[-1].coef_ = inner[-1].coef_ * (1 + 1e-6)
    problem = _verify(recorded, trained, changed)
    assert problem is not None, "a changed model passed"
    assert problem.startswith("code fingerprint differs: family logreg: probability at "), problem


def test_a_reference_candle_missing_from_the_store_cannot_be_checked(
    recorded: tuple, trained: Trained, tmp_path: Path
) -> None:
    fp, ensemble, spec = recorded
    candles = CandleStore(trained.settings.home).read("BTCUSD", "1h")
    store = CandleStore(tmp_path)
    store.upsert("BTCUSD", "1h", candles.filter(candles["ts"] != fp.ts[1]))
    with pytest.raises(FingerprintError, match="has no BTCUSD 1h candle at"):
        verify(fp, ensemble, spec, store, "BTCUSD", "1h")
