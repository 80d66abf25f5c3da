"""``POST /v1/webhooks/tradingview``: the shared secret (header or passphrase, never stored),
validation of the alert (ticker, action, time, timeframe), one row per alert however often
TradingView sends it, and the alerts' own hit rate once their outcome is known."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import SignalService
from trading.alerts import tradingview_timeframe

from .conftest import SECRET, Champions, settings_for

URL = "/v1/webhooks/tradingview"


def _alert(service: SignalService, **fields: object) -> dict:
    now = service.clock()
    alert = {
        "ticker": "BINANCE:BTCUSD",
        "action": "buy",
        "price": 42000.5,
        "strategy": "breakout",
        "timeframe": "60",
        "time": (now - timedelta(seconds=30)).isoformat(),
        "comment": "free field",
    }
    return alert | fields


def test_secret_missing_wrong_and_right(client: TestClient, service: SignalService) -> None:
    alert = _alert(service)
    missing = client.post(URL, json=alert)
    assert missing.status_code == 401 and "secret missing" in missing.json()["detail"]
    wrong = client.post(URL, json=alert, headers={"X-Candleflow-Secret": SECRET + "x"})
    assert wrong.status_code == 403
    assert client.post(URL, json=alert | {"passphrase": "nope"}).status_code == 403
    assert service.alerts() == []
    right = client.post(URL, json=alert, headers={"X-Candleflow-Secret": SECRET})
    assert right.status_code == 200, right.text
    assert right.json()["created"] and right.json()["symbol"] == "BTCUSD"
    by_passphrase = client.post(URL, json=_alert(service, action="sell", passphrase=SECRET))
    assert by_passphrase.status_code == 200 and by_passphrase.json()["action"] == "sell"
    stored = service.alerts()
    assert len(stored) == 2 and all("passphrase" not in a["payload"] for a in stored)
    assert {a["payload"]["comment"] for a in stored} == {"free field"}


def test_the_webhook_is_off_without_a_secret(world: tuple, tmp_path: Path) -> None:
    home, _live, now = world
    service = SignalService(
        settings_for(home, tmp_path, webhook_secret=None), Champions({}), clock=lambda: now
    )
    client = TestClient(create_app(service.settings, service))
    answer = client.post(URL, json=_alert(service, passphrase=SECRET))
    assert answer.status_code == 403 and "webhook is off" in answer.json()["detail"]


def test_the_same_alert_twice_is_stored_once(client: TestClient, service: SignalService) -> None:
    alert = _alert(service, passphrase=SECRET)
    first, again = client.post(URL, json=alert).json(), client.post(URL, json=alert).json()
    assert first["created"] and not again["created"] and again["id"] == first["id"]
    other = client.post(URL, json=alert | {"price": 42001.0}).json()
    assert other["created"] and other["id"] != first["id"]
    assert len(service.alerts()) == 2
    metrics = client.get("/metrics").text
    assert 'candleflow_alerts_total{action="buy",stored="false",symbol="BTCUSD"} 1.0' in metrics


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"ticker": "NASDAQ:NOPE"}, "NOPE is not a symbol candleflow knows"),
        ({"ticker": ""}, "ticker: missing"),
        ({"action": "hodl"}, "action 'hodl'"),
        ({"time": "2001-01-01T00:00:00Z"}, "stale alert"),
        ({"time": "next tuesday"}, "not an ISO time"),
        ({"timeframe": "7x"}, "timeframe"),
        ({"price": "cheap"}, "price 'cheap'"),
    ],
)
def test_invalid_alerts(client: TestClient, service: SignalService, fields: dict, words: str):
    answer = client.post(URL, json=_alert(service, passphrase=SECRET, **fields))
    assert answer.status_code == 422 and words in answer.json()["detail"], answer.text
    assert service.alerts() == []


def test_an_alert_that_is_not_json(client: TestClient) -> None:
    answer = client.post(URL, content=b"BTCUSD buy", headers={"X-Candleflow-Secret": SECRET})
    assert answer.status_code == 422 and "not JSON" in answer.json()["detail"]


def test_tradingview_intervals() -> None:
    assert [tradingview_timeframe(v) for v in ("60", "240", "15", "1D", "D", "1h")] == [
        "1h",
        "4h",
        "15m",
        "1d",
        "1d",
        "1h",
    ]


def test_hit_rate_of_resolved_buy_alerts(world: tuple, tmp_path: Path) -> None:
    """Alerts on old candles (accepted while recent, here by a clock set back) are judged by the
    labels' triple barrier from their candle, like the shadow report judges BUY signals."""
    home, _live, now = world
    service = SignalService(
        settings_for(home, tmp_path, webhook_max_age_seconds=86_400 * 30),
        Champions({}),
        clock=lambda: now,
    )
    client = TestClient(create_app(service.settings, service))
    from trading.shadow import known_outcomes

    candles = service.store.read("BTCUSD", "1h")
    outcomes = known_outcomes(candles, "1h", service.settings.labels).tail(200).head(20)
    for ts in outcomes["ts"]:
        alert = _alert(service, time=(ts + timedelta(minutes=1)).isoformat(), passphrase=SECRET)
        assert client.post(URL, json=alert).status_code == 200
    (rate,) = client.get("/v1/alerts/hit-rate", params={"days": 60}).json()
    wins = int((outcomes["label"] == 1).sum())
    assert (rate["alerts"], rate["buys"], rate["resolved"], rate["wins"]) == (20, 20, 20, wins)
    assert rate["hit_rate"] == pytest.approx(wins / 20)
