"""``POST /v1/predict``: the decision ``candleflow signals`` makes on the same candle (same
probability, action, weight, tier, multiplier, order size and exits, reasons), without an order
or a ledger row; posted candles laid over the stored ones (validated like an import, the store
untouched); every refusal a 4xx with a one-line reason, never a 500."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import SignalService
from brokers.paper import PaperBroker
from core.store import CandleStore
from models.ensemble import Ensemble
from trading.ledger import Ledger
from trading.live import LiveContext, run_symbol
from trading.live_models import LiveModel

from .conftest import Champions, settings_for

PARITY_FIELDS = (
    "symbol",
    "timeframe",
    "ts",
    "status",
    "action",
    "probability",
    "weight",
    "tier",
    "position_multiplier",
    "quantity",
    "stop_loss",
    "take_profit",
    "model_version",
    "champion_kind",
    "shadow",
    "reasons",
)


def _signals_run(service: SignalService, tmp_path: Path) -> tuple[list, Ledger]:
    """What ``candleflow signals`` decides (``trading.live.run_symbol``, as its flow's task
    calls it) for the same candle, with the same settings and models, on a ledger of its own."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'signals.db'}")
    broker = PaperBroker(ledger.engine, service.settings.paper, service.settings.costs)
    store = CandleStore(service.settings.home)
    ctx = LiveContext(
        service.settings, store, ledger, broker, service.models(), broker.state(), service.clock()
    )
    return run_symbol(ctx, "BTCUSD", "1h"), ledger


def _service(world: tuple, tmp_path: Path, clock_shift: timedelta, **api) -> SignalService:
    home, live, now = world
    return SignalService(
        settings_for(home, tmp_path, **api),
        models=Champions({live.name: live}),
        clock=lambda: now + clock_shift,
    )


def test_predict_is_the_signals_decision_without_an_order_or_a_record(
    client: TestClient, service: SignalService, tmp_path: Path
) -> None:
    answer = client.post("/v1/predict", json={"symbol": "btc/usd", "timeframe": "1h"})
    assert answer.status_code == 200, answer.text
    predicted = answer.json()
    assert service.ledger.signals().is_empty() and service.ledger.orders().is_empty()

    (decided,), ledger = _signals_run(service, tmp_path)
    expected = decided.row()
    assert decided.status == "OK" and decided.order_id  # signals placed the order …
    assert predicted["order_id"] is None and predicted["would_order"]  # … predict sized it only
    assert {k: predicted[k] for k in PARITY_FIELDS} == {k: expected[k] for k in PARITY_FIELDS}
    assert predicted["action"] == "BUY" and predicted["tier"] in ("BUY", "STRONG_BUY")
    assert predicted["stop_loss"] < predicted["take_profit"]
    stored = ledger.signals().to_dicts()[0]  # the record signals keeps: the same details
    components = json.loads(stored["components"])
    assert predicted["components"] == components["components"]
    assert predicted["families"] == components["families"]
    assert predicted["explanation"] == json.loads(stored["explanation"])
    assert predicted["model_name"] == "candleflow.BTCUSD.1h"
    assert predicted["weight"] == round(components["weight"], 1)


def test_posted_candles_equal_to_the_stored_ones_change_nothing(
    client: TestClient, service: SignalService
) -> None:
    stored = service.store.read("BTCUSD", "1h").tail(3)
    rows = [r | {"ts": r["ts"].isoformat()} for r in stored.to_dicts()]
    plain = client.post("/v1/predict", json={"symbol": "BTCUSD"}).json()
    posted = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": rows}).json()
    assert posted == plain


