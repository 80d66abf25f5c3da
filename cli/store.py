"""Commands that read state and run no flow (Prefect never starts): ``store list|gaps|quarantine``
and ``config show|reference``."""

from __future__ import annotations

import typer

from cli import output
from cli.common import JsonOption, WideOption, settings_of
from core.errors import CandleflowError

store_app = typer.Typer(help="Inspect the local candle store.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@store_app.command("list")
def store_list(ctx: typer.Context, wide: WideOption = False, json_: JsonOption = False) -> None:
    """Every stored symbol × timeframe: rows, range, quarantined rows."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    rows = [
        {
            "symbol": d.symbol,
            "timeframe": d.timeframe,
            "rows": d.rows,
            "first_ts": d.first_ts,
            "last_ts": d.last_ts,
            "quarantined": d.quarantined,
            "path": str(d.path),
        }
        for d in CandleStore(settings.home).datasets()
    ]
    if json_:
        output.print_json(rows)
    else:
        output.print_table(
            f"Candle store {settings.candles_dir}",
            rows,
            ("symbol", "timeframe", "rows", "first_ts", "last_ts", "quarantined"),
        )


@store_app.command("gaps")
def store_gaps(
    ctx: typer.Context,
    symbol: str,
    timeframe: str,
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Missing candles in a stored dataset (weekends of FX markets included)."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    store = CandleStore(settings.home)
    try:
        if not store.path(symbol, timeframe).is_file():
            raise output.fail(
                f"no candles stored for {symbol} {timeframe}: `candleflow store list` shows what "
                f"is stored, `candleflow collect --symbols {symbol}` fetches it"
            )
        gaps = store.gaps(symbol, timeframe)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    rows = gaps.to_dicts()
    if json_:
        output.print_json(rows)
    else:
        output.print_table(
            f"Gaps in {symbol} {timeframe}", rows, ("after", "before", "missing"), wide
        )


@store_app.command("quarantine")
def store_quarantine(
    ctx: typer.Context,
    symbol: str,
    timeframe: str,
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Rows that failed validation, with the reason per row."""
    from core.store import CandleStore

    settings = settings_of(ctx)
    try:
        rows = CandleStore(settings.home).read_quarantine(symbol, timeframe).to_dicts()
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    if json_:
        output.print_json(rows)
    else:
        columns = list(rows[0]) if rows else ["ts", "reason"]
        output.print_table(f"Quarantined {symbol} {timeframe}", rows, columns, wide)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """The effective configuration (file + environment + flags), as JSON."""
    output.print_json(settings_of(ctx).model_dump(mode="json"))


@config_app.command("reference")
def config_reference() -> None:
    """Every key with its environment variable, default, allowed values and meaning (Markdown)."""
    from core.config_reference import reference_markdown

    typer.echo(reference_markdown(), nl=False)
