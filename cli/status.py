"""``candleflow status``: one look at a state directory — what the store holds, which models are
champion and on what evidence, the last flow runs and the next scheduled ones, and whether
``candleflow up`` is running. Reads only (no server starts, no flow runs): Prefect's history comes
from its database in ``<home>/prefect`` (or the API of the ``up`` server / ``PREFECT_API_URL``)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from cli import output
from cli.common import JsonOption, WideOption, settings_of
from cli.prefect_env import up_server_url
from core.processes import alive, read_up_state

RUNS_SHOWN = 8
# Prefect's own tables (its ORM names them after the classes): read-only, and a schema this
# query does not know only loses the runs section, never the command.
_LAST_RUNS = """
SELECT f.name, r.name, r.state_name, r.start_time, r.end_time, r.expected_start_time
FROM flow_run r JOIN flow f ON f.id = r.flow_id
WHERE r.state_type != 'SCHEDULED'
ORDER BY COALESCE(r.start_time, r.expected_start_time) DESC LIMIT ?
"""
_NEXT_RUNS = """
SELECT f.name, r.name, r.state_name, r.start_time, r.end_time, r.expected_start_time
FROM flow_run r JOIN flow f ON f.id = r.flow_id
WHERE r.state_type = 'SCHEDULED'
ORDER BY r.expected_start_time ASC LIMIT ?
"""
RUN_KEYS = ("flow", "run", "state", "started", "ended", "expected")


def status(ctx: typer.Context, wide: WideOption = False, json_: JsonOption = False) -> None:
    """Store coverage, champions and their evidence, last and next flow runs, servers."""
    settings = settings_of(ctx)
    home = settings.home
    document = {
        "home": str(home),
        "servers": _servers(home),
        "store": _store(home),
        "champions": _champions(settings),
        "last_runs": _runs(home, _LAST_RUNS),
        "next_runs": _runs(home, _NEXT_RUNS),
    }
    if json_:
        output.print_json(document)
        return
    _print(document, wide)


def _servers(home: Path) -> dict[str, Any]:
    state = read_up_state(home) or {}
    up = bool(state) and alive(int(state.get("pid") or 0))
    children = {c.get("name"): c.get("url") for c in state.get("children") or []} if up else {}
    return {
        "up": up,
        "prefect": up_server_url(home) if up else None,
        "mlflow": children.get("mlflow ui"),
        "api": children.get("api"),  # the signal service: `signals` and `collect` run there
        "serving": "serve" in children,
    }


def _store(home: Path) -> list[dict[str, Any]]:
    from core.store import CandleStore

    return [
        {
            "symbol": d.symbol,
            "timeframe": d.timeframe,
            "rows": d.rows,
            "first_ts": d.first_ts,
            "last_ts": d.last_ts,
            "quarantined": d.quarantined,
        }
        for d in CandleStore(home).datasets()
    ]


def _champions(settings: Any) -> list[dict[str, Any]]:
    """Every model's champion (or none) with the evidence it was promoted on."""
    if not (settings.home / "mlflow").exists() and not settings.mlflow.tracking_uri:
        return []
    from models.registry import list_models
    from models.tracking import setup

    rows = []
    for model in list_models(setup(settings.home, settings.mlflow.tracking_uri)):
        champion = next((v for v in model["versions"] if "champion" in v["aliases"]), None)
        challenger = next((v for v in model["versions"] if "challenger" in v["aliases"]), None)
        keep = ("version", "decision", "oos_sharpe", "dsr", "oos_auc", "oos_days", "trades")
        rows.append(
            {
                "symbol": model["symbol"],
                "timeframe": model["timeframe"],
                "versions": len(model["versions"]),
                "champion": None if champion is None else champion["version"],
                "challenger": None if challenger is None else challenger["version"],
                **{k: (champion or {}).get(k) for k in keep if k != "version"},
            }
        )
    return rows


def _prefect_database(home: Path) -> Path:
    prefect_home = Path(os.environ.get("PREFECT_HOME") or home / "prefect").expanduser()
    return prefect_home / "prefect.db"


def _runs(home: Path, query: str) -> list[dict[str, Any]] | None:
    """Flow runs from Prefect's SQLite database (None: no history here, or not readable)."""
    database = _prefect_database(home)
    if not database.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2.0) as db:
            rows = db.execute(query, (RUNS_SHOWN,)).fetchall()
    except sqlite3.Error:
        return None
    return [dict(zip(RUN_KEYS, row, strict=True)) for row in rows]


def _print(document: dict[str, Any], wide: bool) -> None:
    servers = document["servers"]
    if servers["up"]:
        where = ", ".join(f"{k} {v}" for k, v in servers.items() if isinstance(v, str))
        serving = "serving the deployments" if servers["serving"] else "not serving"
        taking = "; `signals` and `collect` run in its api" if servers["api"] else ""
        output.stdout.print(f"[green]up[/]: {where} ({serving}{taking})")
    else:
        output.stdout.print("servers: not running (`candleflow up` starts Prefect + MLflow UI)")
    output.stdout.print(f"state directory: {document['home']}")
    if document["store"]:
        columns = ("symbol", "timeframe", "rows", "first_ts", "last_ts", "quarantined")
        output.print_table("Candle store", document["store"], columns, wide)
    else:
        output.stdout.print("store: empty (`candleflow collect` fills it)")
    if document["champions"]:
        columns = tuple(document["champions"][0])
        output.print_table("Models (champion's evidence)", document["champions"], columns, wide)
    else:
        output.stdout.print("models: none registered (`candleflow train`)")
    for key, title in (("last_runs", "Last flow runs"), ("next_runs", "Next scheduled runs")):
        runs = document[key]
        if runs:
            output.print_table(title, [_when(r) for r in runs], RUN_KEYS, wide)
        elif runs is None and key == "last_runs":
            output.stdout.print("flow runs: no Prefect history in this state directory yet")
        elif key == "next_runs":
            output.stdout.print("next runs: none scheduled (`candleflow up` serves the schedules)")


def _when(run: dict[str, Any]) -> dict[str, Any]:
    """Prefect stores times as naive UTC text; show them as UTC minutes."""
    shown = dict(run)
    for key in ("started", "ended", "expected"):
        value = shown.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                shown[key] = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return shown
