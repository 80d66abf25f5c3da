"""The main job: collect → dataset (label, features) → train (record, promote) → live signals as
one parent flow. Each stage is its own flow, run here as a subflow with the configuration
resolved once for the run, so the Prefect UI shows the chain with each stage's state, retries and
artifacts. A symbol that fails a stage is left out of the later ones; the others go on, and the
run ends failed naming what failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prefect import State, flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from core.collect import collection_units
from core.config import Settings, load_settings
from core.errors import CandleflowError, UnitsFailedError
from core.reports import RunReport, SummaryRow, UnitReport
from flows import build_dataset, collect_candles, train_models
from flows.live_signals import live_signals

R = TypeVar("R", bound=UnitReport)


def _rows(state: State) -> tuple[list[R], str | None]:
    """A stage's rows (also those of a partly failed run) and its error, if any."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, UnitsFailedError):
        return result.rows, str(result)
    if isinstance(result, BaseException):
        if isinstance(result, CandleflowError):
            return [], str(result)
        raise result
    return result, None


def _stage(
    report: RunReport, name: str, run: Callable[[list[str]], list[State]], symbols: list[str]
) -> list[str]:
    """Run a stage on ``symbols`` (none: every symbol failed an earlier stage), keep its rows,
    time and error in ``report``; the symbols it succeeded for."""
    start, rows = time.perf_counter(), []
    for state in run(symbols) if symbols else []:
        done, error = _rows(state)
        rows += done
        if error:
            report.errors[name] = error
    setattr(report, name, rows)
    report.seconds[name] = round(time.perf_counter() - start, 2)
    failed, done = {r.symbol for r in rows if r.error}, {r.symbol for r in rows}
    return [s for s in symbols if s in done and s not in failed]


@flow(name="candleflow-run")
def run_pipeline(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    signals: bool = True,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
) -> RunReport:
    """The whole pipeline on the configured universe (or ``symbols`` × ``timeframes``);
    ``signals=False`` stops after training and promotion (a retraining)."""
    settings = settings or load_settings(config, home)
    units = collection_units(settings, symbols, timeframes)
    names = list(dict.fromkeys(s for s, _ in units))
    tfs = list(dict.fromkeys(t for _, t in units))
    common = {"timeframes": tfs, "settings": settings, "return_state": True}
    stages: dict[str, Callable[[list[str]], list[State]]] = {
        "collect": lambda kept: [collect_candles.configured(settings)(symbols=kept, **common)],
        "dataset": lambda kept: [build_dataset.configured(settings)(symbols=kept, **common)],
        "train": lambda kept: [train_models.configured(settings)(symbols=kept, **common)],
        # One live run per timeframe. It collects again: a candle that closed while the models
        # trained is fetched and scored (else the newest stored one is judged STALE).
        "signals": lambda kept: [
            live_signals(symbols=kept, timeframe=tf, settings=settings, return_state=True)
            for tf in (tfs if signals else [])
        ],
    }
    report, kept, started = RunReport(), names, time.perf_counter()
    for name, run in stages.items():
        kept = _stage(report, name, run, kept)
    report.seconds["total"] = round(time.perf_counter() - started, 2)
    report.summary = summary(report)
    report.flow_run = flow_run.get_name()
    create_markdown_artifact(
        key="pipeline-summary",
        markdown=_markdown(report),
        description="candleflow run: one line per symbol",
    )
    if report.errors:
        message = "; ".join(f"{k}: {v}" for k, v in report.errors.items())
        raise UnitsFailedError(message, [report])
    return report


def summary(report: RunReport) -> list[SummaryRow]:
    """Per symbol × timeframe: candles, dataset rows, best family, out-of-sample AUC, net
    Sharpe, DSR, promoted?, the latest signal and tier."""
    rows: dict[tuple[str, str], SummaryRow] = {}

    def at(r: UnitReport) -> SummaryRow:
        key = (r.symbol, r.timeframe)
        row = rows.setdefault(key, SummaryRow(symbol=r.symbol, timeframe=r.timeframe))
        row.error = row.error or r.error
        return row

    for r in report.collect:
        at(r).candles = r.rows
    for r in report.dataset:
        at(r).dataset_rows = r.rows
    for r in report.train:
        m, row = r.metrics or {}, at(r)
        row.best_family, row.promoted, row.decision = r.best_family(), r.promoted, r.decision
        row.oos_auc, row.net_sharpe = _round(m.get("oos_auc")), _round(m.get("oos_sharpe"))
        row.dsr = _round(m.get("dsr"))
    for s in report.signals:
        if not s.shadow:
            row = at(s)
            row.signal, row.tier = s.action or s.status, s.tier
    return list(rows.values())


def _round(value: float | int | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _markdown(report: RunReport) -> str:
    head = SummaryRow.columns()
    lines = ["# candleflow run", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in report.summary:
        r = row.row()
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head]
        lines.append("| " + " | ".join(cells) + " |")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    return "\n".join([*lines, "", f"Time: {seconds}."])


if __name__ == "__main__":
    run_pipeline()
