"""Turning task futures into report rows and Prefect artifacts (shared by the flows)."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture

from core.collect import REPORT_FIELDS
from core.errors import UnitsFailedError


def first_error(*futures: PrefectFuture) -> str | None:
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


def unit_row(
    symbol: str, timeframe: str, fetched: int | None, report: Any, error: str | None
) -> dict[str, Any]:
    """One row of a collect/import report (``report`` is an ``UpsertReport`` or ``None``)."""
    row: dict[str, Any] = dict.fromkeys(REPORT_FIELDS)
    row.update(symbol=symbol, timeframe=timeframe, fetched=fetched, error=error)
    if report is not None:
        data = report.to_dict()
        row.update({k: data[k] for k in REPORT_FIELDS if k in data})
        row["reasons"] = data["reasons"]
    return row


def finish(rows: list[dict[str, Any]], key: str, description: str) -> list[dict[str, Any]]:
    """Publish a stage's rows as a table artifact; end the run failed, naming the failed units
    (their rows carried by the error), when any failed."""
    publish_table(key, rows, description)
    return raise_if_failed(rows)


def raise_if_failed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """End the run failed, naming the failed units, when any failed (rows carried by the error)."""
    failed = [f"{r['symbol']} {r['timeframe']} ({r['error']})" for r in rows if r["error"]]
    if failed:
        raise UnitsFailedError(f"{len(failed)} of {len(rows)} failed: " + "; ".join(failed), rows)
    return rows


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A Prefect table artifact of ``rows`` (values made display-friendly)."""
    table = [
        {
            k: ("" if v is None else v if isinstance(v, int | float | str) else str(v))
            for k, v in row.items()
        }
        for row in rows
    ]
    create_table_artifact(key=key, table=table, description=description)


def publish_decisions(rows: list[dict]) -> None:
    """The decisions as a markdown artifact (one line each, with its numbers) and a table."""
    lines = ["# Promotion decisions", ""]
    for r in rows:
        failed = f"{r['symbol']} {r['timeframe']}: {r['error']}"
        lines.append(f"- {r.get('summary') or failed}")
    create_markdown_artifact(
        key="promotion-decisions", markdown="\n".join(lines), description="Promotion gate"
    )
    publish_table(
        "promotion-table",
        [
            {
                "symbol": r["symbol"],
                "timeframe": r["timeframe"],
                "version": r["version"],
                "promoted": r["promoted"],
                "reasons": "; ".join(r["reasons"] or []),
                "error": r["error"],
            }
            for r in rows
        ],
        "Promotion decisions",
    )
