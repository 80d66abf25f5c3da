"""Live scoring without Prefect or MLflow: feature parity of the bounded tail with the full
history, the refusal statuses, the kill switch and circuit breaker blocking orders, one order per
candle and model version, orders of earlier runs counted until they fill, one order per
candle whatever the version."""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from brokers.paper import PaperBroker
from core.config import load_settings
from core.feature_spec import FeatureSpec
from core.reports import SignalReport
from core.store import CandleStore
from core.timeframes import parse_timeframe
from features.build import compute_features
from features.dataset import build_dataset, load_inputs, recent, tail_bars
from features.labels import cusum_events, volatility
from models.ensemble import Ensemble
from models.risk import Position, RiskState
from models.signal import regime_from_candles
from models.tuning import fit
from tests.features.test_features import market
from trading.ledger import Ledger, OrderIntent
from trading.live import LiveContext, run_symbol
from trading.live_models import LiveModel
from trading.orders import pending_positions
from trading.scoring import (
    OK,
    SPEC_MISMATCH,
    STALE,
    LiveError,
    _is_event,
    score_last_candle,
    signal_of,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    store = CandleStore(home)
    store.upsert("BTCUSD", "1h", market("BTCUSD", days=330))
    inputs = load_inputs(store, "BTCUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "BTCUSD", "1h", settings.features, settings.labels)
    frame, columns = dataset.frame, dataset.meta.feature_columns
    X = frame.select(columns).to_numpy()
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    model = fit("logreg", {"C": 0.03}, X, y, seed=1, n_threads=1)
    ensemble = Ensemble(
        {"logreg": model},
        {"logreg": 1.0},
        columns,
        threshold=0.01,  # every bar votes BUY: orders are exercised
        min_agree=1,
        metadata=dataset.meta.model_metadata(),
    )
    # the effective spec, as registered
    spec = FeatureSpec.model_validate(ensemble.metadata["feature_spec"])
    live = LiveModel("candleflow.BTCUSD.1h", "1", ensemble, spec, settings.labels)
    return settings, store, live, inputs


class _Cache:
    def __init__(self, model: LiveModel | None) -> None:
        self.model = model

    def get(self, name: str, alias: str) -> LiveModel | None:
        return self.model if alias == "champion" else None


def _context(settings, store, model, tmp_path: Path, **risk) -> LiveContext:
    settings = settings.model_copy(
        update={"home": tmp_path, "risk": settings.risk.model_copy(update=risk)}
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'live.db'}")
    ledger.create_all()
    broker = PaperBroker(ledger.engine, settings.paper)
    now = store.last_ts("BTCUSD", "1h") + timedelta(hours=1, minutes=5)
    return LiveContext(settings, store, ledger, broker, _Cache(model), broker.state(), now)


def test_tail_features_equal_full_history_features(world: tuple) -> None:
    settings, _, _, inputs = world
    tf = parse_timeframe("1h")
    full = compute_features(
        inputs.candles,
        settings.features,
        tf,
        symbol="BTCUSD",
        higher=inputs.higher,
        correlated=inputs.correlated,
    )
    short = recent(inputs, tail_bars(settings.features, tf))
    assert short.candles.height < inputs.candles.height
    tail = compute_features(
        short.candles,
        settings.features,
        tf,
        symbol="BTCUSD",
        higher=short.higher,
        correlated=short.correlated,
    )
    a = full.frame.tail(1).select(full.columns).to_numpy()
    b = tail.frame.tail(1).select(tail.columns).to_numpy()
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_sigma_and_regime_of_the_scored_candle(world: tuple) -> None:
    """One σ series serves the barriers (its last value) and the regime (its window): the same
    numbers as the labels' volatility over those candles, and no regime unless asked for."""
    settings, store, live, _ = world
    now = store.last_ts("BTCUSD", "1h") + timedelta(hours=1, minutes=1)
    plain, _ = score_last_candle(live, store, "BTCUSD", "1h", now)
    scored, candles = score_last_candle(live, store, "BTCUSD", "1h", now, settings.signals)
    assert plain.regime is None and scored.regime is not None
    window = candles.tail(settings.signals.regime_lookback + live.labels.vol_window * 4)
    assert scored.sigma == volatility(window, live.labels)[-1]
    assert scored.regime == regime_from_candles(window, live.labels, settings.signals)
    assert scored.regime.bars == settings.signals.regime_lookback
    assert scored.vote == plain.vote


def test_cusum_event_of_the_window_is_the_one_of_the_whole_history(world: tuple) -> None:
    """A model trained on CUSUM event bars scores live only on event bars: the filter run over
    the live window agrees with the filter run over the whole history, bar after bar."""
    settings, store, live, _ = world
    labels = live.labels.model_copy(update={"cusum": 1.5})
    candles = store.read("BTCUSD", "1h")
    sigma = volatility(candles, labels)
    full = cusum_events(candles["close"].to_numpy(), sigma, labels.cusum)
    bars = settings.signals.regime_lookback + labels.vol_window * 4
    cusum = dataclasses.replace(live, labels=labels)
    seen = set()
    for end in range(candles.height - 60, candles.height):
        window = candles.slice(end - bars + 1, bars)
        assert _is_event(window, volatility(window, labels), labels) == full[end], end
        seen.add(bool(full[end]))
    assert seen == {True, False}
    # A non-event bar: the vote is recorded, the signal is NEUTRAL and says why.
    end = int(np.flatnonzero(~full[: candles.height])[-1])
    store_until = CandleStore(Path(tempfile.mkdtemp()))
    store_until.upsert("BTCUSD", "1h", candles.head(end + 1))
    now = candles["ts"][end] + timedelta(hours=1, minutes=1)
    scored, _ = score_last_candle(cusum, store_until, "BTCUSD", "1h", now, settings.signals)
    assert not scored.event and scored.vote.side == 1
    signal = signal_of(scored, settings.signals, risk_state_calm())
    assert signal.tier.value == "NEUTRAL" and "not a CUSUM event" in signal.reasons[0]
    event_end = int(np.flatnonzero(full)[-1])
    store_until.upsert("BTCUSD", "1h", candles.head(event_end + 1))
    now = candles["ts"][event_end] + timedelta(hours=1, minutes=1)
    assert score_last_candle(cusum, store_until, "BTCUSD", "1h", now, settings.signals)[0].event


def risk_state_calm() -> RiskState:
    return RiskState(daily_loss_pct=0.0, drawdown_pct=0.0, usage=0.0)


def test_stale_and_spec_mismatch_are_refused(world: tuple) -> None:
    _, store, live, _ = world
    last = store.last_ts("BTCUSD", "1h")
    scored, _ = score_last_candle(live, store, "BTCUSD", "1h", last + timedelta(hours=1, minutes=1))
    assert scored.ts == last and 0 <= scored.vote.probability <= 1
    ctx_like = _context(*world[:3], Path(tempfile.mkdtemp()))
    ctx_like.now = last + timedelta(hours=3)
    ctx_like.cache = type("Both", (), {"get": lambda self, name, alias: live})()
    rows = run_symbol(ctx_like, "BTCUSD", "1h")  # champion and shadow, both refused as STALE
    assert all(isinstance(r, SignalReport) for r in rows)
    assert [(r.status, r.shadow) for r in rows] == [(STALE, False), (STALE, True)]
    with pytest.raises(LiveError) as stale:
        score_last_candle(live, store, "BTCUSD", "1h", last + timedelta(hours=2))
    assert stale.value.status == STALE
    meta = dict(live.ensemble.metadata, spec_hash="0" * 16)
    forged = LiveModel(
        live.name,
        "9",
        Ensemble(**{**live.ensemble.__dict__, "metadata": meta}),
        live.spec,
        live.labels,
    )
    with pytest.raises(LiveError) as mismatch:
        score_last_candle(forged, store, "BTCUSD", "1h", last + timedelta(hours=1))
    assert mismatch.value.status == SPEC_MISMATCH


def test_one_order_per_candle_and_version(world: tuple, tmp_path: Path) -> None:
    settings, store, live, _ = world
    ctx = _context(settings, store, live, tmp_path)
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    assert row.status == OK and row.order_id, row.reasons
    assert row.quantity and row.quantity > 0 and row.action == "BUY" and row.champion_kind == "gate"
    ctx.account = ctx.broker.state()
    (again,) = run_symbol(ctx, "BTCUSD", "1h")
    assert again.order_id == row.order_id and ctx.ledger.orders().height == 1
    assert (again.quantity, again.stop_loss, again.take_profit) == (
        row.quantity,
        row.stop_loss,
        row.take_profit,
    )
    assert any("placed for this candle on an earlier run" in r for r in again.reasons or [])


@pytest.mark.parametrize(
    ("risk", "reason"),
    [({"kill_switch": True}, "kill switch"), ({"max_open_positions": 1}, "open positions")],
)
def test_kill_switch_and_limits_block_orders(
    world: tuple, tmp_path: Path, risk: dict, reason: str
) -> None:
    settings, store, live, _ = world
    ctx = _context(settings, store, live, tmp_path, **risk)
    if "max_open_positions" in risk:  # one position already held: the limit is reached
        ctx.placed.append(Position("ETHUSD", 1000.0, 1))
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    assert row.order_id is None and ctx.ledger.orders().height == 0
    assert any(reason in r for r in row.reasons or []), row.reasons
    assert ctx.ledger.risk_events().height >= 1


def test_kill_file_and_daily_loss_circuit_breaker(world: tuple, tmp_path: Path) -> None:
    settings, store, live, _ = world
    ctx = _context(settings, store, live, tmp_path)
    (tmp_path / "KILL").write_text("stop")
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    assert row.order_id is None and any("kill file" in r for r in row.reasons or [])
    (tmp_path / "KILL").unlink()
    a = ctx.account
    ctx.account = dataclasses.replace(a, equity=a.day_start_equity * 0.95)  # −5 % today
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    assert row.order_id is None and row.tier == "AVOID"
    assert any("daily loss" in r for r in row.reasons or []), row.reasons
    assert pl.DataFrame(ctx.ledger.orders()).height == 0


def test_orders_of_earlier_runs_not_yet_filled_count_as_exposure(
    world: tuple, tmp_path: Path
) -> None:
    settings, store, live, _ = world
    earlier = _context(settings, store, live, tmp_path)
    ts = store.last_ts("BTCUSD", "1h") - timedelta(hours=5)
    intent = OrderIntent("BTCUSD", "1h", ts, "1", 1, 0.5, timeout_bars=24)
    order, _ = earlier.ledger.place_order_once(intent, earlier.broker)
    assert order.status == "SUBMITTED"  # accepted, fills on the candle after ts

    ctx = _context(settings, store, live, tmp_path, max_open_positions=1)
    ctx.pending = pending_positions(ctx.ledger, ctx.store, ctx.now, 1)
    close = store.read("BTCUSD", "1h", start=ts, end=ts + timedelta(hours=1))["close"][0]
    assert ctx.account.positions == () and ctx.account_state().positions == (
        Position("BTCUSD", 0.5 * close, 1),
    )
    (row,) = run_symbol(ctx, "BTCUSD", "1h")  # the pending order is the one position allowed
    assert row.order_id is None and ctx.ledger.orders().height == 1
    assert any("max open positions 1 reached (1 open)" in r for r in row.reasons or [])

    ctx.broker.update({"BTCUSD": store.read("BTCUSD", "1h")}, "1h")  # filled: not pending now
    assert pending_positions(ctx.ledger, ctx.store, ctx.now, 1) == ()


def test_a_candle_ordered_by_one_version_is_not_ordered_again_by_another(
    world: tuple, tmp_path: Path
) -> None:
    settings, store, live, _ = world
    (first,) = run_symbol(_context(settings, store, live, tmp_path), "BTCUSD", "1h")
    assert first.order_id and first.model_version == "1"

    promoted = dataclasses.replace(live, version="2")  # a new champion, same candle
    ctx = _context(settings, store, promoted, tmp_path)
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    assert row.status == OK and row.model_version == "2" and row.order_id is None
    assert any("already ordered by v1" in r for r in row.reasons or []), row.reasons
    assert ctx.ledger.orders().height == 1
    events = ctx.ledger.risk_events()
    assert events.filter(pl.col("kind") == "candle_ordered").height == 1
    recorded = ctx.ledger.signals().filter(pl.col("model_version") == "2")
    assert "already ordered by v1" in recorded["components"][0]  # the reason is in the ledger


def test_a_re_run_of_an_ordered_candle_reports_its_order_and_keeps_its_record(
    world: tuple, tmp_path: Path
) -> None:
    """A re-run of the same candle (here in a new process, a kill file created meanwhile) does
    not decide again: no exposure counted against its own order, no refusal recorded over the
    signal, no risk event, and the order it placed is reported."""
    settings, store, live, _ = world
    (first,) = run_symbol(_context(settings, store, live, tmp_path), "BTCUSD", "1h")
    assert first.order_id and first.tier in ("BUY", "STRONG_BUY")

    ctx = _context(settings, store, live, tmp_path, max_open_positions=1)
    ctx.pending = pending_positions(ctx.ledger, ctx.store, ctx.now, 1)  # its own order
    assert len(ctx.account_state().positions) == 1
    (tmp_path / "KILL").write_text("stop")
    recorded = ctx.ledger.signals()
    (again,) = run_symbol(ctx, "BTCUSD", "1h")
    assert again.order_id == first.order_id and again.status == "OK"
    assert (again.tier, again.action, again.weight) == (first.tier, first.action, first.weight)
    assert (again.quantity, again.stop_loss, again.take_profit) == (
        first.quantity,
        first.stop_loss,
        first.take_profit,
    )
    assert again.champion_kind == "gate" and again.model_version == "1"
    assert any("placed for this candle on an earlier run (SUBMITTED)" in r for r in again.reasons)
    assert ctx.ledger.signals().equals(recorded)  # the earlier record, untouched
    assert ctx.ledger.risk_events().is_empty() and ctx.ledger.orders().height == 1


def test_a_re_run_after_a_stop_before_the_signal_was_recorded_records_it(
    world: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stopped between the order's commit and the broker: the re-run sends the order
    (same client id) and records the signal the stopped run never wrote."""
    settings, store, live, _ = world
    submit = Ledger._submit

    def crash(self, row, broker):
        raise ConnectionError("killed after the order commit")

    monkeypatch.setattr(Ledger, "_submit", crash)
    with pytest.raises(ConnectionError):
        run_symbol(_context(settings, store, live, tmp_path), "BTCUSD", "1h")
    monkeypatch.setattr(Ledger, "_submit", submit)
    ctx = _context(settings, store, live, tmp_path)
    assert ctx.ledger.signals().is_empty() and ctx.ledger.orders(status="NEW").height == 1
    (row,) = run_symbol(ctx, "BTCUSD", "1h")
    (order,) = ctx.ledger.orders().to_dicts()
    assert row.order_id == order["order_id"] and order["status"] == "SUBMITTED"
    assert ctx.ledger.positions().height == 1
    (signal,) = ctx.ledger.signals().to_dicts()
    assert signal["status"] == "OK" and signal["tier"] == row.tier
    assert "placed for this candle on an earlier run" in signal["components"]
