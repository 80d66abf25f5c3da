"""Orders under crashes, concurrency and bad input, through the live flow's library path
(``LiveRuntime().open_run`` + ``run_symbol``, as the flow's tasks call them): a crash injected
right after the order's commit (or after the broker accepted it) and a re-run of the same candle
end with exactly one order at the broker and none stranded; past ``live.new_order_max_age_bars``
the stranded order is expired with its reason and no longer counted as exposure; concurrent runs
of one candle place one order; a corrupt candle file fails its own symbol only; an unknown
symbol is a one-line user error."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from brokers.paper import PaperBroker
from cli.main import app
from core.config import Settings, load_settings
from core.feature_spec import FeatureSpec
from core.reports import SignalReport
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.ensemble import Ensemble
from models.tuning import fit
from tests.features.test_features import market
from trading.ledger import Ledger
from trading.live import LiveContext, run_symbol
from trading.live_models import LiveModel
from trading.runtime import LiveRuntime

SYMBOL = "BTCUSD"


class Killed(BaseException):
    """What a kill looks like to the code it lands in: nothing after it runs."""


class _Champion:
    """The registry's answer for the run: ``model`` is every symbol's champion."""

    def __init__(self, model: LiveModel) -> None:
        self.model = model

    def get(self, name: str, alias: str) -> LiveModel | None:
        return self.model if alias == "champion" else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, LiveModel]:
    """Candles and a champion that votes BUY on every bar (orders are exercised)."""
    home = tmp_path_factory.mktemp("train")
    settings = load_settings(home=home)
    candles = market(SYMBOL, days=330)
    store = CandleStore(home)
    store.upsert(SYMBOL, "1h", candles)
    inputs = load_inputs(store, SYMBOL, "1h", settings.features)
    dataset = build_dataset(inputs, SYMBOL, "1h", settings.features, settings.labels)
    frame, columns = dataset.frame, dataset.meta.feature_columns
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    model = fit("logreg", {"C": 0.03}, frame.select(columns).to_numpy(), y, seed=1, n_threads=1)
    ensemble = Ensemble(
        {"logreg": model},
        {"logreg": 1.0},
        columns,
        threshold=0.01,
        min_agree=1,
        metadata=dataset.meta.model_metadata(),
    )
    spec = FeatureSpec.model_validate(ensemble.metadata["feature_spec"])
    return candles, LiveModel("candleflow.BTCUSD.1h", "1", ensemble, spec, settings.labels)


def _settings(home: Path, **risk: object) -> Settings:
    settings = load_settings(home=home)
    return settings.model_copy(update={"risk": settings.risk.model_copy(update=risk)})


def _run(
    settings: Settings, model: LiveModel, now: datetime, symbols: tuple[str, ...] = (SYMBOL,)
) -> tuple[LiveContext, dict[str, SignalReport]]:
    """One live run, as a new process would make it: its own runtime, the champion given."""
    ctx = LiveRuntime().open_run(settings, list(symbols), "1h", now)
    ctx.cache = _Champion(model)  # type: ignore[assignment]
    return ctx, {s: run_symbol(ctx, s, "1h")[0] for s in symbols}


def _after(ts: datetime) -> datetime:
    """A run's clock a few minutes after the candle opening at ``ts`` closed."""
    return ts + timedelta(hours=1, minutes=5)


def _positions(ledger: Ledger) -> list[str]:
    return ledger.positions()["order_id"].to_list()


def _crash_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the run right after the ledger committed the order (NEW), before the broker."""
    insert = Ledger._insert_order

    def commit_then_die(self: Ledger, intent: object, broker: object) -> bool:
        insert(self, intent, broker)  # type: ignore[arg-type]
        raise Killed("after order commit")

    monkeypatch.setattr(Ledger, "_insert_order", commit_then_die)


def _crash_after_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the run after the broker accepted the order, before the ledger recorded it."""
    submit = PaperBroker.submit

    def accept_then_die(self: PaperBroker, order: object) -> str:
        submit(self, order)  # type: ignore[arg-type]
        raise Killed("after broker accept")

    monkeypatch.setattr(PaperBroker, "submit", accept_then_die)


@pytest.mark.parametrize("crash", [_crash_after_commit, _crash_after_accept])
def test_a_crash_around_the_order_and_a_re_run_of_the_same_candle_end_consistent(
    world: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash
) -> None:
    candles, model = world
    settings = _settings(tmp_path / "home")
    CandleStore(settings.home).upsert(SYMBOL, "1h", candles)
    now = _after(candles["ts"][-1])
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(Killed):
            _run(settings, model, now)
    ledger = Ledger.from_settings(settings.live, settings.home)
    (stranded,) = ledger.orders().to_dicts()
    assert stranded["submission_status"] == "NEW"

    ctx, rows = _run(settings, model, now + timedelta(minutes=20))  # the same candle again
    row = rows[SYMBOL]
    assert row.status == "OK" and row.order_id == stranded["order_id"], row.reasons
    (order,) = ledger.orders().to_dicts()
    assert order["submission_status"] == "SUBMITTED" and order["status"] == "SUBMITTED"
    assert order["broker_order_id"] == f"paper:paper:{row.order_id}"
    assert _positions(ledger) == [row.order_id]  # exactly one order at the broker
    assert ledger.orders(status="NEW").is_empty()
    (signal,) = ledger.signals().to_dicts()  # the stopped run never wrote it: the re-run did
    assert signal["status"] == "OK" and signal["tier"] == row.tier
    assert ctx.recovery.resubmitted == (row.order_id,)  # sent again before anything else

    recorded = ledger.signals()
    ctx, rows = _run(settings, model, now + timedelta(minutes=40))  # and once more: unchanged
    assert rows[SYMBOL].order_id == row.order_id and ctx.recovery.resubmitted == ()
    assert ledger.signals().equals(recorded) and _positions(ledger) == [row.order_id]


