"""The retrain check's decision (enough new samples / live decay / neither, cooldown, no model)
and the evidence it is built from: registry versions, known outcomes, the champion's live BUYs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from core.feature_spec import LabelSpec
from core.reports import RetrainReport
from core.settings_orchestration import RetrainSettings
from core.store import CandleStore
from tests.features.test_features import NOW, market
from trading.ledger import Ledger
from trading.records import SignalRecord
from trading.retrain import (
    DECAY,
    NEW_SAMPLES,
    NO_MODEL,
    NONE,
    RetrainEvidence,
    decide_retrain,
    gather_evidence,
    report_row,
)
from trading.shadow import known_outcomes

CFG = RetrainSettings(min_new_samples=100, min_live_hit_rate=0.4, min_resolved_signals=10)


def evidence(**kw: object) -> RetrainEvidence:
    base = {"champion": "3", "newest": "3", "trained_hours_ago": 200.0, "new_samples": 10}
    return RetrainEvidence("BTCUSD", "1h", **(base | kw))  # type: ignore[arg-type]


def test_enough_new_samples_retrains() -> None:
    d = decide_retrain(evidence(new_samples=100), CFG)
    assert (d.retrain, d.trigger) == (True, NEW_SAMPLES)
    assert "100 labelled samples since v3's data ended" in d.reasons[0]
    assert not decide_retrain(evidence(new_samples=99), CFG).retrain


def test_live_decay_retrains_once_enough_outcomes_are_known() -> None:
    decayed = decide_retrain(evidence(live_resolved=20, live_wins=7), CFG)  # 35 %
    assert (decayed.retrain, decayed.trigger) == (True, DECAY)
    assert "35.0% over 20 resolved" in decayed.reasons[0]
    healthy = decide_retrain(evidence(live_resolved=20, live_wins=8), CFG)  # 40 %: not below
    assert (healthy.retrain, healthy.trigger) == (False, NONE)
    too_few = decide_retrain(evidence(live_resolved=9, live_wins=0), CFG)
    assert not too_few.retrain and "9 resolved live BUYs < 10" in too_few.reasons[1]


def test_the_report_row_is_a_retrain_report() -> None:
    end = datetime(2024, 3, 1, 12, tzinfo=UTC)
    e = evidence(live_resolved=20, live_wins=7, data_end=end, trained_hours_ago=200.04)
    row = report_row(e, decide_retrain(e, CFG))
    assert isinstance(row, RetrainReport) and (row.symbol, row.timeframe) == ("BTCUSD", "1h")
    assert (row.champion, row.newest, row.data_end, row.new_samples) == ("3", "3", end, 10)
    assert (row.live_resolved, row.live_hit_rate, row.trained_hours_ago) == (20, 0.35, 200.0)
    assert (row.retrain, row.trigger, row.error) == (True, DECAY, None)
    assert row.reasons and "35.0%" in row.reasons[0]
    unknown = report_row(evidence(trained_hours_ago=None), decide_retrain(evidence(), CFG))
    assert (unknown.live_hit_rate, unknown.trained_hours_ago) == (None, None)


def test_neither_reports_both_reasons() -> None:
    d = decide_retrain(evidence(new_samples=5, live_resolved=30, live_wins=20), CFG)
    assert not d.retrain and d.trigger == NONE and len(d.reasons) == 2
    assert "5 labelled samples" in d.reasons[0] and "66.7%" in d.reasons[1]


def test_cooldown_blocks_both_triggers() -> None:
    d = decide_retrain(
        evidence(trained_hours_ago=3.0, new_samples=10_000, live_resolved=50, live_wins=0), CFG
    )
    assert not d.retrain and "cooldown 24 h" in d.reasons[0]


def test_no_model_trains_when_there_is_enough_data() -> None:
    none = {"champion": None, "newest": None, "trained_hours_ago": None}
    assert decide_retrain(evidence(**none, new_samples=500), CFG).trigger == NO_MODEL
    assert not decide_retrain(evidence(**none, new_samples=50), CFG).retrain


def test_no_champion_cannot_decay() -> None:
    d = decide_retrain(evidence(champion=None, newest="2"), CFG)
    assert not d.retrain and "no champion" in d.reasons[1]


@pytest.fixture
def world(tmp_path: Path) -> tuple[MlflowClient, CandleStore, Ledger, pl.DataFrame]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a global set by other tests
    store = CandleStore(tmp_path / "home")
    candles = market("BTCUSD", days=60)
    store.upsert("BTCUSD", "1h", candles)
    ledger = Ledger(f"sqlite:///{tmp_path / 'live.db'}")
    ledger.create_all()
    return client, store, ledger, candles


def test_evidence_counts_outcomes_after_the_newest_versions_data_end(world: tuple) -> None:
    client, store, ledger, candles = world
    labels = LabelSpec()
    name = "candleflow.BTCUSD.1h"
    now = NOW

    empty = gather_evidence(client, store, ledger, "BTCUSD", "1h", labels, now)
    all_known = known_outcomes(candles, "1h", labels)
    assert empty.newest is None and empty.new_samples == all_known.height > 1000

    client.create_registered_model(name)
    ends = [candles["ts"][500], candles["ts"][900]]
    for end in ends:  # v1 (champion), v2 (newer, refused)
        client.create_model_version(name, source=str(Path.cwd()), tags={"oos_end": end.isoformat()})
    client.set_registered_model_alias(name, "champion", "1")
    # The champion's live BUYs: 3 on bars whose outcome is known, one the shadow's (ignored).
    known = all_known.filter(pl.col("ts") > ends[0]).head(3)
    for ts in known["ts"]:
        ledger.record_signal(SignalRecord("BTCUSD", "1h", ts, name, "1", "OK", action=1))
    shadow = SignalRecord("BTCUSD", "1h", known["ts"][0], name, "2", "OK", shadow=True, action=1)
    ledger.record_signal(shadow)
    e = gather_evidence(client, store, ledger, "BTCUSD", "1h", labels, now + timedelta(days=1))
    assert (e.champion, e.newest) == ("1", "2")
    assert e.data_end == ends[1].replace(tzinfo=UTC)
    assert e.new_samples == all_known.filter(pl.col("ts") > ends[1]).height
    assert e.live_resolved == 3 and e.live_wins == int((known["label"] == 1).sum())
    assert e.trained_hours_ago is not None and 0 <= e.trained_hours_ago < 24 * 365 * 5
