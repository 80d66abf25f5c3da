"""``candleflow api``: the HTTP signal service (FastAPI on uvicorn), on 127.0.0.1 by default; it
refuses to listen anywhere else without API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import output
from cli.common import settings_of


def api(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: api.host)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: api.port)")
    ] = None,
) -> None:
    """Serve predictions, signals, models, metrics and the TradingView webhook over HTTP
    (docs at /docs). Ctrl-C stops it."""
    settings = settings_of(ctx)
    host, port = host or settings.api.host, port or settings.api.port
    refusal = settings.api.refusal(host)
    if refusal is not None:
        raise output.fail(refusal)
    from cli import logs

    logs.route_logs(settings.home, logs.verbosity)
    import uvicorn

    from api.app import create_app
    from api.runs import FlowRuns
    from core.errors import CandleflowError

    try:
        runs = FlowRuns(settings)  # `signals` and `collect` hand their runs to this process
        app = create_app(settings, runs=runs)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    runs.warm()
    output.stderr.print(f"[bold]API[/]: http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
