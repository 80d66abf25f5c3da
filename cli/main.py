"""``candleflow`` commands. Each one loads the validated config, then calls a flow or a library;
user errors end with a one-line reason on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    TimeframeOption,
    report_rows,
    run_flow,
    settings_of,
    split_csv,
    units_of,
)
from cli.errors import CandleflowGroup
from cli.live import positions, report_app, signals
from cli.models import models_app, promote
from cli.orchestrate import down_command, retrain_check, serve, up
from cli.pipeline import run
from core.errors import (
    BrokerError,
    CandleflowError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from core.reports import CollectReport, DatasetReport
from core.symbols import normalize_symbol
from core.timeframes import TIMEFRAMES, parse_timeframe

# Offline-safe defaults (the user's own environment wins): no telemetry, and a first ephemeral
# Prefect server start on a slow machine may take longer than Prefect's 20 s default.
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)

app = typer.Typer(
    cls=CandleflowGroup,
    name="candleflow",
    help="Turn market candles into trading signals, honestly. Runs offline on a simulated market.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect the local candle store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.command()(promote)
app.add_typer(report_app, name="report")
app.command()(run)
app.command()(signals)
app.command()(positions)
app.command("retrain-check")(retrain_check)
app.command()(serve)
app.command()(up)
app.command("down")(down_command)

# The human table leaves out what --json has for scripts (missing_candles, rows, reasons).
COLLECT_COLUMNS = CollectReport.table_columns()


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
) -> None:
    if home is not None and home.exists() and not home.is_dir():
        raise output.fail(f"--home {home}: a file, not a directory; name a state directory")
    ctx.obj = {"home": home, "config": config}


def _parse_date(value: str | None, option: str = "--start") -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        message = f"{option} {value!r} is not a date (use YYYY-MM-DD or ISO 8601)"
        raise output.fail(message) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@app.command()
def collect(
    ctx: typer.Context,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: the configured universe)")
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated timeframes ({' '.join(TIMEFRAMES)}) (default: configured)"
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Collect from this date (backfill) instead of from the newest stored candle"
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="Collect up to this date instead of now (reproducible runs)"),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Collect closed candles from the configured broker into the local store."""
    settings = settings_of(ctx)
    start_ts, end_ts = _parse_date(start), _parse_date(end, "--end")
    if start_ts is not None and end_ts is not None and start_ts >= end_ts:
        raise output.fail(f"--start {start} is not before --end {end}: nothing to collect")
    from brokers import create_broker
    from core.collect import collection_units

    try:
        broker = create_broker(settings)
        units = collection_units(settings, split_csv(symbols), split_csv(timeframe))
        _check_served(broker, units)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None

    from flows.collect_candles import configured

    with output.stderr.status(f"Collecting {len(units)} dataset(s) from {broker.name}…"):
        result = run_flow(
            configured(settings),
            symbols=[s for s, _ in units],
            timeframes=sorted({t for _, t in units}),
            start=start_ts,
            end=end_ts,
            settings=settings,
        )
    report_rows(result, json_, f"Candles in {settings.candles_dir}", COLLECT_COLUMNS)


def _check_served(broker: Any, units: list[tuple[str, str]]) -> None:
    """Fail fast, before Prefect starts, on symbols or timeframes the broker cannot serve. A
    venue that cannot be reached now is not the user's error: the flow retries it."""
    for symbol, tf in units:
        try:
            broker.check_symbol(symbol)
            broker.check_timeframe(tf)
        except (UnknownSymbolError, UnsupportedTimeframeError):
            raise
        except BrokerError as exc:
            output.stderr.print(f"could not check {symbol} {tf} now ({exc}); the flow will retry")
            return


# The human table leaves out what --json has for scripts (the range, the path).
DATASET_COLUMNS = DatasetReport.table_columns()


@app.command()
def dataset(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    json_: JsonOption = False,
) -> None:
    """Label stored candles and build feature datasets (one Parquet file per symbol)."""
    settings = settings_of(ctx)  # the label and feature specs are validated here, before any work
    units = units_of(settings, symbols, timeframe)
    from flows.build_dataset import configured

    with output.stderr.status(f"Building {len(units)} dataset(s)…"):
        result = run_flow(
            configured(settings),
            symbols=[s for s, _ in units],
            timeframes=sorted({t for _, t in units}),
            settings=settings,
        )
    report_rows(result, json_, f"Datasets in {settings.home / 'datasets'}", DATASET_COLUMNS)


TRAIN_COLUMNS = (
    "symbol",
    "timeframe",
    "version",
    "cv_auc",
    "oos_auc",
    "oos_sharpe",
    "oos_days",
    "dsr",
    "pbo",
    "trials_total",
    "trades",
    "bh_sharpe",
    "promoted",
    "error",
)


