"""The pipeline's stage commands: ``collect``, ``import``, ``dataset``, ``train``. Each loads the
validated config, checks what the user can get wrong before Prefect starts, runs its flow with a
live stage table, and prints the rows (``--json`` for scripts)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    TimeframeOption,
    WideOption,
    loading_libraries,
    report_rows,
    run_flow,
    settings_of,
    split_csv,
    units_of,
)
from core.errors import (
    BrokerError,
    CandleflowError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from core.symbols import normalize_symbol
from core.timeframes import TIMEFRAMES, parse_timeframe


def _parse_date(value: str | None, option: str = "--start") -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        message = f"{option} {value!r} is not a date (use YYYY-MM-DD or ISO 8601)"
        raise output.fail(message) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
    wide: WideOption = False,
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

    from cli.attach import run_in_service
    from core.reports import CollectReport

    names, timeframes = [s for s, _ in units], sorted({t for _, t in units})
    result = run_in_service(settings, "collect", CollectReport, names, timeframes, start_ts, end_ts)
    if result is None:  # no `up` service to run it: in this process
        with loading_libraries():
            from flows.collect_candles import configured

        result = run_flow(
            configured(settings),
            symbols=names,
            timeframes=timeframes,
            start=start_ts,
            end=end_ts,
            settings=settings,
            board=(f"Collecting {len(units)} dataset(s) from {broker.name}…", units),
        )
    report_rows(result, json_, f"Candles in {settings.candles_dir}", wide=wide)


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


def dataset(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Label stored candles and build feature datasets (one Parquet file per symbol)."""
    settings = settings_of(ctx)  # the label and feature specs are validated here, before any work
    units = units_of(settings, symbols, timeframe)
    with loading_libraries():
        from flows.build_dataset import configured

    result = run_flow(
        configured(settings),
        symbols=[s for s, _ in units],
        timeframes=sorted({t for _, t in units}),
        settings=settings,
        board=(f"Building {len(units)} dataset(s)…", units),
    )
    title = f"Datasets in {settings.home / 'datasets'}"
    # the table leaves out what --json has for scripts (the range, the path)
    report_rows(result, json_, title, wide=wide)


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
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Train, evaluate and register per-symbol models from their datasets (MLflow)."""
    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    _check_datasets(settings.home, units)
    with loading_libraries():
        from flows.train_models import configured

    result = run_flow(
        configured(settings),
        symbols=[s for s, _ in units],
        timeframes=sorted({t for _, t in units}),
        trials=trials,
        promote=promote,
        settings=settings,
        board=(f"Training {len(units)} model(s)…", units),
    )
    title = f"Models in {settings.home / 'mlflow'} (experiments candleflow/<SYMBOL>/<TF>)"
    report_rows(result, json_, title, after_table=_promotion_lines, wide=wide)


def _check_datasets(home: Path, units: list[tuple[str, str]]) -> None:
    """Train needs each unit's dataset: say which are missing and how to build them, before
    Prefect starts."""
    from features.dataset import dataset_path

    missing = [(s, tf) for s, tf in units if not dataset_path(home, s, tf).is_file()]
    if missing:
        names = ", ".join(f"{s} {tf}" for s, tf in missing)
        symbols = ",".join(sorted({s for s, _ in missing}))
        timeframes = ",".join(sorted({tf for _, tf in missing}))
        raise output.fail(
            f"no dataset for {names}: run `candleflow dataset --symbols {symbols} "
            f"--timeframe {timeframes}` first"
        )


def _promotion_lines(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["promotion"] and r["promotion"]["summary"]:
            output.stderr.print(r["promotion"]["summary"])


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
    wide: WideOption = False,
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

    result = run_flow(
        import_candles,
        file=str(file),
        symbol=symbol,
        timeframe=timeframe,
        timezone=tz,
        settings=settings,
        replace=replace,
        allow_corrections=allow_corrections,
        board=(f"Importing {file.name}…", [(symbol.upper(), timeframe)]),
    )
    if isinstance(result, CandleflowError):
        raise output.fail(str(result))
    if json_:
        output.print_json(result.row())
    else:
        columns = [c for c in type(result).table_columns() if c != "error"]
        output.print_table(f"Imported {file.name}", [result.table_row()], columns, wide)
        if result.quarantined:
            quarantine = settings.home / "quarantine" / result.timeframe
            output.stderr.print(
                f"{result.quarantined} row(s) quarantined with reasons in "
                f"{quarantine / (result.symbol + '.parquet')}: {result.reasons}"
            )
