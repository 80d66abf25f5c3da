"""``candleflow broker list``: every broker with what it can do (market data, execution, dry run by
default, timeframes); reads the registry only: no network, no credentials. ``candleflow broker
check``: asks a venue with the configured keys (``brokers.check``); sends nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

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


BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="oanda, capital, alpaca or ccxt (default: live.execution_broker, else broker.name).",
    ),
]


@broker_app.command("check")
def broker_check(
    ctx: typer.Context, broker: BrokerOption = None, json_: JsonOption = False
) -> None:
    """With the venue's keys: one candle, the account, the instrument rules of the universe and
    what a live run would do with an order (dry run unless live.dry_run = false). Sends nothing."""
    from brokers.check import check_venue

    found = check_venue(settings_of(ctx), broker)
    if json_:
        output.print_json(asdict(found))
        return
    summary = {k: v for k, v in asdict(found).items() if k != "instruments"}
    output.print_record(f"{found.broker}: account and mode", summary)
    rows = [asdict(i) for i in found.instruments]
    columns = ["symbol", "venue_symbol", "min_size", "size_step", "price_decimals", "tradeable"]
    output.print_table("Instrument rules", rows, [*columns, "smallest_order", "error"], wide=True)
