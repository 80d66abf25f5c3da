"""``candleflow``: the command line. Commands are listed in the order of the pipeline; each loads
the validated config, then calls a flow or a library; user errors end with a one-line reason on
stderr and exit 2, never a traceback. Importing this module loads no Prefect, MLflow or data
library: ``--help``, ``--version`` and the commands that run no flow answer in well under a
second; a command imports what it needs when it runs."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Annotated

import typer

from cli import logs, output
from cli.api import api
from cli.broker import broker_app
from cli.errors import CandleflowGroup
from cli.live import positions, report_app, signals
from cli.models import models_app, promote
from cli.orchestrate import down_command, retrain_check, serve, up
from cli.pipeline import run
from cli.report_backtest import backtest
from cli.stages import collect, dataset, import_file, train
from cli.status import status
from cli.store import config_app, store_app

# Offline-safe defaults (the user's own environment wins): no telemetry, and a first ephemeral
# Prefect server start on a slow machine may take longer than Prefect's 20 s default.
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)

PIPELINE, MODELS, LIVE, SERVERS, INSPECT = (
    "Pipeline (in order)",
    "Models and reports",
    "Live trading",
    "Servers and schedules",
    "Inspect",
)

app = typer.Typer(
    cls=CandleflowGroup,
    name="candleflow",
    help="Turn market candles into trading signals, honestly. Runs offline on a simulated market.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command(rich_help_panel=PIPELINE)(run)
app.command(rich_help_panel=PIPELINE)(collect)
app.command("import", rich_help_panel=PIPELINE)(import_file)
app.command(rich_help_panel=PIPELINE)(dataset)
app.command(rich_help_panel=PIPELINE)(train)
app.command(rich_help_panel=PIPELINE)(promote)
app.command(rich_help_panel=LIVE)(signals)
app.command(rich_help_panel=LIVE)(positions)
app.add_typer(models_app, name="models", rich_help_panel=MODELS)
report_app.command("backtest")(backtest)
app.add_typer(report_app, name="report", rich_help_panel=MODELS)
app.command("retrain-check", rich_help_panel=MODELS)(retrain_check)
app.command(rich_help_panel=SERVERS)(up)
app.command("down", rich_help_panel=SERVERS)(down_command)
app.command(rich_help_panel=SERVERS)(serve)
app.command(rich_help_panel=SERVERS)(api)
app.command(rich_help_panel=INSPECT)(status)
app.add_typer(store_app, name="store", rich_help_panel=INSPECT)
app.add_typer(broker_app, name="broker", rich_help_panel=INSPECT)
app.add_typer(config_app, name="config", rich_help_panel=INSPECT)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"candleflow {version('candleflow')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("candleflow (not installed: run `uv sync`)")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="CANDLEFLOW_HOME",
            help="State directory for everything the pipeline writes (default ./.candleflow)",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="CANDLEFLOW_CONFIG",
            help="TOML config file (default ./candleflow.toml, else the shipped one)",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Errors and results only: no progress, no notes")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Every log line as it comes (Prefect, MLflow, libraries)"
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """Turn market candles into trading signals, honestly. Runs offline on a simulated market.

    Start with **candleflow run**; every log line also goes to <home>/logs/candleflow.log."""
    if quiet and verbose:
        raise output.fail("--quiet and --verbose: choose one")
    if home is not None and home.exists() and not home.is_dir():
        raise output.fail(f"--home {home}: a file, not a directory; name a state directory")
    logs.set_verbosity(logs.QUIET if quiet else logs.VERBOSE if verbose else logs.NORMAL)
    output.stderr.quiet = quiet  # notes, summaries, progress; errors still print
    ctx.obj = {"home": home, "config": config}


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's exit ends with a full collection over every object left, the
        # libraries a command loaded included; frozen, they go with the process instead.
        gc.freeze()


if __name__ == "__main__":
    main()
