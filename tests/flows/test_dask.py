"""The Dask path: with ``orchestration.task_runner = "dask"`` the dataset and training fan-outs
run on a local Dask cluster (worker processes) and give the same results as the thread pool."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from core.config import load_settings
from features.dataset import read_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SYMBOLS = ["ETHUSD", "BTCUSD"]


@pytest.fixture
def collected(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.collect_candles import collect_candles

    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "60")
    collect_candles(symbols=SYMBOLS)


def _datasets(home: Path) -> dict[str, pl.DataFrame]:
    return {s: read_dataset(home / "datasets" / "1h" / f"{s}.parquet").frame for s in SYMBOLS}


def test_dataset_and_training_fan_out_on_a_local_dask_cluster(
    collected: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_dask import DaskTaskRunner

    from flows import build_dataset, train_models

    threads = load_settings()
    build_dataset.configured(threads)(symbols=SYMBOLS)
    expected = _datasets(threads.home)

    monkeypatch.setenv("CANDLEFLOW_ORCHESTRATION__TASK_RUNNER", "dask")
    settings = load_settings()
    flow = build_dataset.configured(settings)
    assert isinstance(flow.task_runner, DaskTaskRunner)
    rows = flow(symbols=SYMBOLS)
    assert {r.symbol for r in rows} == set(SYMBOLS)
    assert all(r.error is None for r in rows)
    for symbol, frame in _datasets(settings.home).items():
        assert frame.equals(expected[symbol]), symbol

    # The flow's own default runner reads the config when the run starts (a worker's path).
    from flows import _runner

    made, original = [], _runner.task_runner

    def spy(settings: object, workers: int) -> object:
        made.append(runner := original(settings, workers))
        return runner

    monkeypatch.setattr(_runner, "task_runner", spy)
    rows = train_models.train_models(symbols=SYMBOLS, trials=1, promote=False)
    assert all(r.error is None and r.version for r in rows), rows
    assert [type(r) for r in made] == [DaskTaskRunner]
