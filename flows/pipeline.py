"""The main job: collect → dataset → train (with promotion) → live signals as one parent flow.
Each stage is its own flow, run here as a subflow, so the Prefect UI shows the chain with each
stage's state, retries and artifacts. A symbol that fails a stage is left out of the later ones;
the others go on, and the run ends failed naming what failed."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from core.collect import collection_units
from core.config import load_settings
from core.errors import CandleflowError, UnitsFailedError
from core.reports import SUMMARY_FIELDS
from flows import build_dataset, collect_candles, train_models
from flows.live_signals import live_signals

STAGES = ("collect", "dataset", "train", "signals")


def _rows(state: Any) -> tuple[list[dict], str | None]:
    """A stage's rows (also those of a partly failed run) and its error, if any."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, UnitsFailedError):
        return result.rows, str(result)
    if isinstance(result, BaseException):
        if isinstance(result, CandleflowError):
            return [], str(result)
        raise result
    return result, None


def _ok(rows: list[dict], symbols: list[str]) -> list[str]:
    failed = {r["symbol"] for r in rows if r.get("error")}
    done = {r["symbol"] for r in rows}
    return [s for s in symbols if s in done and s not in failed]


@flow(name="candleflow-run")
def run_pipeline(
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    signals: bool = True,
    home: str | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """The whole pipeline on the configured universe (or ``symbols`` × ``timeframes``);
    ``signals=False`` stops after training and promotion (a retraining)."""
    settings = load_settings(config, home)
    units = collection_units(settings, symbols, timeframes)
    names = list(dict.fromkeys(s for s, _ in units))
    tfs = list(dict.fromkeys(t for _, t in units))
    common = {"timeframes": tfs, "home": home, "config": config, "return_state": True}
    document: dict[str, Any] = {"seconds": {}, "errors": {}}

    def stage(name: str, fn: Any, **params: Any) -> list[dict]:
        if not params["symbols"]:  # every symbol failed an earlier stage
            document[name], document["seconds"][name] = [], 0.0
            return []
        start = time.perf_counter()
        rows, error = _rows(fn(**params))
        document["seconds"][name] = round(time.perf_counter() - start, 2)
        document[name] = rows
        if error:
            document["errors"][name] = error
        return rows

    started = time.perf_counter()
    kept = _ok(
        stage("collect", collect_candles.configured(settings), symbols=names, **common), names
    )
    kept = _ok(stage("dataset", build_dataset.configured(settings), symbols=kept, **common), kept)
    kept = _ok(stage("train", train_models.configured(settings), symbols=kept, **common), kept)
    scored: list[dict] = []
    start = time.perf_counter()
    for tf in tfs if kept and signals else []:  # one live run per timeframe
        rows, error = _rows(
            live_signals(
                symbols=kept,
                timeframe=tf,
                collect=False,
                home=home,
                config=config,
                return_state=True,
            )
        )
        scored += rows
        if error:
            document["errors"]["signals"] = error
    document["signals"] = scored
    document["seconds"]["signals"] = round(time.perf_counter() - start, 2)
    document["seconds"]["total"] = round(time.perf_counter() - started, 2)
    document["summary"] = summary(document)
    document["flow_run"] = flow_run.get_name()
    create_markdown_artifact(
        key="pipeline-summary",
        markdown=_markdown(document),
        description="candleflow run: one line per symbol",
    )
    if document["errors"]:
        raise UnitsFailedError(
            "; ".join(f"{k}: {v}" for k, v in document["errors"].items()), [document]
        )
    return document


def summary(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per symbol × timeframe: candles, dataset rows, best family, out-of-sample AUC, net
    Sharpe, DSR, promoted?, the latest signal and tier."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def at(r: dict) -> dict[str, Any]:
        return rows.setdefault(
            (r["symbol"], r["timeframe"]),
            {
                "symbol": r["symbol"],
                "timeframe": r["timeframe"],
                "candles": None,
                "dataset_rows": None,
                "best_family": None,
                "oos_auc": None,
                "net_sharpe": None,
                "dsr": None,
                "promoted": None,
                "signal": None,
                "tier": None,
                "error": None,
            },
        )

    for r in document.get("collect", []):
        at(r).update(candles=r.get("rows"), error=r.get("error"))
    for r in document.get("dataset", []):
        at(r).update(dataset_rows=r.get("rows"), error=r.get("error") or at(r)["error"])
    for r in document.get("train", []):
        m, families = r.get("metrics") or {}, r.get("families") or {}
        best = max(families, key=lambda f: families[f].get("oos_roc_auc", 0), default=None)
        at(r).update(
            best_family=best,
            oos_auc=m.get("oos_auc"),
            net_sharpe=m.get("oos_sharpe"),
            dsr=m.get("dsr"),
            promoted=r.get("promoted"),
            error=r.get("error") or at(r)["error"],
        )
    for r in document.get("signals", []):
        if not r.get("shadow"):
            at(r).update(signal=r.get("action") or r.get("status"), tier=r.get("tier"))
    for row in rows.values():
        for key in ("oos_auc", "net_sharpe", "dsr"):
            if isinstance(row[key], float):
                row[key] = round(row[key], 3)
    return list(rows.values())


def _markdown(document: dict[str, Any]) -> str:
    head = SUMMARY_FIELDS
    lines = ["# candleflow run", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in document["summary"]:
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head]
        lines.append("| " + " | ".join(cells) + " |")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in document["seconds"].items())
    return "\n".join([*lines, "", f"Time: {seconds}."])


if __name__ == "__main__":
    run_pipeline()
