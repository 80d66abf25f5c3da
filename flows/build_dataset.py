"""Stages 2 and 3: label the candles and build their features (a task each), then join them into
one training dataset per symbol × timeframe; fanned out per unit, one unit's failure does not stop
the others."""

from __future__ import annotations

from prefect import Flow, flow

from core.collect import collection_units
from core.config import Settings, load_settings
from core.reports import DatasetReport
from flows._fanout import Chain, fan_out, finish
from flows._runner import ConfiguredTaskRunner, cpu_workers, task_runner, unit_threads
from tasks.dataset import dataset, features, label, load_dataset_inputs

# A unit's tasks: inputs, labels, features, dataset (flows._runner.unit_threads).
THREADS = unit_threads(cpu_workers, tasks_per_unit=4)


@flow(name="build-dataset", task_runner=ConfiguredTaskRunner(THREADS))
def build_datasets(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> list[DatasetReport]:
    """Build the training dataset of each symbol × timeframe (defaults: the configured universe)
    with the configured label and feature specs. ``settings``: the configuration already resolved
    by the caller (else loaded from ``config`` / ``home``)."""
    settings = settings or load_settings(config, home)

    def chain(symbol: str, timeframe: str) -> Chain:
        inputs = load_dataset_inputs.submit(settings.home, symbol, timeframe, settings.features)
        labels = label.submit(inputs, symbol, timeframe, settings.labels)
        built = features.submit(inputs, symbol, timeframe, settings.features)
        joined = dataset.submit(settings.home, built, labels, symbol, timeframe)
        return inputs, labels, built, joined

    rows = fan_out(collection_units(settings, symbols, timeframes), chain, DatasetReport)
    return finish(
        rows, "dataset-report", f"Training datasets (feature spec {settings.features.hash})"
    )


def configured(settings: Settings) -> Flow:
    """The flow with the configured task runner (threads: no more than cores, CPU-bound work)."""
    return build_datasets.with_options(task_runner=task_runner(settings, THREADS(settings)))


if __name__ == "__main__":
    build_datasets()
