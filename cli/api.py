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
    from core.errors import CandleflowError

    try:
        app = create_app(settings)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    output.stderr.print(f"[bold]API[/]: http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
