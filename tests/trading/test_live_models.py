"""Live models from a real MLflow registry: every signal of a champion says how it was crowned
(gate, manual, rollback), and a model whose code fingerprint this code does not reproduce (a
feature function changed after training) is refused before it trades."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

import features.families
from core.config import load_settings
from core.reports import SignalReport
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.ensemble import Ensemble
from models.fingerprint import take
from models.registry import CHAMPION, Reviewer
from models.tracking import ensure_experiment, experiment_name, log_ensemble, setup
from models.tuning import fit
from tests.features.test_features import market
from tests.trading.test_live import _context
from trading.live import run_symbol
from trading.live_models import NO_FINGERPRINT, ModelCache
from trading.scoring import OK, SPEC_MISMATCH

NAME = "candleflow.BTCUSD.1h"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """BTCUSD candles and three registered versions of one logistic model: v1 and v2 with a code
    fingerprint, v3 as registered before fingerprints existed."""
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    store = CandleStore(home)
    store.upsert("BTCUSD", "1h", market("BTCUSD", days=150))
    inputs = load_inputs(store, "BTCUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    frame, columns = dataset.frame, dataset.meta.feature_columns
    X = frame.select(columns).to_numpy()
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    ensemble = Ensemble(
        {"logreg": fit("logreg", {"C": 0.03}, X, y, seed=1, n_threads=1)},
        {"logreg": 1.0},
        columns,
        threshold=0.01,
        min_agree=1,
        metadata=dataset.meta.model_metadata(),
    )
    client = setup(home)
    experiment = ensure_experiment(client, experiment_name("BTCUSD", "1h"), home)
    example = pd.DataFrame(np.zeros((1, X.shape[1])), columns=columns)
    fingerprint = take(ensemble, frame).to_json()
    for stored in (fingerprint, fingerprint, None):
        with mlflow.start_run(experiment_id=experiment):
            info = log_ensemble(ensemble, example, stored)
            mlflow.register_model(info.model_uri, NAME)
    return settings, store, client


def _run(
    registry: tuple, tmp_path: Path, cache: ModelCache | None = None
) -> tuple[SignalReport, dict]:
    """The champion's row for the newest candle, through a model cache on the registry, and
    the components the ledger stored with it."""
    settings, store, client = registry
    tmp_path.mkdir(parents=True, exist_ok=True)
    ctx = _context(settings, store, None, tmp_path)
    ctx.cache = cache or ModelCache(client)
    (row,) = run_symbol(ctx, "BTCUSD", "1h")  # no challenger: the champion's row only
    stored = ctx.ledger.signals().row(0, named=True)
    return row, json.loads(stored["components"])


def test_every_signal_says_how_its_champion_was_crowned(registry: tuple, tmp_path: Path) -> None:
    settings, _, client = registry
    reviewer = Reviewer(settings, client)
    reviewer.promote_manually("BTCUSD", "1h", "1", "the gate cannot see this regime yet")
    cache = ModelCache(client)
    cache.refresh()
    row, stored = _run(registry, tmp_path / "a", cache)
    assert row.status == OK and row.model_version == "1", row.reasons
    assert row.champion_kind == "manual" and stored["champion_kind"] == "manual"
    assert NO_FINGERPRINT not in (row.reasons or [])  # it has one, and this code reproduces it

    reviewer.promote_manually("BTCUSD", "1h", "2", "test")
    reviewer.rollback("BTCUSD", "1h")  # v1 again, already loaded by the cache
    cache.refresh()
    row, stored = _run(registry, tmp_path / "b", cache)
    assert (row.model_version, row.champion_kind) == ("1", "rollback")
    assert stored["champion_kind"] == "rollback"
    assert cache.get(NAME, CHAMPION)._verdicts  # the code check was not made again
    uncached = ModelCache(client).get(NAME, CHAMPION)  # without refresh: read with the alias
    assert (uncached.version, uncached.champion_kind) == ("1", "rollback")


def test_a_changed_feature_function_is_refused_live(
    registry: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, client = registry
    Reviewer(settings, client).promote_manually("BTCUSD", "1h", "1", "test")
    assert _run(registry, tmp_path / "same")[0].status == OK  # unchanged code: it trades

    original = features.families._candle_shape

    def drifted(inputs, atr):  # the feature code changed after training
        return {k: v * (1 + 1e-7) for k, v in original(inputs, atr).items()}

    monkeypatch.setattr(features.families, "_candle_shape", drifted)
    row, stored = _run(registry, tmp_path / "changed")  # a fresh process: the model loads again
    assert row.status == SPEC_MISMATCH and row.order_id is None and row.reasons
    reason = row.reasons[0]
    assert reason.startswith("v1: code fingerprint differs: feature shape_body at "), reason
    assert " here, " in reason and " at training" in reason
    assert stored["reasons"] == row.reasons  # the refusal is in the ledger


def test_a_model_without_fingerprint_is_scored_and_says_so(registry: tuple, tmp_path: Path) -> None:
    settings, _, client = registry
    Reviewer(settings, client).promote_manually("BTCUSD", "1h", "3", "test")
    row, stored = _run(registry, tmp_path)
    assert row.status == OK and row.model_version == "3" and row.reasons
    assert row.reasons[-1] == NO_FINGERPRINT and NO_FINGERPRINT in stored["reasons"]
