"""How the CLI talks: JSON alone on stdout with ``--json``, rich tables otherwise, one-line errors
on stderr, and Prefect's tracebacks hidden for errors that are the user's to fix."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Collection, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from core.errors import CandleflowError

# Piped output is not cut to 80 columns: a log file or `| less` gets the whole table.
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)  # notes and progress: silent with -q (``stderr.quiet``)
_errors = Console(stderr=True)  # the one-line errors: always

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(document: Any) -> None:
    """Valid JSON on stdout: an undefined number (NaN, ±inf) is ``null``."""
    text = json.dumps(_finite(document), indent=2, default=_default, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_table(
    title: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    wide: bool = False,
    detail: Collection[str] = (),
) -> None:
    """A table of ``rows`` rendered by the columns' kinds (``core.formatting.COLUMNS``); a column
    empty in every row (e.g. ``error``) is left out, wide ones (and ``detail``) unless ``wide``;
    a wide table is not squeezed into the terminal (its lines run on)."""
    table = table_of(title, rows, columns, wide, detail)
    if not wide:
        stdout.print(table)
        return
    natural = Measurement.get(stdout, stdout.options.update(width=10_000), table).maximum
    width = stdout.width
    stdout.width = max(width, natural)
    try:
        stdout.print(table)
    finally:
        stdout.width = width


def table_of(
    title: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    wide: bool = False,
    detail: Collection[str] = (),
) -> Table:
    # loaded when a table prints: `--help` stays fast
    from core.formatting import COLUMNS, NUMERIC, Column, cells, label, visible_columns

    shown = visible_columns(columns, rows, wide, detail)
    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False
    )
    for column in shown:
        spec = COLUMNS.get(column, Column())
        cut = spec.max_width is not None and not wide  # --wide folds the whole text instead
        table.add_column(
            label(column),
            justify="right" if spec.kind in NUMERIC else "left",
            overflow="ellipsis" if cut else "fold",
            no_wrap=cut,
            max_width=spec.max_width if cut else None,
        )
    for row in rows:
        table.add_row(*[Text(c.text, style=c.style or "") for c in cells(row, shown)])
    return table


def print_record(title: str, record: dict[str, Any]) -> None:
    """One record as a two-column table, a field per line (e.g. the paper account)."""
    from core.formatting import cells

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, cell in zip(record, cells(record, list(record)), strict=True):
        table.add_row(name.replace("_", " "), Text(cell.text, style=cell.style or ""))
    stdout.print(table)


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``candleflow: message`` as one line on stderr; return the exit to raise."""
    first_line = " ".join(str(message).split())
    _errors.print(f"[bold red]candleflow:[/] {first_line}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class _HideUserErrorTracebacks(logging.Filter):
    """Prefect logs a failed run's exception with its traceback; for a ``CandleflowError`` (bad
    input, unknown symbol, …) the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], CandleflowError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks() -> None:
    hide = _HideUserErrorTracebacks()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(hide)
