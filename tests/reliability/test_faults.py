"""Broker faults: a venue failing 30 % of its requests loses no unit over several collect runs
(each failed request is retried in place from the fetch's budget, the task retried on top), and
a request that is not worth retrying is never retried."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from brokers.base import RetryBudget
from brokers.simulated import SimulatedBroker
from core.errors import DataFormatError, TransientBrokerError
from core.store import CandleStore

END = datetime(2026, 11, 1, tzinfo=UTC)


class FlakyBroker(SimulatedBroker):
    """The simulated market, failing a share of its requests with a transient error."""

    def __init__(self, fault_rate: float, seed: int = 0, page: int | None = None) -> None:
        super().__init__(seed=1, edge=0.0)
        self.rng, self.fault_rate, self.calls, self.faults = random.Random(seed), fault_rate, 0, 0
        if page is not None:  # force paging: several requests per fetch
            self.capabilities = type(self).capabilities.__class__(
                **{**_fields(type(self).capabilities), "max_candles_per_request": page}
            )

    def _fetch_range(self, symbol, tf, start, end):
        self.calls += 1
        if self.rng.random() < self.fault_rate:
            self.faults += 1
            raise TransientBrokerError("HTTP 503 (injected)")
        return super()._fetch_range(symbol, tf, start, end)


def _fields(capabilities: object) -> dict[str, object]:
    return {f: getattr(capabilities, f) for f in capabilities.__slots__}


def test_a_fetch_resumes_at_the_failed_page_and_shares_one_budget() -> None:
    broker = FlakyBroker(0.3, seed=3, page=24)
    broker.retry_budget = RetryBudget(retries=50, delay=0)
    candles = broker.fetch_candles("BTCUSD", "1h", END - timedelta(days=10), END)
    assert candles.height == 240 and candles["ts"].is_unique().all()
    assert broker.faults > 0 and broker.calls == 10 + broker.faults  # no page fetched twice

    broker = FlakyBroker(1.0, page=24)
    broker.retry_budget = RetryBudget(retries=4, delay=0)
    with pytest.raises(TransientBrokerError):
        broker.fetch_candles("BTCUSD", "1h", END - timedelta(days=10), END)
    assert broker.calls == 5  # the budget is the fetch's, not each request's


def test_a_permanent_error_is_never_retried() -> None:
    class Garbage(SimulatedBroker):
        calls = 0

        def _fetch_range(self, symbol, tf, start, end):
            type(self).calls += 1
            raise DataFormatError("venue sent garbage")

    broker = Garbage(seed=1)
    broker.retry_budget = RetryBudget(retries=5, delay=0)
    with pytest.raises(DataFormatError):
        broker.fetch_candles("BTCUSD", "1h", END - timedelta(days=1), END)
    assert Garbage.calls == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_thirty_percent_faults_lose_no_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brokers.registry import create_broker
    from flows.collect_candles import collect_candles

    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "30")
    monkeypatch.setenv("CANDLEFLOW_COLLECT__RETRY_DELAY_SECONDS", "0")
    broker = FlakyBroker(0.3, seed=7, page=200)

    def flaky(settings):  # the configured budget on the flaky venue
        broker.retry_budget = create_broker(settings).retry_budget
        return broker

    monkeypatch.setattr("flows.collect_candles.create_broker", flaky)
    symbols = ["EURUSD", "GBPUSD", "BTCUSD", "ETHUSD", "XAUUSD"]
    for run in range(3):
        end = END + timedelta(hours=6 * run)
        rows = collect_candles(symbols=symbols, timeframes=["1h", "4h"], end=end)
        assert [r.error for r in rows] == [None] * 10, run
    assert broker.faults > 10  # the faults did happen
    store, last_end = CandleStore(tmp_path / "home"), END + timedelta(hours=12)
    for symbol in symbols:  # every closed candle, once, as a venue without faults serves them
        stored = store.read(symbol, "1h")
        clean = SimulatedBroker(seed=1, edge=0.0).fetch_candles(
            symbol, "1h", stored["ts"][0], last_end
        )
        clean = clean.filter(pl.col("ts") + timedelta(hours=1) <= last_end)
        assert stored.select("ts", "close").equals(clean.select("ts", "close")), symbol
