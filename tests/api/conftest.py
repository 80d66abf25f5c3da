"""A trained champion for the API tests, without Prefect or MLflow: a logistic regression on 330
days of the simulated BTCUSD market (as ``tests/trading/test_live.py``), served from a stand-in
of the registry's model cache, with the clock set 5 minutes after the newest candle closed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.service import SignalService
from core.config import Settings, load_settings
from core.feature_spec import FeatureSpec
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.ensemble import Ensemble
from models.tuning import fit
from tests.features.test_features import market
from trading.live_models import LiveModel

SECRET = "tv-secret-0123456789"
KEY = "api-key-0123456789abcdef"


class Champions:
    """The registry's model cache, reduced to what the decision path asks of it."""

    def __init__(self, models: dict[str, LiveModel]) -> None:
        self.models = models

    def get(self, name: str, alias: str) -> LiveModel | None:
        return self.models.get(name) if alias == "champion" else None


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LiveModel, datetime]:
    """The store's home, BTCUSD's champion, and a time 5 minutes after its newest candle."""
    home = tmp_path_factory.mktemp("api-home")
    settings = load_settings(home=home)
    store = CandleStore(home)
    store.upsert("BTCUSD", "1h", market("BTCUSD", days=330))
    inputs = load_inputs(store, "BTCUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    frame, columns = dataset.frame, dataset.meta.feature_columns
    X = frame.select(columns).to_numpy()
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    model = fit("logreg", {"C": 0.03}, X, y, seed=1, n_threads=1)
    ensemble = Ensemble(
        {"logreg": model},
        {"logreg": 1.0},
        columns,
        threshold=0.01,  # every bar votes BUY: the risk layer sizes an order
        min_agree=1,
        metadata=dataset.meta.model_metadata(),
    )
    spec = FeatureSpec.model_validate(ensemble.metadata["feature_spec"])
    live = LiveModel("candleflow.BTCUSD.1h", "1", ensemble, spec, settings.labels)
    now = store.last_ts("BTCUSD", "1h") + timedelta(hours=1, minutes=5)
    return home, live, now


def settings_for(home: Path, tmp_path: Path, **api: object) -> Settings:
    """The settings of a test: the shared store, a ledger of its own, ``api`` overrides."""
    settings = load_settings(home=home)
    live = settings.live.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'live.db'}"})
    signals = settings.signals.model_copy(update={"avoid_regime_below": 0.0})
    update = {"webhook_secret": SecretStr(SECRET), "rate_limit_per_second": 0.0} | api
    return settings.model_copy(
        update={"live": live, "signals": signals, "api": settings.api.model_copy(update=update)}
    )


@pytest.fixture
def service(world: tuple, tmp_path: Path) -> Iterator[SignalService]:
    home, live, now = world
    svc = SignalService(
        settings_for(home, tmp_path),
        models=Champions({live.name: live}),
        registry=lambda: [{"model": live.name, "versions": [{"aliases": ["champion"]}]}],
        clock=lambda: now,
    )
    yield svc
    svc.close()


@pytest.fixture
def client(service: SignalService) -> Iterator[TestClient]:
    with TestClient(create_app(service.settings, service), raise_server_exceptions=False) as c:
        yield c
