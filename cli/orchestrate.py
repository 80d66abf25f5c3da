"""``candleflow serve`` (every deployment of prefect.yaml from this process), ``candleflow up`` /
``down`` (local Prefect server + MLflow UI + serve) and ``candleflow retrain-check``."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    TimeframeOption,
    WideOption,
    config_arg,
    report_rows,
    run_flow,
    settings_of,
    units_of,
)

if TYPE_CHECKING:
    from core.config import Settings

RETRAIN_COLUMNS = (
    "symbol",
    "timeframe",
    "champion",
    "newest",
    "new_samples",
    "live_hit_rate",
    "retrain",
    "trigger",
    "flow_run",
    "error",
)


def _export(ctx: typer.Context, settings: Settings) -> None:
    """Flow runs started from here (subprocesses) load the same config and state directory."""
    os.environ["CANDLEFLOW_HOME"] = str(settings.home)
    config = config_arg(ctx)
    if config:
        os.environ["CANDLEFLOW_CONFIG"] = config


def serve(
    ctx: typer.Context,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Flow runs at once (default: orchestration.max_concurrent_runs)"),
    ] = None,
) -> None:
    """Serve every deployment of prefect.yaml (schedules included) from this process; each flow
    run in a subprocess. Ctrl-C stops serving; the schedules stay as they are on the server."""
    settings = settings_of(ctx)
    _export(ctx, settings)
    from prefect import serve as prefect_serve
    from prefect.settings import get_current_settings

    from deployments.local import runner_deployments

    api = get_current_settings().api.url
    if not api:
        raise output.fail(
            "serve needs a Prefect server: schedules do not run on the ephemeral one. "
            "`candleflow up` starts a local server and serves; or set PREFECT_API_URL"
        )
    try:
        deployments = runner_deployments()
    except Exception as exc:  # an entrypoint that does not import: name it, no traceback
        raise output.fail(f"cannot build the deployments: {exc}") from None
    output.stderr.print(f"Serving {len(deployments)} deployments against {api}.")
    prefect_serve(
        *deployments,
        limit=limit or settings.orchestration.max_concurrent_runs,
        pause_on_shutdown=False,
    )


def up(
    ctx: typer.Context,
    serve_: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Also serve the deployments")
    ] = True,
    api_: Annotated[
        bool, typer.Option("--api/--no-api", help="Also start the HTTP signal service")
    ] = True,
) -> None:
    """Start a local Prefect server, the MLflow UI and the HTTP signal service on 127.0.0.1,
    then serve the deployments. Ctrl-C stops all of it; `candleflow down` stops what an
    interrupted `up` left running."""
    from deployments.servers import ServerError, Supervisor, alive, down, port_in_use, read_state

    settings = settings_of(ctx)
    _export(ctx, settings)
    o, home = settings.orchestration, settings.home
    state = read_state(home)
    if state and alive(int(state.get("pid") or 0)):
        raise output.fail(f"already up (pid {state['pid']}); stop it with `candleflow down`")
    down(home)  # leftovers of an `up` that was killed
    specs = _specs(ctx, settings, serve_, api_)
    ports = (("Prefect", o.prefect_port), ("MLflow", o.mlflow_port), ("API", settings.api.port))
    for name, port in ports:
        if any(s.name.startswith(name.lower()) for s in specs) and port_in_use(o.host, port):
            raise output.fail(f"{o.host}:{port} ({name}) is in use; set its port in the config")
    supervisor = Supervisor(home, o.startup_timeout_seconds)
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `down`, a service manager: all clean
        signal.signal(sig, _interrupt)
    try:
        for spec in specs:
            with output.stderr.status(f"Starting {spec.name}…"):
                supervisor.start(spec)
            if spec.url:
                output.stderr.print(f"[bold]{spec.name}[/]: {spec.url}")
        output.stderr.print("Up. Ctrl-C stops everything.")
        ended = supervisor.wait()
    except (ServerError, KeyboardInterrupt) as exc:
        supervisor.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(0) from None
        raise output.fail(str(exc), output.EXIT_RUN_FAILED) from None
    output.stderr.print("Stopping…")
    supervisor.stop()
    if ended is not None:
        name, code = ended
        raise output.fail(f"{name} exited with code {code}; stopped the rest", code or 1)
    output.stderr.print("Stopped.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _specs(ctx: typer.Context, settings: Settings, serve_: bool, api_: bool = True) -> list[Any]:
    from deployments.servers import Spec, bin_path
    from models.tracking import tracking_uri

    o, home = settings.orchestration, settings.home
    logs = home / "logs"
    env = os.environ | {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # lean: 2 processes, not 15 (STACK.md)
    }
    env.pop("PREFECT_API_URL", None)
    prefect_url = f"http://{o.host}:{o.prefect_port}"
    specs = [
        Spec(
            "prefect server",
            [
                bin_path("prefect"),
                "server",
                "start",
                "--host",
                o.host,
                "--port",
                str(o.prefect_port),
            ],
            env,
            health=f"{prefect_url}/api/health",
            url=prefect_url,
            log=logs / "prefect-server.log",
        )
    ]
    uri = tracking_uri(home, settings.mlflow.tracking_uri)
    if uri.startswith(("http://", "https://")):
        output.stderr.print(f"MLflow: {uri} (a server of its own; not started here)")
    else:
        mlflow_url = f"http://{o.host}:{o.mlflow_port}"
        argv = [bin_path("mlflow"), "server", "--host", o.host, "--port", str(o.mlflow_port)]
        argv += ["--backend-store-uri", uri, "--workers", "1"]
        argv += ["--artifacts-destination", str(home / "mlflow" / "artifacts")]
        specs.append(
            Spec("mlflow ui", argv, env, f"{mlflow_url}/health", mlflow_url, logs / "mlflow.log")
        )
    config = config_arg(ctx)
    argv = [bin_path("candleflow"), "--home", str(home)]
    argv += ["--config", config] if config else []
    # The children that run flows run them on this Prefect server: the signal service (what
    # `signals` and `collect` hand it) and serve.
    runs_flows = env | {"PREFECT_API_URL": f"{prefect_url}/api"}
    if api_:
        specs.append(_api_spec(settings, argv, runs_flows))
    if serve_:
        # SIGINT: the runner's own Ctrl-C path (its SIGTERM path leaves a coroutine un-awaited)
        specs.append(Spec("serve", [*argv, "serve"], runs_flows, stop_signal=signal.SIGINT))
    return specs


def _api_spec(settings: Settings, argv: list[str], env: dict[str, str]) -> Any:
    """``candleflow api`` on ``orchestration.host`` (keys required anywhere but the loopback)."""
    from deployments.servers import Spec

    host, port = settings.orchestration.host, settings.api.port
    refusal = settings.api.refusal(host)
    if refusal is not None:
        raise output.fail(f"{refusal}; or start `up --no-api`")
    url = f"http://{host}:{port}"
    argv = [*argv, "api", "--host", host, "--port", str(port)]
    return Spec("api", argv, env, f"{url}/healthz", url, settings.home / "logs" / "api.log")


def down_command(ctx: typer.Context) -> None:
    """Stop the servers `candleflow up` started (also after it was killed)."""
    from deployments.servers import down

    settings = settings_of(ctx)
    stopped = down(settings.home)
    if stopped:
        output.stderr.print("Stopped: " + ", ".join(f"{c.name} (pid {c.pid})" for c in stopped))
    else:
        output.stderr.print("Nothing was running.")


def retrain_check(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    start: Annotated[
        str,
        typer.Option(
            help="inline: retrain here (no server needed); deployment: start the "
            "retrain.deployment on the Prefect server; none: only report"
        ),
    ] = "inline",
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Which models are due a retraining (new labelled samples, live decay), and retrain them."""
    from flows.retrain_check import retrain_check as flow

    if start not in ("inline", "deployment", "none"):
        raise output.fail(f"--start {start!r}: use inline, deployment or none")
    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    result = run_flow(
        flow,
        symbols=sorted({s for s, _ in units}),
        timeframes=sorted({t for _, t in units}),
        start=start,
        home=str(settings.home),  # passed on to a retraining deployment
        config=config_arg(ctx),
        settings=settings,
    )
    report_rows(result, json_, "Retrain check", RETRAIN_COLUMNS, _reasons, wide=wide)


def _reasons(rows: list[dict]) -> None:
    for r in rows:
        if r.get("reasons"):
            output.stderr.print(f"{r['symbol']} {r['timeframe']}: " + "; ".join(r["reasons"]))
