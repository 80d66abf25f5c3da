"""The read endpoints (the ledger's signals, the registry's models), API keys, the Prometheus
metrics and the OpenAPI docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.app import create_app
from api.service import SignalService
from brokers.paper import PaperBroker
from trading.live import LiveContext, run_symbol

from .conftest import KEY, Champions, settings_for


def _live_run(service: SignalService) -> None:
    """A live run records BTCUSD's signal (and places its order) in the service's ledger."""
    broker = PaperBroker(service.ledger.engine, service.settings.paper, service.settings.costs)
    ctx = LiveContext(
        service.settings,
        service.store,
        service.ledger,
        broker,
        service.models(),  # type: ignore[arg-type]
        broker.state(),
        service.clock(),
    )
    run_symbol(ctx, "BTCUSD", "1h")


def test_signals_from_the_ledger_filtered(client: TestClient, service: SignalService) -> None:
    assert client.get("/v1/signals").json() == []
    _live_run(service)
    (row,) = client.get("/v1/signals").json()
    assert (row["symbol"], row["status"], row["action"]) == ("BTCUSD", "OK", "BUY")
    assert row["components"]["champion_kind"] == "gate"  # decoded, not JSON text
    assert client.get("/v1/signals/btc-usd", params={"action": "BUY"}).json() == [row]
    assert client.get("/v1/signals/BTCUSD", params={"action": "FLAT"}).json() == []
    later = row["ts"][:4] + "-12-31T00:00:00Z"
    assert client.get("/v1/signals", params={"since": "2099-01-01T00:00:00Z"}).json() == []
    assert len(client.get("/v1/signals", params={"since": later, "limit": 1}).json()) <= 1
    assert client.get("/v1/signals/NOPEUSD").status_code == 404
    assert client.get("/v1/signals", params={"limit": 0}).status_code == 422
    assert client.get("/v1/signals", params={"action": "HOLD"}).status_code == 422


def test_metrics_parse_and_count(client: TestClient, service: SignalService) -> None:
    assert client.post("/v1/predict", json={"symbol": "BTCUSD"}).status_code == 200
    _live_run(service)  # an order in the ledger
    assert client.post("/v1/predict", json={"symbol": "NOPEUSD"}).status_code == 404
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    decision = (
        ("action", "BUY"),
        ("model", "candleflow.BTCUSD.1h"),
        ("status", "OK"),
        ("version", "1"),
    )
    assert samples[("candleflow_decisions_total", decision)] == 1.0
    model = (("model", "candleflow.BTCUSD.1h"),)
    assert samples[("candleflow_decision_seconds_count", model)] == 1.0
    assert samples[("candleflow_predicted_orders_total", (*model, ("side", "BUY")))] == 1.0
    route = (("kind", "not_found"), ("route", "/v1/predict"))
    assert samples[("candleflow_api_errors_total", route)] == 1.0
    ok = (("code", "200"), ("method", "POST"), ("route", "/v1/predict"))
    assert samples[("candleflow_api_requests_total", ok)] == 1.0
    assert families["candleflow_api_request_seconds"].type == "histogram"
    orders = [s for s in families["candleflow_ledger_orders"].samples if s.labels["symbol"]]
    assert [(s.labels["symbol"], s.value) for s in orders] == [("BTCUSD", 1.0)]


def test_docs_and_openapi(client: TestClient) -> None:
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page).text
        assert "cdn." not in html and "//fonts." not in html  # nothing from the internet
        src = next(s for s in re.findall(r'src="([^"]+)"', html) if s.endswith(script))
        assert src.startswith("/") and len(client.get(src).content) > 100_000  # served here
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/v1/predict", "/v1/signals", "/v1/signals/{symbol}", "/v1/models", "/healthz"}
    assert expected | {"/metrics", "/v1/webhooks/tradingview"} <= set(paths)


def test_api_keys_when_configured(world: tuple, tmp_path: Path) -> None:
    home, live, now = world
    settings = settings_for(home, tmp_path, access_keys=[SecretStr(KEY)])
    service = SignalService(settings, Champions({live.name: live}), clock=lambda: now)
    client = TestClient(create_app(settings, service))
    body = {"symbol": "BTCUSD"}
    assert client.post("/v1/predict", json=body).status_code == 401
    assert client.post("/v1/predict", json=body, headers={"X-API-Key": "x" * 24}).status_code == 403
    assert client.post("/v1/predict", json=body, headers={"X-API-Key": KEY}).status_code == 200
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/v1/signals", headers=bearer).status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert client.get("/healthz").status_code == 200  # health and metrics stay open
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("host", "keys", "refused"),
    [
        ("127.0.0.1", [], False),
        ("localhost", [], False),
        ("0.0.0.0", [], True),
        ("192.168.1.5", [], True),
        ("0.0.0.0", [KEY], False),
        ("127.0.0.1", ["short"], True),
    ],
)
def test_keys_are_required_off_the_loopback(host: str, keys: list[str], refused: bool) -> None:
    from core.config import load_settings

    api = load_settings().api.model_copy(update={"access_keys": [SecretStr(k) for k in keys]})
    assert (api.refusal(host) is not None) == refused


def test_models_from_the_registry(world: tuple, tmp_path: Path) -> None:
    """The real registry path: an MLflow model with a champion and a challenger version."""
    from mlflow.tracking import MlflowClient

    from models.tracking import setup

    home, _live, now = world
    settings = settings_for(home, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = settings.model_copy(
        update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": uri})}
    )
    client: MlflowClient = setup(settings.home, uri)
    client.create_registered_model("candleflow.BTCUSD.1h")
    for _ in range(2):
        client.create_model_version("candleflow.BTCUSD.1h", source=str(tmp_path))
    client.set_registered_model_alias("candleflow.BTCUSD.1h", "champion", "1")
    client.set_registered_model_alias("candleflow.BTCUSD.1h", "challenger", "2")
    client.set_model_version_tag("candleflow.BTCUSD.1h", "1", "oos_roc_auc", "0.61")
    service = SignalService(settings, clock=lambda: now)
    (model,) = TestClient(create_app(settings, service)).get("/v1/models").json()
    assert (model["symbol"], model["timeframe"]) == ("BTCUSD", "1h")
    versions = {v["version"]: v for v in model["versions"]}
    assert versions["1"]["aliases"] == ["champion"] and versions["2"]["aliases"] == ["challenger"]
    assert versions["1"]["oos_auc"] == pytest.approx(0.61)


def test_the_settings_stay_a_flow_parameter() -> None:
    """Prefect resolves every flow parameter by visiting it (``dict(model)`` on a pydantic model):
    a section field named ``keys`` broke every flow that takes the settings."""
    from prefect.utilities.collections import visit_collection

    from core.config import load_settings

    settings = load_settings().model_copy(deep=True)
    settings.api.access_keys = [SecretStr(KEY)]
    assert visit_collection(settings, visit_fn=lambda x: x, return_data=True) == settings