def test_the_newest_candle_posted_is_scored_and_not_stored(world: tuple, tmp_path: Path) -> None:
    """An hour later the store is stale (409); with the candle that closed meanwhile posted, that
    candle is scored — and the store still ends where it did."""
    service = _service(world, tmp_path, timedelta(hours=1))
    client = TestClient(create_app(service.settings, service))
    last = service.store.read("BTCUSD", "1h").tail(1).to_dicts()[0]
    stale = client.post("/v1/predict", json={"symbol": "BTCUSD"})
    assert stale.status_code == 409 and stale.json()["status"] == "STALE"
    assert "last candle opened" in stale.json()["detail"]
    new = {k: last[k] * 1.001 for k in ("open", "high", "low", "close")} | {"volume": 10.0}
    new |= {"ts": (last["ts"] + timedelta(hours=1)).isoformat()}
    answer = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": [new]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["ts"].startswith((last["ts"] + timedelta(hours=1)).strftime("%Y-%m-%dT%H"))
    assert service.store.last_ts("BTCUSD", "1h") == last["ts"]
    service.close()


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"symbol": "NOPEUSD"}, 404, "unknown symbol NOPEUSD"),
        ({"symbol": "ETHUSD"}, 404, "NO_MODEL: no champion"),
        ({"symbol": "BTCUSD", "timeframe": "7x"}, 422, "timeframe"),
        ({"timeframe": "1h"}, 422, "symbol"),
        ({"symbol": "BTCUSD", "candles": [{"ts": "yesterday", "open": 1}]}, 422, "ts"),
        ({"symbol": "BTCUSD", "extra": 1}, 422, "extra"),
    ],
)
def test_refusals(client: TestClient, body: dict, code: int, words: str) -> None:
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == code, answer.text
    assert words in json.dumps(answer.json())


def _candle(service: SignalService, hours: int, **values: float) -> dict:
    last = service.store.read("BTCUSD", "1h").tail(1).to_dicts()[0]
    row = {k: last[k] for k in ("open", "high", "low", "close", "volume")} | values
    return row | {"ts": (last["ts"] + timedelta(hours=hours)).isoformat()}


def test_malformed_candles_are_refused_naming_each_reason(
    client: TestClient, service: SignalService
) -> None:
    bad = _candle(service, 0, high=1.0)  # high below open/close
    answer = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": [bad]})
    assert answer.status_code == 422
    assert "1 of 1 candle(s) refused: high below open/close (row 1)" in answer.json()["detail"]
    forming = _candle(service, 1)  # opened an hour later: still forming at the clock's time
    answer = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": [forming]})
    assert answer.status_code == 422 and "candle not closed yet" in answer.json()["detail"]
    jump = _candle(service, 0, high=1e9, close=1e9 - 1)
    answer = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": [jump]})
    assert answer.status_code == 422 and "price jump" in answer.json()["detail"]


def test_too_many_candles(world: tuple, tmp_path: Path) -> None:
    service = _service(world, tmp_path, timedelta(0), max_candles=2)
    client = TestClient(create_app(service.settings, service))
    rows = [_candle(service, -k) for k in range(3)]
    answer = client.post("/v1/predict", json={"symbol": "BTCUSD", "candles": rows})
    assert answer.status_code == 422 and "at most 2" in answer.json()["detail"]


def test_a_model_this_code_does_not_reproduce_is_a_conflict(world: tuple, tmp_path: Path) -> None:
    home, live, now = world
    meta = dict(live.ensemble.metadata, spec_hash="0" * 16)
    forged = LiveModel(
        live.name,
        "9",
        Ensemble(**{**live.ensemble.__dict__, "metadata": meta}),
        live.spec,
        live.labels,
    )
    service = SignalService(
        settings_for(home, tmp_path), models=Champions({live.name: forged}), clock=lambda: now
    )
    answer = TestClient(create_app(service.settings, service)).post(
        "/v1/predict", json={"symbol": "BTCUSD"}
    )
    assert answer.status_code == 409 and answer.json()["status"] == "SPEC_MISMATCH"
    assert answer.json()["decision"]["model_version"] == "9"


