"""Flow runs the command line hands to the service (see :mod:`core.attach`): ``candleflow signals``
and ``candleflow collect`` run their flow here, in a process that loaded Prefect, MLflow and the
libraries once and keeps the live stage's models and ledger between runs — the same flow, tasks and
Prefect records as in the command's own process, a few seconds sooner.

A run is taken only with the state directory's token and only for the service's own identity
(settings and code); one at a time, as two commands in two terminals would (the ledger's order keys
make a second scoring of the same candle place nothing)."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from core.attach import TOKEN_HEADER, identity, write_token
from core.config import Settings
from core.errors import CandleflowError, UnitsFailedError

logger = logging.getLogger(__name__)

Kind = Literal["signals", "collect"]


class RunRequest(BaseModel):
    """A command's run: its identity (``core.attach.identity``) and the flow's parameters."""

    model_config = ConfigDict(extra="forbid")

    identity: str = Field(min_length=64, max_length=64)
    symbols: list[str] = Field(min_length=1)
    timeframes: list[str] = Field(min_length=1)
    start: datetime | None = None  # collect only
    end: datetime | None = None  # collect only


class RunAnswer(BaseModel):
    """What the flow returned: its report rows (``ok``), the rows and the failed units' message
    (``units_failed``), or a user error's one line (``error``)."""

    outcome: Literal["ok", "units_failed", "error"]
    message: str | None = None
    rows: list[dict[str, Any]] = Field(default_factory=list)


class FlowRuns:
    """Runs the CLI's flows in this process for ``settings`` (the service's own)."""

    def __init__(self, settings: Settings, home: Path | None = None) -> None:
        self.settings = settings
        self.identity = identity(settings)  # the code as this process loaded it
        self.token = write_token(home or settings.home)
        self._lock = threading.Lock()

    def warm(self) -> threading.Thread:
        """Load the flows and their libraries in the background (the first run's ~6 s)."""
        thread = threading.Thread(target=_load_flows, name="warm-flows", daemon=True)
        thread.start()
        return thread

    def authorized(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.token.encode())

    def run(self, kind: Kind, request: RunRequest) -> RunAnswer:
        """Run ``kind``'s flow (one at a time) and answer what it returned; a bug raises."""
        if request.identity != self.identity:
            raise HTTPException(
                409,
                "the service runs with other settings or code than the command's (a config, an"
                " environment variable or a source file changed since it started)",
            )
        from flows._runner import heartbeats_off

        flow, params = _flow(kind, request, self.settings)
        with self._lock, heartbeats_off():
            state = flow(**params, return_state=True)
        result = state.result(raise_on_failure=False)
        if isinstance(result, UnitsFailedError):
            rows = [r.fields_json() for r in result.rows]
            return RunAnswer(outcome="units_failed", message=str(result), rows=rows)
        if isinstance(result, CandleflowError):
            return RunAnswer(outcome="error", message=str(result))
        if isinstance(result, BaseException):
            raise result
        return RunAnswer(outcome="ok", rows=[r.fields_json() for r in result])


def _load_flows() -> None:
    try:
        import flows.collect_candles
        import flows.live_signals  # noqa: F401
    except Exception:  # the first run reports it
        logger.exception("loading the flows failed")


def _flow(kind: Kind, request: RunRequest, settings: Settings) -> tuple[Any, dict[str, Any]]:
    if kind == "signals":
        from flows.live_signals import live_signals

        if len(request.timeframes) != 1:
            raise HTTPException(422, "signals scores one timeframe per run")
        params = {"symbols": request.symbols, "timeframe": request.timeframes[0]}
        return live_signals, params | {"settings": settings}
    from flows.collect_candles import configured

    params = {"symbols": request.symbols, "timeframes": request.timeframes}
    params |= {"start": request.start, "end": request.end, "settings": settings}
    return configured(settings), params


def add_run_routes(app: FastAPI, runs: FlowRuns) -> None:
    @app.post("/v1/runs/{kind}", response_model=RunAnswer, tags=["service"])
    def run(
        kind: Kind,
        body: RunRequest,
        token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
    ) -> Response:
        """Run `candleflow signals` or `candleflow collect` in this process (the command line
        does, with the token the service wrote into the state directory)."""
        if not runs.authorized(token):
            raise HTTPException(403, f"{TOKEN_HEADER} missing or not this service's")
        answer = runs.run(kind, body)
        # NaN stays NaN (the rows are the flow's reports, read back by the command line)
        return Response(json.dumps(answer.model_dump(mode="json")), media_type="application/json")
