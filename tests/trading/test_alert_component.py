"""TradingView alerts as the ``tradingview`` component of the signal weight, through the real
decision path (``trading.live.run_symbol`` and ``trading.predict.predict``): the lookup (newest
fresh alert, its strategy's resolved hit rate, nothing after the decision time), the default
weight 0 that never reads the alerts table, an agreeing alert raising the weight and an opposing
one lowering it, the same in a prediction, and no order from an alert on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from core.timeframes import parse_timeframe
from models.ensemble import Ensemble
from models.signal import Side
from tests.trading.test_live import _context, world  # noqa: F401  (world: the fixture)
from trading.alerts import Alert, alert_opinion, hit_rates, recent_alerts, store_alert
from trading.live import LiveContext, run_symbol
from trading.live_models import LiveModel
from trading.predict import predict
from trading.shadow import known_outcomes

HOUR = timedelta(hours=1)
WINS, LOSSES = 24, 6  # the "good" strategy's resolved BUY alerts: right 80 % of the time


def _settings(settings, weight: float, **signals):
    weights = settings.signals.weights.model_copy(update={"tradingview": weight})
    # "neutral": a missing alert scores 0.5, so with and without one compare on one scale
    update = {"weights": weights, "missing_component": "neutral"} | signals
    return settings.model_copy(update={"signals": settings.signals.model_copy(update=update)})


def _alert(ts: datetime, side: int, strategy: str) -> Alert:
    action = {1: "buy", -1: "sell", 0: "flat"}[side]
    payload = {"ticker": "BTCUSD", "action": action, "strategy": strategy, "time": ts.isoformat()}
    candle = parse_timeframe("1h").floor(ts)
    return Alert("BTCUSD", "1h", ts, candle, action, side, None, strategy, payload)  # type: ignore[arg-type]


def _history(ctx: LiveContext) -> None:
    """The "good" strategy's ``WINS`` BUY alerts whose candle's outcome was the take-profit and
    ``LOSSES`` whose was not, all resolved by the stored candles, weeks before the decision."""
    candles = ctx.store.read("BTCUSD", "1h")
    known = known_outcomes(candles, "1h", ctx.settings.labels).filter(
        pl.col("ts") > ctx.now - 40 * 24 * HOUR
    )
    won = known.filter(pl.col("label") == 1)["ts"].to_list()[:WINS]
    lost = known.filter(pl.col("label") != 1)["ts"].to_list()[:LOSSES]
    assert len(won) == WINS and len(lost) == LOSSES
    for ts in won + lost:
        store_alert(ctx.ledger.engine, _alert(ts + timedelta(minutes=30), 1, "good"), ctx.now)


def _fresh(ctx: LiveContext, side: int, strategy: str = "good", age=timedelta(minutes=10)) -> None:
    store_alert(ctx.ledger.engine, _alert(ctx.now - age, side, strategy), ctx.now)


def _tradingview(ctx: LiveContext) -> tuple[float, dict]:
    """The champion's stored weight and its ``tradingview`` component."""
    (row,) = ctx.ledger.signals(shadow=False).to_dicts()
    return row["weight"], json.loads(row["components"])["components"]["tradingview"]


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every SQL statement sent to ``engine`` meanwhile."""
    seen: list[str] = []

    def spy(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", spy)


def _reads_alerts(statements: list[str]) -> bool:
    return any("FROM alerts" in s for s in statements)


# --- the lookup ----------------------------------------------------------------------------------


def test_the_opinion_is_the_newest_fresh_alert_with_its_strategys_hit_rate(
    world: tuple,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings, store, live, _ = world
    ctx = _context(settings, store, live, tmp_path)
    engine, labels = ctx.ledger.engine, settings.labels

    def opinion(max_age_bars: int = 1):
        return alert_opinion(engine, store, "btc/usd", "1h", ctx.now, labels, max_age_bars)

    _history(ctx)
    assert opinion() is None  # the history is weeks old: nothing fresh
    _fresh(ctx, -1, "good", age=70 * timedelta(minutes=1))  # 1 bar and 10 minutes ago
    assert opinion() is None  # stale at 1 bar …
    assert opinion(2) is not None  # … fresh at 2
    _fresh(ctx, 1, "other", age=-timedelta(minutes=5))  # after the decision time: unseen
    assert opinion() is None
    _fresh(ctx, 1, "good")
    found = opinion()
    assert found is not None
    assert (found.side, found.strategy, found.resolved) == (Side.BUY, "good", WINS + LOSSES)
    assert found.hit_rate == pytest.approx(WINS / (WINS + LOSSES))
    assert found.at == ctx.now - timedelta(minutes=10)
    # The same number as the API's /v1/alerts/hit-rate (all of the strategy's alerts, all candles)
    rows = [r for r in recent_alerts(engine, limit=1000) if r["strategy"] == "good"]
    everything = hit_rates(rows, {("BTCUSD", "1h"): store.read("BTCUSD", "1h")}, labels)
    assert everything["hit_rate"][0] == pytest.approx(found.hit_rate)
    _fresh(ctx, -1, "fresh-strategy", age=timedelta(minutes=2))  # newest: a strategy unlearned
    newest = opinion()
    assert newest is not None and (newest.strategy, newest.resolved) == ("fresh-strategy", 0)


# --- the decision path -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["live", "predict"])
def test_the_default_weight_never_reads_the_alerts_table(
    world: tuple,  # noqa: F811
    tmp_path: Path,
    path: str,
) -> None:
    settings, store, live, _ = world
    for weight, reads in ((0.0, False), (0.3, True)):  # the spy sees a lookup when there is one
        ctx = _context(_settings(settings, weight), store, live, tmp_path / str(weight))
        with _statements(ctx.ledger.engine) as seen:
            if path == "live":
                (row,) = run_symbol(ctx, "BTCUSD", "1h")
                status = row.status
            else:
                status = predict(ctx, "BTCUSD", "1h").decision.status
        assert status == "OK"
        assert _reads_alerts(seen) is reads, seen


@pytest.mark.parametrize(("side", "score"), [(1, 0.8), (-1, 0.2)])
def test_an_agreeing_alert_raises_the_weight_and_an_opposing_one_lowers_it(
    world: tuple,  # noqa: F811
    tmp_path: Path,
    side: int,
    score: float,
) -> None:
    settings, store, live, _ = world
    weighted = _settings(settings, 0.3)
    base = _context(weighted, store, live, tmp_path / "none")
    run_symbol(base, "BTCUSD", "1h")  # no alert: the component scores 0.5 ("neutral")
    base_weight, missing = _tradingview(base)
    assert missing["missing"] and missing["score"] == 0.5

    ctx = _context(weighted, store, live, tmp_path / "alert")
    _history(ctx)
    _fresh(ctx, side)
    (report,) = run_symbol(ctx, "BTCUSD", "1h")
    assert report.status == "OK" and report.action == "BUY"  # the model's vote, unchanged
    weight, tv = _tradingview(ctx)
    assert not tv["missing"] and tv["score"] == pytest.approx(score)
    assert tv["raw"] == pytest.approx(side * WINS / (WINS + LOSSES))
    assert tv["alert"]["strategy"] == "good" and tv["alert"]["resolved"] == WINS + LOSSES
    share = 0.3 / sum(weighted.signals.weights.model_dump().values())
    assert weight - base_weight == pytest.approx(100 * share * (score - 0.5))
    assert (weight > base_weight) is (side == 1)

    # A prediction decides the same (one lookup shared by both paths), without a record.
    predicted = predict(ctx, "BTCUSD", "1h")
    components = predicted.record.components or {}
    assert components["components"]["tradingview"] == tv  # type: ignore[index]
    assert predicted.record.weight == pytest.approx(weight)


def test_too_few_resolved_alerts_leave_the_component_missing(
    world: tuple,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings, store, live, _ = world
    ctx = _context(
        _settings(settings, 0.3, alert_min_resolved=WINS + LOSSES + 1), store, live, tmp_path
    )
    _history(ctx)
    _fresh(ctx, -1)
    run_symbol(ctx, "BTCUSD", "1h")
    _, tv = _tradingview(ctx)
    assert tv["missing"] and tv["score"] == 0.5  # "neutral": as if there were no alert
    assert tv["alert"]["resolved"] == WINS + LOSSES  # the record says why it did not count


def test_an_alert_is_never_executed_on_its_own(
    world: tuple,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A flat vote places no order whatever the alert says: here a BUY alert from a strategy
    right every time, with the alert's component weighing the most."""
    settings, store, live, _ = world
    flat_ensemble = Ensemble(**{**live.ensemble.__dict__, "threshold": 0.99})
    flat = LiveModel(live.name, live.version, flat_ensemble, live.spec, live.labels)
    loud = _settings(settings, 10.0)
    for model, orders in ((live, 1), (flat, 0)):  # the voting model does order: it can fail
        ctx = _context(loud, store, model, tmp_path / str(orders))
        _history(ctx)
        _fresh(ctx, 1)
        (row,) = run_symbol(ctx, "BTCUSD", "1h")
        assert ctx.ledger.orders().height == orders, row.reasons
        _, tv = _tradingview(ctx)
        assert tv["score"] == pytest.approx(0.5 if orders == 0 else 0.8)  # flat vote: no agreement
        if orders == 0:
            assert row.action == "FLAT" and row.tier == "NEUTRAL" and row.order_id is None
            assert predict(ctx, "BTCUSD", "1h").would_order is False