@app.command()
def train(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials per family (default: configured)")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Run the promotion gate afterwards")
    ] = True,
    json_: JsonOption = False,
) -> None:
    """Train, evaluate and register per-symbol models from their datasets (MLflow)."""
    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    from flows.train_models import configured

    with output.stderr.status(f"Training {len(units)} model(s)…"):
        result = run_flow(
            configured(settings),
            symbols=[s for s, _ in units],
            timeframes=sorted({t for _, t in units}),
            trials=trials,
            promote=promote,
            settings=settings,
        )
    title = f"Models in {settings.home / 'mlflow'} (experiments candleflow/<SYMBOL>/<TF>)"
    report_rows(result, json_, title, TRAIN_COLUMNS, _promotion_lines, _with_metrics)


def _with_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The table shows the headline metrics as columns."""
    return row | (row["metrics"] or {})


def _promotion_lines(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["promotion"] and r["promotion"]["summary"]:
            output.stderr.print(r["promotion"]["summary"])


@app.command("import")
def import_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file of candles")],
    symbol: Annotated[str, typer.Option(help="Symbol to store the candles as (any name)")],
    timeframe: Annotated[str, typer.Option(help="Timeframe of the candles in the file")],
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Time zone of naive timestamps (default: files.timezone)"),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Put the file in place of every stored candle")
    ] = False,
    allow_corrections: Annotated[
        bool, typer.Option("--allow-corrections", help="Let the file change stored candles")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Validate a user file and store it through the same path as collect; refused, writing
    nothing, into candles of another source or over ones it would change (unless the options)."""
    settings = settings_of(ctx)
    if not file.is_file():
        raise output.fail(f"{file}: {'is a directory' if file.is_dir() else 'no such file'}")
    try:  # everything the user can get wrong is checked before Prefect starts
        from brokers.files import check_timezone, read_candle_file
        from core.validation import check_spacing

        normalize_symbol(symbol)
        tf = parse_timeframe(timeframe)
        check_timezone(tz or settings.files.timezone)
        check_spacing(
            read_candle_file(file, timezone=tz or settings.files.timezone)["ts"], tf, what=file.name
        )
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    from flows.import_candles import import_candles

    with output.stderr.status(f"Importing {file.name}…"):
        result = run_flow(
            import_candles,
            file=str(file),
            symbol=symbol,
            timeframe=timeframe,
            timezone=tz,
            settings=settings,
            replace=replace,
            allow_corrections=allow_corrections,
        )
    if isinstance(result, CandleflowError):
        raise output.fail(str(result))
    if json_:
        output.print_json(result.row())
    else:
        output.print_table(f"Imported {file.name}", [result.row()], COLLECT_COLUMNS[:-1])
        if result.quarantined:
            quarantine = settings.home / "quarantine" / result.timeframe
            output.stderr.print(
                f"{result.quarantined} row(s) quarantined with reasons in "
                f"{quarantine / (result.symbol + '.parquet')}: {result.reasons}"
            )


@store_app.command("list")
def store_list(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Every stored symbol × timeframe: rows, range, quarantined rows."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    rows = [
        {
            "symbol": d.symbol,
            "timeframe": d.timeframe,
            "rows": d.rows,
            "first_ts": d.first_ts,
            "last_ts": d.last_ts,
            "quarantined": d.quarantined,
            "path": str(d.path),
        }
        for d in CandleStore(settings.home).datasets()
    ]
    if json_:
        output.print_json(rows)
    else:
        output.print_table(
            f"Candle store {settings.candles_dir}",
            rows,
            ("symbol", "timeframe", "rows", "first_ts", "last_ts", "quarantined"),
        )


@store_app.command("gaps")
def store_gaps(
    ctx: typer.Context,
    symbol: str,
    timeframe: str,
    json_: JsonOption = False,
) -> None:
    """Missing candles in a stored dataset (weekends of FX markets included)."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    try:
        gaps = CandleStore(settings.home).gaps(symbol, timeframe)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    rows = gaps.to_dicts()
    if json_:
        output.print_json(rows)
    else:
        output.print_table(f"Gaps in {symbol} {timeframe}", rows, ("after", "before", "missing"))


@store_app.command("quarantine")
def store_quarantine(
    ctx: typer.Context,
    symbol: str,
    timeframe: str,
    json_: JsonOption = False,
) -> None:
    """Rows that failed validation, with the reason per row."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    try:
        rows = CandleStore(settings.home).read_quarantine(symbol, timeframe).to_dicts()
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    if json_:
        output.print_json(rows)
    else:
        columns = list(rows[0]) if rows else ["ts", "reason"]
        output.print_table(f"Quarantined {symbol} {timeframe}", rows, columns)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """The effective configuration (file + environment + flags), as JSON."""
    output.print_json(settings_of(ctx).model_dump(mode="json"))


@config_app.command("reference")
def config_reference() -> None:
    """Every key with its environment variable, default, allowed values and meaning (Markdown)."""
    from core.config_reference import reference_markdown

    typer.echo(reference_markdown(), nl=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
