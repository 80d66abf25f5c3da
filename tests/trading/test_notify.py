from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, get_args

import httpx
import pytest

from core.config import Settings
from core.reports import SignalReport
from core.settings_live import LiveSettings
from models.signal import Tier
from trading.notify import TIER_RANK, NotifyReport, notify, wanted

SLACK_TOKEN = "T0001/B0002/sEcReTsLaCkToKeN"
SLACK_URL = f"https://hooks.slack.example/services/{SLACK_TOKEN}"
BOT_TOKEN = "123456:AAsEcReTbOtToKeN"
TELEGRAM_URL = f"https://api.telegram.example/bot{BOT_TOKEN}/sendMessage"
TS = datetime(2024, 3, 1, 10, tzinfo=UTC)


def _signal(symbol: str, tier: str | None, **extra: Any) -> SignalReport:
    row = {
        "symbol": symbol,
        "timeframe": "1h",
        "ts": TS,
        "action": "BUY",
        "tier": tier,
        "probability": 0.6234,
        "weight": 71.25,
        "status": "OK",
        "shadow": False,
    }
    return SignalReport(**(row | extra))


class Recorder:
    """A MockTransport handler that stores each request and answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, text="ok" if self.status < 400 else "boom")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def _settings(**values: Any) -> LiveSettings:
    return LiveSettings(**({"webhook_url": SLACK_URL} | values))


def test_slack_payload_lists_the_signals() -> None:
    recorder = Recorder()
    signals = [_signal("EURUSD", "BUY"), _signal("BTCUSD", "STRONG_BUY", weight=88.0)]
    report = notify(signals, _settings(), client=recorder.client())
    assert report == NotifyReport(sent=2, skipped=0, error=None)
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == SLACK_URL
    body = json.loads(request.content)
    assert set(body) == {"text"}
    lines = body["text"].splitlines()
    assert lines[0] == "candleflow: 2 signal(s)"
    assert lines[1] == "EURUSD 1h 2024-03-01 10:00 UTC: BUY BUY p=0.623 weight=71.2"
    assert lines[2].startswith("BTCUSD 1h 2024-03-01 10:00 UTC: BUY STRONG_BUY")
    assert "weight=88.0" in lines[2]


def test_telegram_payload_posts_chat_id_and_text() -> None:
    recorder = Recorder()
    settings = _settings(
        webhook_url=TELEGRAM_URL, webhook_format="telegram", telegram_chat_id="-10042"
    )
    report = notify([_signal("XAUUSD", "BUY", probability=None)], settings, recorder.client())
    assert report.sent == 1 and report.error is None
    [request] = recorder.requests
    assert str(request.url) == TELEGRAM_URL
    body = json.loads(request.content)
    assert body["chat_id"] == "-10042"
    line = body["text"].splitlines()[1]
    assert line == "XAUUSD 1h 2024-03-01 10:00 UTC: BUY BUY p=n/a weight=71.2"


def test_telegram_without_chat_id_is_an_error_not_a_request() -> None:
    recorder = Recorder()
    settings = _settings(webhook_url=TELEGRAM_URL, webhook_format="telegram")
    report = notify([_signal("EURUSD", "BUY")], settings, recorder.client())
    assert report.sent == 0 and "telegram_chat_id" in (report.error or "")
    assert recorder.requests == []


def test_disabled_without_url() -> None:
    recorder = Recorder()
    report = notify([_signal("EURUSD", "STRONG_BUY")], LiveSettings(), recorder.client())
    assert report == NotifyReport(sent=0, skipped=1, error=None)
    assert recorder.requests == []


def test_filters_by_tier_status_and_shadow() -> None:
    recorder = Recorder()
    signals = [
        _signal("A", "STRONG_BUY"),
        _signal("B", "BUY"),
        _signal("C", "NEUTRAL", action="FLAT"),
        _signal("D", "AVOID"),
        _signal("E", "STRONG_BUY", shadow=True),
        _signal("F", "STRONG_BUY", status="STALE"),
        _signal("G", None, status="NO_MODEL"),
    ]
    report = notify(signals, _settings(notify_min_tier="STRONG_BUY"), recorder.client())
    assert report == NotifyReport(sent=1, skipped=6)
    text = json.loads(recorder.requests[0].content)["text"]
    assert [line.split()[0] for line in text.splitlines()[1:]] == ["A"]

    report = notify(signals, _settings(notify_min_tier="NEUTRAL"), recorder.client())
    assert report == NotifyReport(sent=3, skipped=4)
    text = json.loads(recorder.requests[1].content)["text"]
    assert [line.split()[0] for line in text.splitlines()[1:]] == ["A", "B", "C"]


def test_nothing_wanted_sends_nothing() -> None:
    recorder = Recorder()
    report = notify([_signal("EURUSD", "NEUTRAL")], _settings(), recorder.client())
    assert report == NotifyReport(sent=0, skipped=1)
    assert recorder.requests == []


def test_sell_tiers_rank_with_their_buy_mirror() -> None:
    assert wanted(_signal("X", "SELL", action="SELL"), "BUY")
    assert not wanted(_signal("X", "SELL", action="SELL"), "STRONG_BUY")
    assert wanted(_signal("X", "STRONG_SELL", action="SELL"), "STRONG_BUY")
    assert wanted(_signal("X", "BUY", status=None), "BUY")  # no status: counted as OK


def test_every_tier_and_setting_value_is_ranked() -> None:
    assert set(TIER_RANK) == {t.value for t in Tier}
    min_tier = LiveSettings.model_fields["notify_min_tier"].annotation
    assert set(get_args(min_tier)) <= set(TIER_RANK)


def _raise_connect(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"cannot reach {request.url}", request=request)


def _answer_500(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, text=f"internal error handling {request.url.path}")


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [(_answer_500, "HTTP 500"), (_raise_connect, "ConnectError")],
    ids=["http-500", "connect-error"],
)
@pytest.mark.parametrize(
    ("url", "token", "extra"),
    [
        (SLACK_URL, SLACK_TOKEN, {}),
        (TELEGRAM_URL, BOT_TOKEN, {"webhook_format": "telegram", "telegram_chat_id": "7"}),
    ],
    ids=["slack", "telegram"],
)
def test_failures_are_reported_without_the_secret(
    caplog: pytest.LogCaptureFixture,
    handler: Callable[[httpx.Request], httpx.Response],
    fragment: str,
    url: str,
    token: str,
    extra: dict[str, Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    report = notify([_signal("EURUSD", "BUY")], _settings(webhook_url=url, **extra), client)
    assert report.sent == 0 and report.skipped == 0
    assert report.error is not None and fragment in report.error
    assert "<webhook-url>" in report.error  # the URL was there, and was replaced
    assert token not in report.error
    assert any("not sent" in r.getMessage() for r in caplog.records)
    assert any(r.name == "httpx" for r in caplog.records) == (handler is _answer_500)
    assert token not in caplog.text
    assert all(token not in r.getMessage() for r in caplog.records)


def test_successful_request_logs_do_not_hold_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notify([_signal("EURUSD", "BUY")], _settings(), Recorder().client())
    assert any(r.name == "httpx" and "POST" in r.getMessage() for r in caplog.records)
    assert SLACK_TOKEN not in caplog.text


def test_bad_url_form_is_reported_without_its_value() -> None:
    report = notify([_signal("EURUSD", "BUY")], _settings(webhook_url="hooks/" + SLACK_TOKEN))
    assert report.error is not None and "not an http(s) URL" in report.error
    assert SLACK_TOKEN not in report.error


def test_secret_is_masked_in_reprs_and_config_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_LIVE__WEBHOOK_URL", SLACK_URL)
    settings = Settings()
    assert settings.live.webhook_url is not None
    assert settings.live.webhook_url.get_secret_value() == SLACK_URL  # read from the environment
    assert SLACK_TOKEN not in repr(settings.live) + str(settings.live) + repr(settings)
    dumped = settings.model_dump(mode="json")  # what `candleflow config show` prints
    assert dumped["live"]["webhook_url"] == "**********"
    assert SLACK_TOKEN not in json.dumps(dumped)
    assert "webhook_url" in repr(settings.live)  # masked, not absent
