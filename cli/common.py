"""What the command modules share: option types, settings from the context, running a flow in
this process, and printing a stage's rows (JSON or a table; exit 1 when some units failed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import output
from core.config import Settings, load_settings
from core.errors import CandleflowError, UnitsFailedError
from core.reports import UnitReport

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
SymbolsOption = Annotated[
    str | None, typer.Option(help="Comma-separated symbols (default: the configured universe)")
]
TimeframeOption = Annotated[
    str | None, typer.Option(help="Comma-separated timeframes (default: configured)")
]


def settings_of(ctx: typer.Context) -> Settings:
    try:
        return load_settings(ctx.obj["config"], ctx.obj["home"])
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None


def split_csv(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def run_flow(flow_fn: Any, **params: Any) -> Any:
    """Run a flow in this process; a user error ends the command with a one-line reason."""
    output.quiet_user_error_tracebacks()
    state = flow_fn(**params, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        if isinstance(result, CandleflowError):
            return result
        raise result
    return result


def units_of(
    settings: Settings, symbols: str | None, timeframe: str | None
) -> list[tuple[str, str]]:
    """Symbol × timeframe units of a command (a bad name ends it with a one-line reason)."""
    from core.collect import collection_units

    try:
        return collection_units(settings, split_csv(symbols), split_csv(timeframe))
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None


def config_arg(ctx: typer.Context) -> str | None:
    config = ctx.obj["config"]
    return str(Path(config).resolve()) if config else None


def report_rows(
    result: Sequence[UnitReport] | CandleflowError,
    json_: bool,
    title: str,
    columns: Sequence[str],
    after_table: Callable[[list[dict[str, object]]], None] | None = None,
    table_row: Callable[[dict[str, object]], dict[str, object]] | None = None,
) -> None:
    """Print a stage's report rows: ``--json``, or a table (``table_row`` reshapes a row for it,
    ``after_table`` adds notes below it); a partial failure still prints them, then exits 1."""
    if isinstance(result, CandleflowError) and not isinstance(result, UnitsFailedError):
        raise output.fail(str(result))
    rows = [r.row() for r in (result.rows if isinstance(result, UnitsFailedError) else result)]
    if json_:
        output.print_json(rows)
    else:
        output.print_table(title, [table_row(r) for r in rows] if table_row else rows, columns)
        if after_table is not None:
            after_table(rows)
    if isinstance(result, UnitsFailedError):
        raise output.fail(str(result), output.EXIT_RUN_FAILED)
