"""What a command shows while it works. Quiet by default: the terminal gets candleflow's own
warnings and every error, plus a live progress display per stage and per symbol; Prefect's
per-task lines, MLflow's and the libraries' notices go only to ``<home>/logs/candleflow.log``
(and, for flow and task runs, to Prefect's run logs, which the UI shows). ``-v`` prints
everything as it comes; ``-q`` prints errors only and no progress."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

QUIET, NORMAL, VERBOSE = -1, 0, 1
verbosity = NORMAL  # this process's, set once by the command line's -q / -v
LOG_FILE = Path("logs") / "candleflow.log"
OWN_PACKAGES = frozenset(
    {"brokers", "cli", "core", "deployments", "features", "flows", "models", "tasks", "trading"}
)
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # what tasks log through get_run_logger
# Set before Prefect / MLflow are imported (they read them once): no download bars, and MLflow's
# records go through the root logger like everyone else's instead of a stderr handler of its own.
QUIET_ENVIRONMENT = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_CONFIGURE_LOGGING": "false",
    "TQDM_DISABLE": "1",
}


def set_verbosity(level: int) -> None:
    """This process's verbosity, and the quiet defaults for libraries not imported yet (the
    user's environment wins; ``-v`` keeps the libraries' own)."""
    global verbosity
    verbosity = level
    if level < VERBOSE:
        for key, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(key, value)


class ConsoleFilter(logging.Filter):
    """Which records reach the terminal at a verbosity (the log file gets all of them)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbosity >= VERBOSE:
            return True
        floor = logging.ERROR if self.verbosity <= QUIET else logging.WARNING
        top = record.name.split(".", 1)[0]
        if top in OWN_PACKAGES or record.name.startswith(RUN_LOGGERS):
            return record.levelno >= floor
        return record.levelno >= logging.ERROR  # a library's notices: in the log file only


def _on_terminal(handler: logging.Handler) -> bool:
    """A handler writing to this process's stderr or stdout (Prefect's console handler among
    them) — not a file, not a capture (a test's, an embedding program's)."""
    streams = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in streams
    )


class _LogFile(logging.FileHandler):
    """The state directory's log file (one at a time per process: a new home replaces it)."""


def route_logs(home: Path, verbosity: int) -> Path | None:
    """Filter the terminal handlers of the root logger (Prefect's console handler lives there)
    and log every INFO line to ``home``'s log file. The file's path (None: cannot be written)."""
    logging.captureWarnings(True)  # warnings.warn(...) → the 'py.warnings' logger → the file
    root = logging.getLogger()
    path = home / LOG_FILE
    for handler in root.handlers:
        if _on_terminal(handler):
            handler.filters = [f for f in handler.filters if not isinstance(f, ConsoleFilter)]
            handler.addFilter(ConsoleFilter(verbosity))
    for handler in [h for h in root.handlers if isinstance(h, _LogFile)]:
        if handler.baseFilename == str(path.resolve()):
            return path
        root.removeHandler(handler)
        handler.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = _LogFile(path, encoding="utf-8", delay=True)
    except OSError:
        return None
    file.setLevel(logging.INFO)
    file.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root.addHandler(file)
    # The file sees INFO of Prefect's run loggers and of candleflow's own modules (the root
    # logger, whose level they would inherit, is at WARNING).
    for name in (*RUN_LOGGERS, *OWN_PACKAGES):
        if logging.getLogger(name).level == logging.NOTSET or name in RUN_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
    return path


# A task run is named "<stage>-<SYMBOL>-<TF>" (see tasks/); collect's are "<stage>-<SYMBOL>-<TF>"
# too. Anything else (open_live_run, publish charts) counts for the stage table only.
_TASK_NAME = re.compile(r"^(?P<stage>[a-z][a-z-]*?)-(?P<symbol>[A-Z0-9._]+)-(?P<tf>\d+[a-zA-Z]+)$")
_FINISHED = re.compile(r"^Finished in state (?P<state>\w+)")


@dataclass
class StageBoard:
    """Where each symbol × timeframe is: its latest stage and that stage's state, from the task
    runs' "Finished in state …" records."""

    units: Sequence[tuple[str, str]] = ()
    reached: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    finished: int = 0
    failed: int = 0

    def update(self, task_run_name: str, message: str) -> bool:
        done = _FINISHED.match(message)
        if done is None:
            return False
        state = done.group("state")
        self.finished += 1
        self.failed += state in ("Failed", "Crashed")
        match = _TASK_NAME.match(task_run_name)
        if match is not None:
            unit = (match.group("symbol"), match.group("tf"))
            self.reached[unit] = (match.group("stage"), state)
        return True

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for column in ("symbol", "tf", "stage", "state"):
            table.add_column(column)
        units = list(self.units) or sorted(self.reached)
        for unit in units:
            stage, state = self.reached.get(unit, ("waiting", ""))
            colour = {"Completed": "green", "Failed": "red", "Crashed": "red"}.get(state, "")
            shown = f"[{colour}]{state.lower()}[/]" if colour else state.lower()
            table.add_row(unit[0], unit[1], stage, shown)
        failed = f", {self.failed} failed" if self.failed else ""
        table.caption = f"{self.finished} task runs finished{failed}"
        return table


class _BoardHandler(logging.Handler):
    def __init__(self, board: StageBoard, live: Live, title: str) -> None:
        super().__init__(logging.INFO)
        self.board, self.live, self.title = board, live, title

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "task_run_name", None)
        try:
            if name and self.board.update(str(name), record.getMessage()):
                self.live.update(self.board.table(self.title))
        except Exception:  # a display must never break a run; logging reports it on stderr
            self.handleError(record)


@contextmanager
def progress(
    console: Console, title: str, units: Sequence[tuple[str, str]], verbosity: int
) -> Iterator[StageBoard]:
    """A live table of every unit's latest stage while a flow runs, on a terminal at the normal
    verbosity; elsewhere (a pipe, a log file, ``-q``/``-v``) the board still counts, silently."""
    board = StageBoard(units=list(units))
    if verbosity != NORMAL or not console.is_terminal:
        yield board
        return
    logger = logging.getLogger("prefect.task_runs")
    with Live(board.table(title), console=console, transient=True, refresh_per_second=4) as live:
        handler = _BoardHandler(board, live, title)
        logger.addHandler(handler)
        try:
            yield board
        finally:
            logger.removeHandler(handler)
