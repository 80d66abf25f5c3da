"""Recording in MLflow: a retried record (after a successful registration) registers nothing new;
runs a killed recording left RUNNING are marked FAILED by the next one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from models.recording import record_training
from models.tracking import FAILED_REASON_TAG, HOST_TAG, PID_TAG, ensure_experiment, setup
from models.training import train_dataset
from tests.models.conftest import Small, Trained


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


def test_recording_fails_the_running_runs_of_a_killed_recording(
    trained: Trained, tmp_path: Path
) -> None:
    """A recording killed mid-run left its run RUNNING; the next recording marks it FAILED."""

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid: a process that has ended
    client = setup(tmp_path)
    experiment = ensure_experiment(client, "candleflow/BTCUSD/1h", tmp_path)
    tags = {PID_TAG: str(child.pid), HOST_TAG: socket.gethostname()}
    orphan = client.create_run(experiment, tags=tags, run_name="train BTCUSD 1h").info.run_id

    recorded = record_training(trained.result, trained.cfg, trained.dataset, tmp_path)
    run = client.get_run(orphan)
    assert run.info.status == "FAILED"
    assert f"process {child.pid}" in run.data.tags[FAILED_REASON_TAG]
    new = client.get_run(recorded.run_id)
    assert new.info.status == "FINISHED"
    assert new.data.tags[PID_TAG].isdigit() and new.data.tags[HOST_TAG] == socket.gethostname()
