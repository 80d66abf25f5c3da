"""The live runtime: one object keeps, for a process, the ledger per database URL, the candle
store and the loaded models per state directory; every run of the process starts from them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from core.config import load_settings
from core.store import CandleStore
from tests.features.test_features import market
from trading.ledger import Ledger
from trading.runtime import LiveRuntime


def test_one_ledger_per_database_and_one_store_per_home(tmp_path: Path) -> None:
    runtime = LiveRuntime(store_cache_mb=8)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with ThreadPoolExecutor(4) as pool:  # threads asking at once get the same ledger
        ledgers = list(pool.map(runtime.ledger, [url] * 8))
    assert all(ledger is ledgers[0] for ledger in ledgers)
    assert isinstance(ledgers[0], Ledger) and ledgers[0].signals().is_empty()  # migrated
    assert runtime.ledger(f"sqlite:///{tmp_path / 'other.db'}") is not ledgers[0]
    store = runtime.store(tmp_path / "home")
    assert isinstance(store, CandleStore) and runtime.store(tmp_path / "home") is store
    assert runtime.store(tmp_path / "elsewhere") is not store


def test_runs_of_a_process_share_ledger_store_and_models(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    CandleStore(settings.home).upsert("BTCUSD", "1h", market("BTCUSD", days=5))
    runtime = LiveRuntime()
    last = CandleStore(settings.home).last_ts("BTCUSD", "1h")
    first = runtime.open_run(settings, ["BTCUSD"], "1h", last + timedelta(hours=1))
    second = runtime.open_run(settings, ["BTCUSD"], "1h")
    assert first.ledger is second.ledger and first.store is second.store
    assert first.cache is second.cache  # models loaded by one run stay for the next
    assert first.now == last + timedelta(hours=1) and second.now > first.now
    assert first.account.as_of == last + timedelta(hours=1)  # the paper account was updated
    assert first.pending == () and first.cache.version("candleflow.BTCUSD.1h", "champion") is None

    runtime.close()  # forgotten: the next run opens everything again
    third = runtime.open_run(settings, ["BTCUSD"], "1h")
    assert third.ledger is not first.ledger and third.cache is not first.cache
    assert third.account == second.account  # the same database, read again