def test_body_size_and_rate_limits(world: tuple, tmp_path: Path) -> None:
    service = _service(
        world,
        tmp_path,
        timedelta(0),
        max_body_bytes=2048,
        rate_limit_per_second=0.5,
        rate_limit_burst=2,
    )
    client = TestClient(create_app(service.settings, service))
    big = {"symbol": "BTCUSD", "candles": [_candle(service, 0)] * 40}
    assert client.post("/v1/predict", json=big).status_code == 413
    assert client.post("/v1/predict", json={"symbol": "BTCUSD"}).status_code == 200
    limited = client.post("/v1/predict", json={"symbol": "BTCUSD"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200  # health is never rate limited


class _Broken:
    def get(self, name: str, alias: str) -> LiveModel | None:
        raise OSError("artifact missing")


def test_a_champion_that_cannot_be_loaded_is_unavailable_not_a_traceback(
    world: tuple, tmp_path: Path
) -> None:
    home, _, now = world
    service = SignalService(settings_for(home, tmp_path), models=_Broken(), clock=lambda: now)
    answer = TestClient(create_app(service.settings, service)).post(
        "/v1/predict", json={"symbol": "BTCUSD"}
    )
    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "candleflow.BTCUSD.1h: the champion cannot be loaded (artifact missing)"
    }


def test_an_order_in_flight_is_exposure_for_the_next_prediction(
    client: TestClient, service: SignalService
) -> None:
    """The paper account's pending orders count, as in a live run: a second order on the symbol
    is refused by the risk layer, and the prediction says so (the signal itself is unchanged)."""
    first = client.post("/v1/predict", json={"symbol": "BTCUSD"}).json()
    broker = PaperBroker(service.ledger.engine, service.settings.paper, service.settings.costs)
    ctx = LiveContext(
        service.settings,
        service.store,
        service.ledger,
        broker,
        service.models(),
        broker.state(),
        service.clock(),
    )
    run_symbol(ctx, "BTCUSD", "1h")  # places BTCUSD's order
    service._account = None  # the snapshot is read again (it is kept ACCOUNT_TTL_SECONDS)
    second = client.post("/v1/predict", json={"symbol": "BTCUSD"}).json()
    assert first["would_order"] and not second["would_order"]
    assert (second["weight"], second["tier"]) == (first["weight"], first["tier"])
    assert len(second["reasons"]) > len(first["reasons"])


def test_each_new_candle_is_scored_once_through_the_feature_streams(
    world: tuple, tmp_path: Path
) -> None:
    """The service keeps the newest candle's features up to date one candle at a time and
    scores a candle once however often it is asked: as candles arrive in its store, each
    prediction is the decision ``candleflow signals`` makes on the same candle (features equal
    to its rebuilt tail's within what the tail forgets, so the same action, tier and size);
    asked again on the same candle, the same answer from the first scoring."""
    home, live, now = world
    candles = CandleStore(home).read("BTCUSD", "1h")
    own = tmp_path / "home"
    store = CandleStore(own)
    store.upsert("BTCUSD", "1h", candles.head(-3))
    settings = settings_for(home, tmp_path).model_copy(update={"home": own})
    clock = [now - timedelta(hours=3)]
    service = SignalService(settings, Champions({live.name: live}), clock=lambda: clock[0])
    for k in (3, 2, 1):
        answers = [service.predict("BTCUSD", "1h").report.row() for _ in range(2)]
        assert answers[0] == answers[1]  # the second from the first scoring
        (decided,), _ = _signals_run(service, tmp_path / f"run{k}")
        expected = decided.row()
        assert abs(answers[0]["probability"] - expected["probability"]) < 1e-9
        fields = ("ts", "status", "action", "tier", "position_multiplier", "quantity")
        assert {f: answers[0][f] for f in fields} == {f: expected[f] for f in fields}
        store.upsert("BTCUSD", "1h", candles.slice(candles.height - k, 1))  # the next closes
        clock[0] += timedelta(hours=1)
    assert service.memo.hits == 3
    assert service.features.restarts == 0
    service.close()
