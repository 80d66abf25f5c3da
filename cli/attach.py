"""Handing a command's flow run to the signal service of ``candleflow up`` (see
:mod:`core.attach`): when ``up`` runs for the state directory with the same settings and code,
``signals`` and ``collect`` run their flow there and print its rows; otherwise, or when the service
does not take the run, they run it in their own process, as without ``up``
(``orchestration.run_in_service = false``: always)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cli import logs, output
from core.attach import TOKEN_HEADER, attached_service, identity
from core.errors import CandleflowError, UnitsFailedError

if TYPE_CHECKING:
    from core.config import Settings
    from core.reports import UnitReport

CONNECT_TIMEOUT_SECONDS = 2.0


def run_in_service(
    settings: Settings,
    kind: str,
    report: type[UnitReport],
    symbols: list[str],
    timeframes: list[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[UnitReport] | CandleflowError | None:
    """What ``kind``'s flow returned in the service (its rows, or the error it ended with); None
    when there is no service to take it, or it did not (the caller runs the flow itself). A
    service that failed the run ends the command with its reason (exit 1)."""
    if not settings.orchestration.run_in_service:
        return None
    service = attached_service(settings.home)
    if service is None:
        return None
    import httpx

    body = {"identity": identity(settings), "symbols": symbols, "timeframes": timeframes}
    body |= {"start": _iso(start), "end": _iso(end)}
    timeout = httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=None)  # a run takes what it takes
    status = f"Running {kind} in the signal service (pid {service.pid})…"
    try:
        with (
            output.stderr.status(status),
            httpx.Client(base_url=service.url, timeout=timeout, trust_env=False) as client,
        ):
            response = client.post(
                f"/v1/runs/{kind}", json=body, headers={TOKEN_HEADER: service.token}
            )
    except httpx.HTTPError as exc:
        output.stderr.print(f"the signal service did not answer ({exc}); running it here")
        return None
    if response.status_code >= 500:
        where = settings.home / "logs" / "api.log"
        raise output.fail(
            f"the signal service failed the {kind} run: {_detail(response)}; see {where}",
            output.EXIT_RUN_FAILED,
        )
    if response.status_code != 200:  # another identity, a stale token: the command's own run
        detail = _detail(response)
        output.stderr.print(f"the signal service did not take the run: {detail}; running it here")
        return None
    answer = response.json()
    if logs.verbosity >= logs.VERBOSE:
        output.stderr.print(
            f"ran in the signal service (pid {service.pid}); its log: "
            f"{settings.home / 'logs' / 'api.log'}"
        )
    rows = [report.model_validate(row) for row in answer.get("rows") or []]
    if answer["outcome"] == "units_failed":
        return UnitsFailedError(answer["message"], rows)
    if answer["outcome"] == "error":
        return CandleflowError(answer["message"])
    return rows


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail") or response.status_code)
    except ValueError:
        return f"HTTP {response.status_code}"
