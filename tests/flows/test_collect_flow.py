"""The collect flow end to end under Prefect: incremental and idempotent, one unit's failure does
not fail the others, transient broker errors are retried and validation errors are not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from brokers.simulated import SimulatedBroker
from core.errors import DataFormatError, TransientBrokerError, UnitsFailedError
from core.store import CandleStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def short_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "20")
    monkeypatch.setenv("CANDLEFLOW_COLLECT__RETRY_DELAY_SECONDS", "0")


def _run(**params):
    from flows.collect_candles import collect_candles

    return collect_candles(**params, return_state=True)


def test_collect_twice_is_incremental_and_adds_no_duplicates(
    short_history: None, tmp_path: Path
) -> None:
    state = _run(symbols=["EURUSD", "btc/usd"])
    assert state.is_completed()
    rows = {r.symbol: r for r in state.result()}
    assert set(rows) == {"EURUSD", "BTCUSD"}
    btc = rows["BTCUSD"]
    assert btc.error is None and btc.new == btc.rows > 20 * 24 - 2
    assert rows["EURUSD"].gaps >= 2  # weekends
    store = CandleStore(tmp_path / "home")
    first = store.read("BTCUSD", "1h")

    again = {r.symbol: r for r in _run(symbols=["EURUSD", "BTCUSD"]).result()}
    assert again["BTCUSD"].duplicated >= 3  # the overlap was re-fetched…
    assert again["BTCUSD"].new <= 1  # …and at most a newly closed candle was added
    second = store.read("BTCUSD", "1h")
    assert second["ts"].is_unique().all()
    assert second.head(first.height).equals(first)


def test_only_closed_candles_are_stored(short_history: None, tmp_path: Path) -> None:
    started = datetime.now(UTC)
    rows = _run(symbols=["BTCUSD"], timeframes=["4h"]).result()
    last = rows[0].last_ts
    assert last + timedelta(hours=4) <= datetime.now(UTC)  # closed…
    assert last + timedelta(hours=8) > started  # …and the newest closed one was stored
    assert CandleStore(tmp_path / "home").quarantine_path("BTCUSD", "4h").exists() is False


def test_naive_start_and_settings_as_parameters(short_history: None, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    state = _run(symbols=["BTCUSD"], start=start - timedelta(hours=30), overlap_bars=0)
    assert state.is_completed(), state.message
    row = state.result()[0]
    assert row.rows in (29, 30)  # from the naive (UTC) start, not 20 days of history
    assert row.first_ts == (start - timedelta(hours=30)).replace(tzinfo=UTC)


def test_configured_flow_uses_max_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import load_settings
    from flows.collect_candles import configured

    monkeypatch.setenv("CANDLEFLOW_COLLECT__MAX_WORKERS", "2")
    assert configured(load_settings()).task_runner._max_workers == 2


def test_table_artifact_is_published(short_history: None) -> None:
    from prefect.artifacts import Artifact

    _run(symbols=["XAUUSD"])
    artifact = Artifact.get("collect-report")
    assert artifact is not None and "XAUUSD" in str(artifact.data)


def test_one_unknown_symbol_fails_the_run_but_not_the_others(short_history: None) -> None:
    state = _run(symbols=["EURUSD", "NOSUCH"])
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, UnitsFailedError)
    assert str(error).startswith("1 of 2 failed: NOSUCH 1h (UnknownSymbolError")
    rows = {r.symbol: r for r in error.rows}
    assert rows["EURUSD"].error is None and rows["EURUSD"].new > 0
    assert "UnknownSymbolError" in rows["NOSUCH"].error


class _ScriptedBroker(SimulatedBroker):
    """The simulated market, failing its first calls with a given exception."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__(seed=1, edge=0.0)
        self.failures = failures
        self.calls = 0

    def _fetch_range(self, symbol, tf, start, end):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return super()._fetch_range(symbol, tf, start, end)


def test_transient_errors_are_retried(short_history: None, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _ScriptedBroker([TransientBrokerError("HTTP 503"), TimeoutError("read timeout")])
    monkeypatch.setattr("flows.collect_candles.create_broker", lambda settings: broker)
    state = _run(symbols=["BTCUSD"])
    assert state.is_completed()
    assert broker.calls == 3
    assert state.result()[0].new > 0


def test_validation_errors_are_not_retried(
    short_history: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _ScriptedBroker([DataFormatError("venue sent garbage")])
    monkeypatch.setattr("flows.collect_candles.create_broker", lambda settings: broker)
    state = _run(symbols=["BTCUSD"])
    assert state.is_failed()
    assert broker.calls == 1
    assert "venue sent garbage" in str(state.result(raise_on_failure=False))


def test_files_broker_collects_a_whole_old_file_then_only_what_is_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from importlib.resources import files

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(files("backtesting") / "test" / "EURUSD.csv", data / "EURUSD_1h.csv")
    monkeypatch.setenv("CANDLEFLOW_BROKER__NAME", "files")
    monkeypatch.setenv("CANDLEFLOW_FILES__DIRECTORY", str(data))
    row = _run(symbols=["EUR/USD"]).result()[0]
    assert row.fetched == 5000  # 2017–2018: older than history_days, still all collected
    assert (row.new, row.quarantined) == (5000, 0)  # a clean real-world file
    assert row.first_ts.year == 2017
    again = _run(symbols=["EURUSD"]).result()[0]
    assert again.new == 0 and again.fetched <= 4

    # A row the user broke later is quarantined with its file row, not dropped.
    lines = (data / "EURUSD_1h.csv").read_text().splitlines()
    lines.append("not-a-date," + lines[-1].split(",", 1)[1])
    (data / "EURUSD_1h.csv").write_text("\n".join(lines) + "\n")
    third = _run(symbols=["EURUSD"]).result()[0]
    assert (third.new, third.quarantined) == (0, 1)
    quarantine = CandleStore(tmp_path / "home").read_quarantine("EURUSD", "1h")
    assert quarantine["source_row"].to_list() == [5001]
    assert quarantine["reason"].to_list() == ["missing or unparsable timestamp"]
