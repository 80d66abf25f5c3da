"""What a command does with the service's answer: no service, no answer or a refusal → it runs the
flow itself (None); a failed run → exit 1 with the reason; rows → the same reports."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import httpx
import pytest
import typer

from cli import attach
from core.attach import Service
from core.config import load_settings
from core.errors import CandleflowError, UnitsFailedError
from core.reports import SignalReport


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=tmp_path / "home")


def _service(monkeypatch, url: str = "http://127.0.0.1:9") -> None:
    monkeypatch.setattr(attach, "attached_service", lambda home: Service(url, "t" * 43, 4242))


def _answering(monkeypatch, handler) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = functools.partial(httpx.Client, transport=httpx.MockTransport(record))
    monkeypatch.setattr(httpx, "Client", client)
    return seen


def _run(settings):
    return attach.run_in_service(settings, "signals", SignalReport, ["BTCUSD"], ["1h"])


def test_no_service_no_handing(settings) -> None:
    assert _run(settings) is None


def test_switched_off_in_the_config(settings, monkeypatch) -> None:
    _service(monkeypatch)
    off = settings.orchestration.model_copy(update={"run_in_service": False})
    assert _run(settings.model_copy(update={"orchestration": off})) is None


def test_a_service_that_does_not_answer_leaves_the_run_here(settings, monkeypatch) -> None:
    _service(monkeypatch, f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    assert _run(settings) is None


def test_a_refusal_leaves_the_run_here(settings, monkeypatch, capsys) -> None:
    _service(monkeypatch)
    _answering(monkeypatch, lambda r: httpx.Response(409, json={"detail": "other settings"}))
    assert _run(settings) is None
    assert "did not take the run: other settings; running it here" in capsys.readouterr().err


def test_a_failed_run_ends_the_command(settings, monkeypatch) -> None:
    _service(monkeypatch)
    _answering(monkeypatch, lambda r: httpx.Response(500, json={"detail": "internal error"}))
    with pytest.raises(typer.Exit) as ended:
        _run(settings)
    assert ended.value.exit_code == 1


def test_the_answer_reads_back_into_reports(settings, monkeypatch) -> None:
    _service(monkeypatch)
    row = SignalReport(symbol="BTCUSD", timeframe="1h", status="NO_MODEL")
    dumped = row.fields_json()
    seen = _answering(
        monkeypatch, lambda r: httpx.Response(200, json={"outcome": "ok", "rows": [dumped]})
    )
    assert _run(settings) == [row]
    (request,) = seen
    assert request.url.path == "/v1/runs/signals"
    assert request.headers["X-Candleflow-Run-Token"] == "t" * 43

    failed = {"outcome": "units_failed", "message": "1 of 1 failed", "rows": [dumped]}
    _answering(monkeypatch, lambda r: httpx.Response(200, json=failed))
    error = _run(settings)
    assert isinstance(error, UnitsFailedError) and error.rows == [row]
    _answering(
        monkeypatch, lambda r: httpx.Response(200, json={"outcome": "error", "message": "x"})
    )
    error = _run(settings)
    assert isinstance(error, CandleflowError) and str(error) == "x"
