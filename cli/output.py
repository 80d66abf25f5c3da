"""How the CLI talks: JSON alone on stdout with ``--json``, rich tables otherwise, one-line errors
on stderr, and Prefect's tracebacks hidden for errors that are the user's to fix."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from core.errors import CandleflowError

# Piped output is not cut to 80 columns: a log file or `| less` gets the whole table.
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)

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


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A table of ``rows``; a column that is empty in every row (e.g. ``error``) is left out."""
    columns = [c for c in columns if any(row.get(c) not in (None, "") for row in rows)] or columns
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    stdout.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":
        return value[:16].replace("T", " ")
    return str(value)


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``candleflow: message`` as one line on stderr; return the exit to raise."""
    first_line = " ".join(str(message).split())
    stderr.print(f"[bold red]candleflow:[/] {first_line}", highlight=False, soft_wrap=True)
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