def test_a_stranded_order_past_its_age_is_expired_and_no_longer_exposure(
    world: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stopped after the order's commit; the next run comes one candle later, past
    ``new_order_max_age_bars`` (1): the order is expired with its reason, never sent, and the new
    candle may trade (one position per symbol: the stranded order would have blocked it)."""
    candles, model = world
    settings = _settings(tmp_path / "home", max_positions_per_symbol=1)
    store = CandleStore(settings.home)
    store.upsert(SYMBOL, "1h", candles.head(-1))
    with monkeypatch.context() as patch:
        _crash_after_commit(patch)
        with pytest.raises(Killed):
            _run(settings, model, _after(candles["ts"][-2]))
    ledger = Ledger.from_settings(settings.live, settings.home)
    (stranded,) = ledger.orders()["order_id"].to_list()

    store.upsert(SYMBOL, "1h", candles)  # the next candle closed
    ctx, rows = _run(settings, model, _after(candles["ts"][-1]))
    expired = ledger.order(stranded)
    assert expired is not None and expired.status == "EXPIRED"
    assert expired.reason is not None and "live.new_order_max_age_bars = 1" in expired.reason
    events = ledger.risk_events().filter(pl.col("kind") == "order_expired")
    assert events["reason"].to_list() == [expired.reason]
    assert ctx.pending == ()  # not counted as exposure
    row = rows[SYMBOL]
    assert row.order_id and row.order_id != stranded, row.reasons
    assert _positions(ledger) == [row.order_id]  # the expired order never reached the broker
    assert ctx.recovery.expired == (stranded,) and ctx.recovery.resubmitted == ()


def test_concurrent_runs_of_one_candle_place_one_order(world: tuple, tmp_path: Path) -> None:
    """Pairs of runs started at the same moment, each with its own runtime (as two processes),
    on three successive candles: one order per candle, at the ledger and at the broker."""
    candles, model = world
    settings = _settings(tmp_path / "home", max_positions_per_symbol=5, max_open_positions=5)
    store = CandleStore(settings.home)
    seen = []
    for end in (-2, -1, None):
        store.upsert(SYMBOL, "1h", candles.head(end) if end else candles)
        now = _after(store.last_ts(SYMBOL, "1h"))
        start = threading.Barrier(2)

        def run(_: int, now: datetime = now, start: threading.Barrier = start) -> SignalReport:
            start.wait()
            return _run(settings, model, now)[1][SYMBOL]

        with ThreadPoolExecutor(2) as pool:
            pair = list(pool.map(run, range(2)))
        assert pair[0].order_id and pair[0].order_id == pair[1].order_id, [r.reasons for r in pair]
        seen.append(pair[0].order_id)
    ledger = Ledger.from_settings(settings.live, settings.home)
    assert len(set(seen)) == 3 and sorted(ledger.orders()["order_id"]) == sorted(seen)
    assert sorted(_positions(ledger)) == sorted(seen)  # no duplicate at the broker
    assert ledger.fills()["order_id"].is_unique().all()
    assert ledger.orders(status="NEW").is_empty()


def _corrupt(home: Path, symbol: str) -> Path:
    path = CandleStore(home).path(symbol, "1h")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * 16)
    return path


def test_a_corrupt_candle_file_fails_only_its_own_symbol(world: tuple, tmp_path: Path) -> None:
    candles, model = world
    settings = _settings(tmp_path / "home")
    CandleStore(settings.home).upsert(SYMBOL, "1h", candles)
    path = _corrupt(settings.home, "EURUSD")
    ctx, rows = _run(settings, model, _after(candles["ts"][-1]), (SYMBOL, "EURUSD"))
    bad, good = rows["EURUSD"], rows[SYMBOL]
    assert bad.status == "ERROR" and bad.reasons is not None and len(bad.reasons) == 1
    assert str(path) in bad.reasons[0] and "\n" not in bad.reasons[0]
    assert good.status == "OK" and good.order_id  # scored, ordered as usual
    assert ctx.account.as_of == candles["ts"][-1] + timedelta(hours=1)  # the account updated


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_signals_with_a_corrupt_candle_file_fails_naming_it_and_prints_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "10")
    path = _corrupt(tmp_path / "home", "EURUSD")
    result = CliRunner().invoke(app, ["signals", "--symbols", "BTCUSD,EURUSD", "--json"])
    assert result.exit_code == 1, result.output
    rows = {r["symbol"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"BTCUSD", "EURUSD"}
    assert rows["BTCUSD"]["status"] == "NO_MODEL" and rows["BTCUSD"]["error"] is None
    assert rows["EURUSD"]["status"] == "ERROR" and str(path) in rows["EURUSD"]["error"]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("candleflow:")]
    assert "EURUSD" in line and "BTCUSD" not in line


def test_signals_for_an_unknown_symbol_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["signals", "--symbols", "FOOBAR"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "FOOBAR" in result.stderr
    assert "no symbol 'FOOBAR'" in result.stderr and "no 1h candles" in result.stderr
    assert not (tmp_path / "home" / "live").exists()  # refused before anything ran
