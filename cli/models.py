"""``candleflow promote`` and ``candleflow models list|promote|rollback``: the registry from the
command line. Manual promotion and rollback are recorded on the model versions like the gate's."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    TimeframeOption,
    WideOption,
    report_rows,
    run_flow,
    settings_of,
    units_of,
)
from core.errors import CandleflowError

models_app = typer.Typer(
    help="List, promote and roll back registered models.", no_args_is_help=True
)

SymbolArg = Annotated[str, typer.Argument(help="Symbol, e.g. EURUSD")]
TimeframeArg = Annotated[str, typer.Argument(help="Timeframe, e.g. 1h")]
PROMOTE_COLUMNS = (
    "symbol",
    "timeframe",
    "version",
    "decision",
    "reasons",
    "promoted",
    "kind",
    "champion_version",
    "error",
)
LIST_COLUMNS = (
    "symbol",
    "timeframe",
    "version",
    "aliases",
    "oos_auc",
    "oos_sharpe",
    "dsr",
    "trades",
    "decision",
    "reasons",
    "trials",
    "model",
)
LIST_DETAIL = ("trials", "model")  # with --wide


def promote(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    json_: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Put each symbol's challenger through the promotion gate (champion only on evidence)."""
    from flows.promote_models import promote_models

    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    with output.stderr.status(f"Reviewing {len(units)} challenger(s)…"):
        result = run_flow(
            promote_models,
            symbols=[s for s, _ in units],
            timeframes=sorted({t for _, t in units}),
            settings=settings,
        )
    report_rows(result, json_, "Promotion decisions", PROMOTE_COLUMNS, wide=wide)


def _reviewer(ctx: typer.Context):
    from models.registry import Reviewer
    from models.tracking import setup

    settings = settings_of(ctx)
    return Reviewer(settings, setup(settings.home, settings.mlflow.tracking_uri))


@models_app.command("list")
def models_list(ctx: typer.Context, json_: JsonOption = False, wide: WideOption = False) -> None:
    """Every model: versions with their aliases, key holdout metrics and last decision."""
    from models.registry import list_models

    models = list_models(_reviewer(ctx).client)
    if json_:
        output.print_json(models)
        return
    output.print_table(
        "Registered models (MLflow)", list_rows(models), LIST_COLUMNS, wide, LIST_DETAIL
    )


def list_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A table row per version of every model (``models.registry.list_models``)."""
    return [
        {k: m[k] for k in ("model", "symbol", "timeframe")} | v
        for m in models
        for v in m["versions"]
    ]


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    symbol: SymbolArg,
    timeframe: TimeframeArg,
    version: Annotated[str, typer.Argument(help="Version to make champion")],
    reason: Annotated[
        str | None,
        typer.Option(help="Why the gate is overridden (required; recorded with the decision)"),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Make VERSION champion without the gate (a manual override, recorded with its reason;
    every live signal of this champion says ``champion_kind: manual``)."""
    if not (reason or "").strip():
        raise output.fail(
            "models promote needs --reason TEXT: why the gate is overridden (it is recorded "
            "with the decision and every signal of the champion says it was manual)"
        )
    try:
        decision = _reviewer(ctx).promote_manually(symbol, timeframe, version, reason or "")
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    _print_decision(decision, json_)


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context, symbol: SymbolArg, timeframe: TimeframeArg, json_: JsonOption = False
) -> None:
    """Make ``previous`` champion again (the demoted champion becomes ``previous``)."""
    try:
        decision = _reviewer(ctx).rollback(symbol, timeframe)
    except CandleflowError as exc:
        raise output.fail(str(exc)) from None
    _print_decision(decision, json_)


def _print_decision(decision, json_: bool) -> None:
    if json_:
        output.print_json(decision.report().row())
    else:
        output.stderr.print(decision.summary())
