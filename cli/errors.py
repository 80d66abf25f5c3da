"""Failures of the environment a user can fix — a corrupt database or candle file, a read-only or
full disk, a state directory that is a file — turned into one line and exit 2 with the next step,
for every command (the command group catches them); anything else keeps its traceback."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from cli import output
from core.errors import CandleflowError, UnitsFailedError


class CandleflowGroup(TyperGroup):
    """The ``candleflow`` command group: user-fixable failures end as one line on stderr."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (
            click.exceptions.ClickException,
            click.exceptions.Exit,
            click.exceptions.Abort,
            typer.Exit,
        ):
            raise
        except Exception as exc:
            message = user_error(exc, _home(ctx))
            if message is None:
                raise
            code = output.EXIT_RUN_FAILED if isinstance(exc, UnitsFailedError) else None
            raise output.fail(message, code or output.EXIT_USER_ERROR) from None


def _home(ctx: click.Context) -> Path:
    home = (ctx.obj or {}).get("home") if isinstance(ctx.obj, dict) else None
    return Path(home or os.environ.get("CANDLEFLOW_HOME") or ".candleflow")


def user_error(exc: BaseException, home: Path) -> str | None:
    """The one-line message of a failure the user can fix, or ``None`` (a bug: keep the trace)."""
    for cause in _chain(exc):
        message = _describe(cause, home)
        if message is not None:
            return message
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _describe(exc: BaseException, home: Path) -> str | None:
    if isinstance(exc, CandleflowError):
        return str(exc)
    if isinstance(exc, sqlite3.DatabaseError) or _is_sqlalchemy_database_error(exc):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return (
            f"a database of the state directory {home} cannot be used ({detail}): the live "
            f"ledger is {home / 'live' / 'live.db'}, the model registry "
            f"{home / 'mlflow' / 'mlflow.db'}; restore it from a backup, or move it away to start "
            "that part afresh"
        )
    if isinstance(exc, PermissionError):
        return (
            f"permission denied: {exc.filename or exc}; the state directory {home} must be writable"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"no space left on the device writing {exc.filename or home}: free some and run again"
        )
    if isinstance(exc, NotADirectoryError | FileExistsError):
        return f"{exc.filename}: not a directory; --home (CANDLEFLOW_HOME) must name a directory"
    return None


def _is_sqlalchemy_database_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DatabaseError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    return isinstance(exc, DatabaseError)
