"""The live runtime: one object keeps, for a process, the ledger per database URL, the candle
store and the loaded models per state directory; every run of the process starts from them. A run
starts by recovering unsent orders; an unreadable candle file costs only its own symbol."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from core.config import load_settings
from core.store import CandleStore
from tests.features.test_features import market
from trading.ledger import Ledger, OrderIntent
from trading.live import run_symbol
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


def test_an_unreadable_candle_file_costs_only_its_own_symbol(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    store = CandleStore(settings.home)
    for symbol in ("BTCUSD", "ETHUSD"):
        store.upsert(symbol, "1h", market(symbol, days=5))
    store.path("ETHUSD", "1h").write_bytes(b"\x00garbage, not parquet\n" * 40)
    last = store.last_ts("BTCUSD", "1h")
    ctx = LiveRuntime().open_run(settings, ["BTCUSD", "ETHUSD"], "1h", last + timedelta(hours=1))
    assert list(ctx.unreadable) == ["ETHUSD"]
    assert ctx.account.as_of == last + timedelta(hours=1)  # BTCUSD still brought up to date
    (bad,) = run_symbol(ctx, "ETHUSD", "1h")
    assert bad.status == "ERROR" and bad.reasons is not None and len(bad.reasons) == 1
    assert str(store.path("ETHUSD", "1h")) in bad.reasons[0] and "\n" not in bad.reasons[0]
    (good,) = run_symbol(ctx, "BTCUSD", "1h")
    assert good.status == "NO_MODEL"  # scored as usual (there is no champion)
    assert ctx.ledger.signals(symbol="ETHUSD")["status"].to_list() == ["ERROR"]


def test_an_unsent_order_is_recovered_before_the_account_update(tmp_path: Path) -> None:
    """Sent again before the paper account processes the candles that came since, the order
    fills on the candle it was meant for, as if the run had never stopped."""
    settings = load_settings(home=tmp_path / "home")
    live = settings.live.model_copy(update={"new_order_max_age_bars": 2})
    settings = settings.model_copy(update={"live": live})
    candles = market("BTCUSD", days=5)
    store = CandleStore(settings.home)
    store.upsert("BTCUSD", "1h", candles.head(-1))
    signal_ts = candles["ts"][-2]
    runtime = LiveRuntime()
    first = runtime.open_run(settings, ["BTCUSD"], "1h", signal_ts + timedelta(hours=1))
    intent = OrderIntent("BTCUSD", "1h", signal_ts, "1", 1, 0.1, timeout_bars=24)
    with pytest.raises(ConnectionError):  # the run stops between the ledger and the broker
        first.ledger.place_order_once(intent, _Unreachable())
    assert first.ledger.orders(status="NEW").height == 1

    store.upsert("BTCUSD", "1h", candles)  # the next candle closed meanwhile
    later = runtime.open_run(settings, ["BTCUSD"], "1h", signal_ts + timedelta(hours=2, minutes=5))
    assert later.recovery.resubmitted == (intent.order_id,)
    order = later.ledger.order(intent.order_id)
    assert order is not None and order.status == "FILLED"
    assert order.entry_ts == candles["ts"][-1]  # the candle after the signal, not a later one
    assert later.pending == ()  # filled: a position now, not a pending order


class _Unreachable:
    name, dry_run = "paper", False

    def submit(self, order: object) -> str:
        raise ConnectionError("killed before the broker heard of it")


class _Reconciled(Exception):
    """Raised by the spy: the run got as far as reconciling with the venue."""


def test_a_venue_run_reconciles_with_the_candles_so_unattached_exits_are_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venue's run hands the run's candles to the reconciliation: without them the stops and
    take-profits a venue did not take are never judged (only time-outs close)."""
    import trading.runtime as runtime_module

    settings = load_settings(home=tmp_path / "home")
    CandleStore(settings.home).upsert("BTCUSD", "1h", market("BTCUSD", days=5))
    seen: dict[str, object] = {}

    class Venue:
        venue = True

    def spy(ledger: Ledger, broker: object, now: object, candles: object = None) -> None:
        seen["candles"] = candles
        raise _Reconciled

    monkeypatch.setattr(runtime_module, "create_execution_broker", lambda s, e: Venue())
    monkeypatch.setattr(runtime_module, "recover_orders", lambda *a, **k: None)
    monkeypatch.setattr(runtime_module, "reconcile", spy)
    with pytest.raises(_Reconciled):
        LiveRuntime().open_run(settings, ["BTCUSD"], "1h")
    candles = seen["candles"]
    stored = CandleStore(settings.home).read("BTCUSD", "1h")
    assert isinstance(candles, dict) and candles["BTCUSD"].equals(stored)
