"""Stages 2 and 3: triple-barrier labels and features → one training dataset per symbol ×
timeframe, fanned out per unit; one unit's failure does not stop the others."""

from __future__ import annotations

from prefect import Flow, flow

from core.collect import collection_units
from core.config import Settings, load_settings
from features.dataset import DATASET_FIELDS
from flows._reporting import finish, first_error
from flows._runner import ConfiguredTaskRunner, cpu_workers, task_runner
from tasks.dataset import build_dataset_frame, load_dataset_inputs, write_dataset_file


@flow(name="build-dataset", task_runner=ConfiguredTaskRunner(cpu_workers))
def build_datasets(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    home: str | None = None,
    config: str | None = None,
) -> list[dict]:
    """Build the training dataset of each symbol × timeframe (defaults: the configured universe)
    with the configured label and feature specs."""
    settings = load_settings(config, home)
    features, labels = settings.features, settings.labels
    units = []
    for symbol, timeframe in collection_units(settings, symbols, timeframes):
        inputs = load_dataset_inputs.submit(settings.home, symbol, timeframe, features)
        built = build_dataset_frame.submit(inputs, symbol, timeframe, features, labels)
        written = write_dataset_file.submit(settings.home, built)
        units.append((symbol, timeframe, inputs, built, written))
    rows = []
    for symbol, timeframe, inputs, built, written in units:
        error = first_error(inputs, built, written)
        row = dict.fromkeys(DATASET_FIELDS) | {"symbol": symbol, "timeframe": timeframe}
        rows.append(row | ({"error": error} if error else written.result()))
    return finish(rows, "dataset-report", f"Training datasets (feature spec {features.hash})")


def configured(settings: Settings) -> Flow:
    """The flow with the configured task runner (threads: no more than cores, CPU-bound work)."""
    return build_datasets.with_options(task_runner=task_runner(settings, cpu_workers(settings)))


if __name__ == "__main__":
    build_datasets()
