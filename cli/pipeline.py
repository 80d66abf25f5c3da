"""``candleflow run``: the whole pipeline (collect → dataset → train → promote → live signals) as
one parent flow, with a summary table and where to look next."""

from __future__ import annotations

import typer

from cli import output
from cli.common import (
    JsonOption,
    SymbolsOption,
    TimeframeOption,
    WideOption,
    loading_libraries,
    run_flow,
    settings_of,
    units_of,
)
from core.errors import CandleflowError, UnitsFailedError


def run(
    ctx: typer.Context,
    symbols: SymbolsOption = None,
    timeframe: TimeframeOption = None,
    wide: WideOption = False,
    json_: JsonOption = False,
) -> None:
    """Run the whole pipeline: collect, dataset, train, promote, live signals."""
    with loading_libraries():
        from flows.pipeline import run_pipeline

    settings = settings_of(ctx)
    units = units_of(settings, symbols, timeframe)
    result = run_flow(
        run_pipeline,
        symbols=sorted({s for s, _ in units}),
        timeframes=sorted({t for _, t in units}),
        settings=settings,
        board=(f"Running the pipeline for {len(units)} symbol × timeframe(s)…", units),
    )
    failed = isinstance(result, UnitsFailedError)
    if isinstance(result, CandleflowError) and not failed:
        raise output.fail(str(result))
    from core.reports import SummaryRow

    report = result.rows[0] if failed else result
    if json_:
        output.print_json(report.model_dump(mode="json", exclude={"summary"}))
    else:
        rows = [r.row() for r in report.summary]
        output.print_table("candleflow run", rows, SummaryRow.columns(), wide)
        seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
        output.stderr.print(f"Time: {seconds}.")
        output.stderr.print(
            f"Prefect flow run: {report.flow_run} (artifacts: pipeline-summary, "
            "training-report, promotion-decisions, live-signals). MLflow experiments: "
            + ", ".join(f"candleflow/{s}/{t}" for s, t in units)
            + f"; registry: candleflow.<SYMBOL>.<TF> in {settings.home / 'mlflow'}."
        )
    if failed:
        raise output.fail(str(result), output.EXIT_RUN_FAILED)
