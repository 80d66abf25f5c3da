"""The live-signals flow trading a fake OANDA served on 127.0.0.1: champion → signal → risk → an
order recorded DRY_RUN and never sent; with ``live.dry_run = false`` the venue receives exactly
one order carrying the ledger's client id, reconciled into a fill on the next run; a crash after
the venue accepted an order but before the ledger heard back, re-run → still one order; the first
run after the positions' time-out bars closed closes each at the venue once (``TIMEOUT``)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from brokers import oanda
from brokers.oanda_execution import OandaExecution
from core.config import load_settings
from core.feature_spec import FeatureSpec
from core.store import CandleStore
from features.dataset import build_dataset, load_inputs
from models.ensemble import Ensemble
from models.tuning import fit
from tests.brokers.exec_venues import OANDA_ACCOUNT, FakeOandaExec, serve
from tests.brokers.venues import SECRET
from tests.features.test_features import market
from trading.ledger import Ledger
from trading.live_models import LiveModel
from trading.runtime import LiveRuntime

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


class _Cache:
    def __init__(self, model: LiveModel) -> None:
        self.model = model

    def get(self, name: str, alias: str) -> LiveModel | None:
        return self.model if alias == "champion" else None

    def refresh(self) -> None:
        pass


def _champion(settings, store: CandleStore) -> LiveModel:
    """A logistic regression voting BUY on every bar (threshold 0.01): orders are exercised."""
    inputs = load_inputs(store, "EURUSD", "1h", settings.features)
    dataset = build_dataset(inputs, "EURUSD", "1h", settings.features, settings.labels)
    frame, columns = dataset.frame, dataset.meta.feature_columns
    y = (frame["label"] == 1).to_numpy().astype(np.int8)
    model = fit("logreg", {"C": 0.03}, frame.select(columns).to_numpy(), y, seed=1, n_threads=1)
    ensemble = Ensemble({"logreg": model}, {"logreg": 1.0}, columns, threshold=0.01, min_agree=1,
                        metadata=dataset.meta.model_metadata())  # fmt: skip
    spec = FeatureSpec.model_validate(ensemble.metadata["feature_spec"])
    return LiveModel("candleflow.EURUSD.1h", "1", ensemble, spec, settings.labels)


def test_live_flow_trades_a_fake_oanda(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.live_signals import live_signals

    for key, value in {
        "LIVE__EXECUTION_BROKER": "oanda",
        "OANDA__TOKEN": SECRET,
        "OANDA__ACCOUNT_ID": OANDA_ACCOUNT,
        "SIGNALS__AVOID_REGIME_BELOW": "0",
        "RISK__MAX_POSITIONS_PER_SYMBOL": "5",  # an order per candle here
    }.items():
        monkeypatch.setenv(f"CANDLEFLOW_{key}", value)
    settings = load_settings()
    store = CandleStore(settings.home)
    candles = market("EURUSD", days=240)
    store.upsert("EURUSD", "1h", candles.head(-2))
    model = _champion(settings, store)
    monkeypatch.setattr(LiveRuntime, "models", lambda self, home, client: _Cache(model))
    fake = FakeOandaExec()
    last = candles["ts"][-3]

    def run(now):
        rows = live_signals(symbols=["EURUSD"], now=now, collect=False, charts=False)
        return next(r for r in rows if not r.shadow)

    with serve(fake) as url:
        monkeypatch.setitem(oanda.HOSTS, "practice", url)
        dry = run(last + timedelta(hours=1, minutes=5))  # dry run (the default)
        ledger = Ledger.from_settings(settings.live, settings.home)
        assert dry.status == "OK" and dry.order_id, dry.reasons
        assert ledger.order(dry.order_id).status == "DRY_RUN" and fake.order_requests() == []

        monkeypatch.setenv("CANDLEFLOW_LIVE__DRY_RUN", "false")
        store.upsert("EURUSD", "1h", candles.head(-1))  # the next candle closed
        live = run(last + timedelta(hours=2, minutes=5))
        (sent,) = fake.order_requests()
        assert json.loads(sent.content)["order"]["clientExtensions"]["id"] == live.order_id
        assert ledger.order(live.order_id).status == "SUBMITTED"

        real_send = OandaExecution._send

        def crash_after_send(self, order, rules):
            real_send(self, order, rules)
            raise ConnectionError("killed after the venue accepted the order")

        store.upsert("EURUSD", "1h", candles)
        now = last + timedelta(hours=3, minutes=5)
        with monkeypatch.context() as patch:
            patch.setattr(OandaExecution, "_send", crash_after_send)
            with pytest.raises(Exception, match="killed after the venue accepted"):
                run(now)
        crashed = ledger.orders().filter(ledger.orders()["submission_status"] == "NEW")
        assert crashed.height == 1 and len(fake.order_requests()) == 2
        again = run(now + timedelta(minutes=10))  # the same candle: recognised, not sent again
        assert again.order_id == crashed["order_id"][0] and len(fake.order_requests()) == 2
        assert ledger.order(again.order_id).status in ("SUBMITTED", "FILLED")
        assert ledger.order(live.order_id).status == "FILLED"  # reconciled on a later run
        ids = [
            json.loads(r.content)["order"]["clientExtensions"]["id"] for r in fake.order_requests()
        ]
        assert sorted(ids) == sorted([live.order_id, again.order_id])

        timeouts = [ledger.order(o).timeout_at for o in (live.order_id, again.order_id)]
        run(max(timeouts) + timedelta(hours=1, minutes=5))  # both time-out bars have closed
        closed = [r.url.path.split("/trades/@")[1] for r in fake.close_requests()]
        assert sorted(c.removesuffix("/close") for c in closed) == sorted(ids)
        for order_id in ids:
            order = ledger.order(order_id)
            assert (order.status, order.exit_reason) == ("CLOSED", "TIMEOUT")
        run(max(timeouts) + timedelta(hours=1, minutes=15))
        assert len(fake.close_requests()) == 2  # closed once
