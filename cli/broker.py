"""``candleflow broker list``: every broker with what it can do (market data, execution, dry run by
default, timeframes). Reads the registry only: no network, no credentials."""

from __future__ import annotations

from dataclasses import asdict

import typer

from cli import output
from cli.common import JsonOption, settings_of

broker_app = typer.Typer(help="The brokers candleflow can use.", no_args_is_help=True)


def _yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


@broker_app.command("list")
def broker_list(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Every broker: market data, execution, dry run by default, credentials, timeframes."""
    from brokers.registry import broker_infos

    infos = broker_infos(settings_of(ctx))
    if json_:
        output.print_json([asdict(info) for info in infos])
        return
    rows = [
        {
            "broker": info.name,
            "market_data": _yes_no(info.market_data),
            "execution": _yes_no(info.execution),
            "dry_run_default": _yes_no(info.dry_run_default),
            "credentials": _yes_no(info.needs_credentials),
            "timeframes": " ".join(info.timeframes) or "—",
            "venue": info.venue,
        }
        for info in infos
    ]
    output.print_table("Brokers", rows, list(rows[0]))
