"""Recording in MLflow: a retried record (after a successful registration) registers nothing new."""

from __future__ import annotations

from pathlib import Path

from models.recording import record_training
from models.tracking import setup
from models.training import train_dataset
from tests.models.conftest import Small


def test_a_retried_record_returns_the_version_it_registered(small: Small, tmp_path: Path) -> None:
    dataset, candles, cfg = small
    result = train_dataset(dataset, candles, cfg, tmp_path / "journal")
    first = record_training(result, cfg, dataset, tmp_path)
    again = record_training(result, cfg, dataset, tmp_path)
    assert (first.reused, again.reused) == (False, True)
    assert again.version == first.version == "1"
    client = setup(tmp_path)
    versions = client.search_model_versions("name='candleflow.BTCUSD.1h'")
    assert len(versions) == 1
    version = client.get_model_version_by_alias("candleflow.BTCUSD.1h", "challenger")
    tags = version.tags
    assert tags["training_key"] and tags["oos_start"] < tags["oos_end"]
    assert version.tags["data_hash"] == result.data_hash


def test_a_different_training_registers_a_new_version(small: Small, tmp_path: Path) -> None:
    import dataclasses

    dataset, candles, cfg = small
    result = train_dataset(dataset, candles, cfg, tmp_path / "journal")
    record_training(result, cfg, dataset, tmp_path)
    other = dataclasses.replace(cfg, threshold=0.6)
    second = record_training(result, other, dataset, tmp_path)
    assert second.version == "2" and not second.reused
