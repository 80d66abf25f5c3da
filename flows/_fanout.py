"""What every flow shares: fan a chain of tasks out over symbol × timeframe units, turn each
unit's futures into its report row (a failed unit's row names its first failed task), publish the
rows as a Prefect table artifact, and end the run failed when a unit failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture

from core.errors import UnitsFailedError
from core.formatting import formatted_rows
from core.reports import PromoteReport, UnitReport

R = TypeVar("R", bound=UnitReport)
Unit = tuple[str, str]  # symbol, timeframe
Chain = Sequence[PrefectFuture[Any]]  # a unit's task futures, upstream first; the last one's
# result is the unit's report row


def fan_out(units: Sequence[Unit], submit: Callable[[str, str], Chain], report: type[R]) -> list[R]:
    """Submit every unit's chain first (the units run in parallel on the flow's task runner),
    then wait for each: its report row, or a failed row naming the first failed task."""
    chains = [(symbol, timeframe, submit(symbol, timeframe)) for symbol, timeframe in units]
    return [row_of(symbol, timeframe, chain, report) for symbol, timeframe, chain in chains]


def row_of(symbol: str, timeframe: str, chain: Chain, report: type[R]) -> R:
    """A unit's report row: its last task's result; when a task failed, the furthest row the
    chain reached (e.g. the recorded training whose promotion failed) with the first error."""
    error = first_error(*chain)
    if error is None:
        return chain[-1].result()
    reached = [
        f.result() for f in chain if f.state.is_completed() and isinstance(f.result(), report)
    ]
    if reached:
        return reached[-1].model_copy(update={"error": error})
    return report.failed(symbol, timeframe, error)


def first_error(*futures: PrefectFuture[Any]) -> str | None:
    """The message of the first failed future in a chain (upstream first), or ``None``."""
    for future in futures:
        future.wait()
        state = future.state
        if state.is_failed() or state.is_crashed():
            outcome = state.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                return f"{type(outcome).__name__}: {outcome}"
            return state.message or state.name
        if not state.is_completed():
            return state.message or state.name
    return None


def finish(rows: list[R], key: str, description: str) -> list[R]:
    """Publish a stage's rows as a table artifact; end the run failed, naming the failed units
    (their rows carried by the error), when any failed."""
    publish_table(key, rows, description)
    return raise_if_failed(rows)


def raise_if_failed(rows: list[R]) -> list[R]:
    """End the run failed, naming the failed units, when any failed (rows carried by the error)."""
    failed = [f"{r.symbol} {r.timeframe} ({r.error})" for r in rows if r.error]
    if failed:
        raise UnitsFailedError(f"{len(failed)} of {len(rows)} failed: " + "; ".join(failed), rows)
    return rows


def publish_table(key: str, rows: Sequence[UnitReport], description: str) -> None:
    """A Prefect table artifact of the rows: every column of the CLI's ``--wide`` table, rounded
    and worded as the CLI shows it."""
    columns = type(rows[0]).table_columns() if rows else ()
    table = formatted_rows([r.table_row() for r in rows], columns)
    create_table_artifact(key=key, table=table, description=description)


def publish_decisions(rows: Sequence[PromoteReport]) -> None:
    """The decisions as a markdown artifact (one line each, with its numbers) and a table."""
    lines = ["# Promotion decisions", ""]
    lines += [f"- {r.summary or f'{r.symbol} {r.timeframe}: {r.error}'}" for r in rows]
    create_markdown_artifact(
        key="promotion-decisions", markdown="\n".join(lines), description="Promotion gate"
    )
    publish_table("promotion-table", rows, "Promotion decisions")
