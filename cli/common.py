"""What the command modules share: option types, settings from the context, running a flow in
this process, and printing a stage's rows (JSON or a table; exit 1 when some units failed)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import logs, output
from cli.prefect_env import use_prefect_of
from core.errors import CandleflowError, UnitsFailedError

if TYPE_CHECKING:  # loaded by the commands that need them: `--help` stays fast
    from core.config import Settings
    from core.reports import UnitReport

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Show every column (the table may exceed the terminal).")
]
SymbolsOption = Annotated[
    str | None, typer.Option(help="Comma-separated symbols (default: the configured universe)")
]
TimeframeOption = Annotated[
    str | None, typer.Option(help="Comma-separated timeframes (default: configured)")
]


def settings_of(ctx: typer.Context) -> Settings:
    """The validated configuration; Prefect is pointed at its state directory (see
    :mod:`cli.prefect_env`) before any flow imports it."""
    from core.config import load_settings

    try:
        settings = load_settings(ctx.obj["config"], ctx.obj["home"])
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    use_prefect_of(settings.home)
    return settings


@contextlib.contextmanager
def loading_libraries() -> Iterator[None]:
    """Import a flow and its libraries with the cyclic garbage collector paused, then freeze what
    they made (``gc.freeze``): a few hundred thousand objects that live as long as the process,
    which the collector would otherwise traverse again and again while they load and after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def split_csv(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def run_flow(
    flow_fn: Any, *, board: tuple[str, Sequence[tuple[str, str]]] | None = None, **params: Any
) -> Any:
    """Run a flow in this process; a user error ends the command with a one-line reason. The
    terminal shows what :mod:`cli.logs` lets through; ``board`` = (title, units) adds the live
    stage table (the caller shows no spinner of its own then)."""
    settings = params.get("settings")
    if settings is not None:
        logs.route_logs(settings.home, logs.verbosity)
    output.quiet_user_error_tracebacks()
    from flows._runner import heartbeats_off

    with contextlib.ExitStack() as stack:
        stack.enter_context(heartbeats_off())
        if board is not None:
            stack.enter_context(logs.progress(output.stderr, board[0], board[1], logs.verbosity))
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
    columns: Sequence[str] | None = None,
    after_table: Callable[[list[dict[str, object]]], None] | None = None,
    table_row: Callable[[dict[str, object]], dict[str, object]] | None = None,
    wide: bool = False,
) -> None:
    """Print a stage's report rows: ``--json``, or a table of the report's ``table_row()``s in
    ``columns`` (default: the report's ``table_columns()``; ``table_row`` reshapes a row for it,
    ``after_table`` adds notes below it, ``wide`` adds the wide columns); a partial failure
    still prints them, then exits 1."""
    if isinstance(result, CandleflowError) and not isinstance(result, UnitsFailedError):
        raise output.fail(str(result))
    reports = list(result.rows if isinstance(result, UnitsFailedError) else result)
    if json_:
        output.print_json([r.row() for r in reports])
    else:
        report = type(reports[0]) if reports else None
        rows = [r.table_row() for r in reports]
        rows = [table_row(r) for r in rows] if table_row else rows
        if columns is None:
            columns = report.table_columns() if report else ("symbol", "timeframe")
        output.print_table(title, rows, columns, wide, report.wide if report else ())
        if after_table is not None:
            after_table([r.row() for r in reports])
    if isinstance(result, UnitsFailedError):
        raise output.fail(str(result), output.EXIT_RUN_FAILED)
