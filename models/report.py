"""The backtest report: per model its out-of-sample equity against buy-and-hold, drawdown, monthly
returns, trades and the gate's numbers and decision, with a table across models — one HTML file
that opens offline (plotly.js inlined). Built only from a training's recorded ``evaluation.json``
(the bytes the gate reads, checked against their digest): nothing is recomputed from the model."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from core.errors import CandleflowError
from models.backtest import BacktestResult
from models.evidence import EVALUATION_DIGEST, EvidenceError, evaluation
from models.registry import CHAMPION, RegistryError, alias_version, get_version
from models.tracking import registered_name

REPORT_ARTIFACT = "report/backtest.html"
_ISO = "%Y-%m-%dT%H:%M:%S%.f%:z"

# The gate's numbers as the report names them → the evaluation's metric.
GATE_NUMBERS = {
    "oos_sharpe": "oos_sharpe_annual",
    "bh_sharpe": "oos_bh_sharpe_annual",
    "dsr": "oos_dsr",
    "pbo": "pbo",
    "oos_days": "oos_days",
    "trades": "oos_trades",
    "oos_auc": "oos_roc_auc",
}
# What the table across models adds to them.
TABLE_NUMBERS = GATE_NUMBERS | {
    "total_return": "oos_total_return",
    "bh_return": "oos_bh_total_return",
    "max_drawdown": "oos_max_drawdown",
    "win_rate": "oos_win_rate",
    "trials_total": "trials_total",
}
_DECIMALS = {"oos_auc": 3, "dsr": 3, "oos_sharpe": 2, "bh_sharpe": 2, "pbo": 2}
_PERCENT = ("total_return", "bh_return", "max_drawdown", "win_rate")
_COUNTS = ("oos_days", "trades", "trials_total")


class ReportError(CandleflowError):
    """A report cannot be made (no trained model, no champion): names the next step."""


@dataclass(frozen=True)
class Verdict:
    """The promotion decision recorded on a version (its ``decision*`` tags)."""

    decision: str  # promoted | rejected | rolled back
    kind: str
    at: str
    checks: list[tuple[bool, str]]  # (passed, message)


@dataclass(frozen=True)
class BacktestRecord:
    """One version's out-of-sample record as its training recorded it."""

    symbol: str
    timeframe: str
    version: str
    run_id: str
    digest: str
    metrics: dict[str, float | None]
    daily: pl.DataFrame  # day, ret, bh_ret (null when the training did not record it)
    trades: pl.DataFrame | None  # None: recorded before trades were part of the evaluation
    verdict: Verdict | None  # None: not reviewed yet
    aliases: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.symbol} {self.timeframe} v{self.version}"

    def row(self) -> dict[str, Any]:
        """The model's line of the table across models (``--json``)."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "version": self.version,
            "decision": self.verdict.decision if self.verdict else "not reviewed",
            **{name: self.metrics.get(key) for name, key in TABLE_NUMBERS.items()},
        }


def oos_record(backtest: BacktestResult) -> dict[str, Any]:
    """What a training's evaluation keeps of its out-of-sample backtest: the daily net returns
    of the strategy and buy-and-hold, and the closed trades (timestamps as ISO text)."""
    daily = backtest.daily
    trades = backtest.trades.with_columns(pl.col(pl.Datetime).dt.to_string(_ISO))
    return {
        "oos_daily": {
            "day": [d.isoformat() for d in daily["day"].to_list()],
            "ret": daily["ret"].to_list(),
            "bh_ret": daily["bh_ret"].to_list(),
        },
        "oos_trades": trades.to_dict(as_series=False),
    }


def record_of(
    evaluation_: Mapping[str, Any],
    mv: ModelVersion,
    *,
    symbol: str,
    timeframe: str,
    reviewed: bool = True,
) -> BacktestRecord:
    """The record of ``mv`` from its training's evaluation (as read back from the hashed bytes).
    ``reviewed``: read the decision from the version's tags (False: at training time)."""
    daily = evaluation_.get("oos_daily")
    if not daily:
        raise EvidenceError(f"{mv.name} v{mv.version}: no out-of-sample daily record: retrain it")
    n = len(daily["day"])
    frame = pl.DataFrame(
        {
            "day": [date.fromisoformat(d) for d in daily["day"]],
            "ret": daily["ret"],
            "bh_ret": daily.get("bh_ret", [None] * n),
        },
        schema={"day": pl.Date, "ret": pl.Float64, "bh_ret": pl.Float64},
    )
    trades = evaluation_.get("oos_trades")
    return BacktestRecord(
        symbol=symbol,
        timeframe=timeframe,
        version=str(mv.version),
        run_id=mv.run_id or "",
        digest=(mv.tags or {}).get(EVALUATION_DIGEST, ""),
        metrics={
            k: float(v) if math.isfinite(v) else None
            for k, v in evaluation_.get("ensemble", {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        daily=frame,
        trades=None if trades is None else pl.DataFrame(trades),
        verdict=verdict_of(mv.tags or {}) if reviewed else None,
        aliases=tuple(sorted(mv.aliases or ())),
    )


def verdict_of(tags: Mapping[str, str]) -> Verdict | None:
    """The decision a version's tags record (``None``: the gate has not reviewed it)."""
    decision = tags.get("decision")
    if not decision:
        return None
    try:
        checks = [
            (bool(c["passed"]), str(c["message"])) for c in json.loads(tags["decision_checks"])
        ]
    except (KeyError, ValueError, TypeError):  # a tag cut at 4 900 characters, or edited
        reasons = tags.get("decision_reasons", "")
        checks = [(decision == "promoted", r) for r in reasons.split("; ") if r]
    return Verdict(decision, tags.get("decision_kind", "gate"), tags.get("decision_at", ""), checks)


def load_record(
    client: MlflowClient, symbol: str, timeframe: str, version: str | None = None
) -> BacktestRecord:
    """The record of the champion of ``symbol`` × ``timeframe`` (or of ``version``), from its
    training run's checked evaluation. Raises :class:`ReportError` naming the next step."""
    name = registered_name(symbol, timeframe)
    if version is not None:
        try:
            mv = get_version(client, name, version)
        except RegistryError as exc:
            raise ReportError(f"{symbol} {timeframe}: {exc}") from None
    else:
        mv = alias_version(client, name, CHAMPION)
        if mv is None:
            raise ReportError(_no_champion(client, name, symbol, timeframe))
    return record_of(evaluation(client, mv), mv, symbol=symbol, timeframe=timeframe)


def _no_champion(client: MlflowClient, name: str, symbol: str, timeframe: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    train = f"`candleflow train --symbols {symbol}`"
    if not versions:
        return f"{symbol} {timeframe}: no trained model: run {train} first"
    latest = max(versions, key=lambda v: int(v.version))
    tags = latest.tags or {}
    said = tags.get("decision", "not reviewed")
    reasons = tags.get("decision_reasons", "")
    why = f": {reasons[:200]}{'…' if len(reasons) > 200 else ''}" if reasons else ""
    return (
        f"{symbol} {timeframe}: no champion (the latest, v{latest.version}, {said}{why}); "
        f"report on it with --version {latest.version}, or run {train} again"
    )


# --- rendering ---------------------------------------------------------------------------------


def number(name: str, value: float | None) -> str:
    """A table cell: counts as integers, returns as percentages, ratios by their precision."""
    if value is None or not math.isfinite(value):
        return "–"
    if name in _COUNTS:
        return f"{value:.0f}"
    if name in _PERCENT:
        return f"{value:.1%}"
    return f"{value:.{_DECIMALS.get(name, 3)}f}"


def render(
    records: Sequence[BacktestRecord], missing: Sequence[str] = (), title: str = "Backtest report"
) -> str:
    """The whole report as one self-contained HTML document."""
    from plotly.offline import get_plotlyjs

    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [_section(i, r) for i, r in enumerate(records)]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Made {made} from each version's recorded out-of-sample evaluation"
        " (walk-forward, net of costs): the evidence the promotion gate read.</p>",
        _table_across(records, missing),
        _figure(_overlay(records), "overlay") if len(records) > 1 else "",
        *sections,
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child,td.text{text-align:left}
.pass{color:#1a7f37}.fail{color:#c62828}.meta{color:#666;font-size:13px}
.trades{max-height:320px;overflow:auto;display:inline-block}
section{border-top:2px solid #888;margin-top:28px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are escaped here (reasons hold ``<``)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    table = f"<table><tr>{head}</tr>{body}</table>"
    return f"<div class='{cls}'>{table}</div>" if cls else table


def _table_across(records: Sequence[BacktestRecord], missing: Sequence[str]) -> str:
    names = list(TABLE_NUMBERS)
    rows = [
        [r.symbol, r.timeframe, f"v{r.version}", r.row()["decision"]]
        + [number(n, r.metrics.get(k)) for n, k in TABLE_NUMBERS.items()]
        for r in records
    ]
    notes = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    return (
        "<h2>Across models</h2>"
        + _table(["symbol", "timeframe", "version", "decision", *names], rows)
        + (f"<p>Not reported:</p><ul>{notes}</ul>" if notes else "")
    )


def _section(i: int, r: BacktestRecord) -> str:
    aliases = f" ({', '.join(r.aliases)})" if r.aliases else ""
    first, last = r.daily["day"].min(), r.daily["day"].max()
    return (
        f"<section id='{html.escape(r.symbol)}-{html.escape(r.timeframe)}'>"
        f"<h2>{html.escape(r.title)}{html.escape(aliases)}</h2>"
        f"<p class='meta'>Out of sample {first} → {last}; MLflow run {html.escape(r.run_id)};"
        f" evaluation.json sha256 {html.escape(r.digest[:12])}…</p>"
        + _gate(r)
        + _figure(_equity(r), f"equity-{i}")
        + _figure(_monthly(r), f"monthly-{i}")
        + _trades(r)
        + "</section>"
    )


def _gate(r: BacktestRecord) -> str:
    numbers = _table(
        list(GATE_NUMBERS), [[number(n, r.metrics.get(k)) for n, k in GATE_NUMBERS.items()]]
    )
    v = r.verdict
    if v is None:
        return (
            "<h3>The gate's numbers</h3>" + numbers + "<p><b>Decision: not reviewed yet</b> — "
            "the promotion gate reviews a version after its training is recorded; its decision "
            "is then in the run's description and `candleflow report backtest`.</p>"
        )
    checks = "".join(
        f"<li class='{'pass' if ok else 'fail'}'>{'✔' if ok else '✘'} {html.escape(m)}</li>"
        for ok, m in v.checks
    )
    return (
        "<h3>The gate's numbers</h3>"
        + numbers
        + f"<p><b>Decision: {html.escape(v.decision)}</b> ({html.escape(v.kind)},"
        f" {html.escape(v.at)})</p><ul>{checks}</ul>"
    )


def _trades(r: BacktestRecord) -> str:
    if r.trades is None:
        return "<h3>Trades</h3><p>Not in this training's record (recorded before trade lists).</p>"
    columns = ["entry_ts", "exit_ts", "side", "entry_price", "exit_price", "reason", "bars", "ret"]
    rows = [
        [
            t["entry_ts"][:16].replace("T", " "),
            t["exit_ts"][:16].replace("T", " "),
            "long" if t["side"] > 0 else "short",
            f"{t['entry_price']:.6g}",
            f"{t['exit_price']:.6g}",
            t["reason"],
            t["bars"],
            f"{t['ret']:.2%}",
        ]
        for t in r.trades.select(columns).iter_rows(named=True)
    ]
    return f"<h3>Trades ({len(rows)})</h3>" + _table(columns, rows, "trades")


def _figure(fig: Any, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _curves(r: BacktestRecord) -> pl.DataFrame:
    """Equity (growth of 1) of the strategy and buy-and-hold, and the strategy's drawdown."""
    return r.daily.with_columns(
        equity=(1 + pl.col("ret")).cum_prod(), bh_equity=(1 + pl.col("bh_ret")).cum_prod()
    ).with_columns(drawdown=pl.col("equity") / pl.col("equity").cum_max() - 1)


def _equity(r: BacktestRecord) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    c = _curves(r)
    days = c["day"].to_list()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3])
    fig.add_trace(go.Scatter(x=days, y=c["equity"].to_list(), name="strategy"), row=1, col=1)
    if c["bh_ret"].null_count() < c.height:
        bh = go.Scatter(x=days, y=c["bh_equity"].to_list(), name="buy and hold")
        fig.add_trace(bh, row=1, col=1)
    dd = go.Scatter(x=days, y=c["drawdown"].to_list(), name="drawdown", fill="tozeroy")
    fig.add_trace(dd, row=2, col=1)
    fig.update_yaxes(title_text="equity (×)", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_layout(title=f"{r.title}: out-of-sample equity, net of costs", height=480)
    return fig


def _monthly(r: BacktestRecord) -> Any:
    import plotly.graph_objects as go

    months = (
        r.daily.group_by(pl.col("day").dt.truncate("1mo").alias("month"))
        .agg(
            ((1 + pl.col("ret")).product() - 1).alias("ret"),
            ((1 + pl.col("bh_ret")).product() - 1).alias("bh_ret"),
        )
        .sort("month")
    )
    labels = [m.strftime("%Y-%m") for m in months["month"].to_list()]
    fig = go.Figure(go.Bar(x=labels, y=months["ret"].to_list(), name="strategy"))
    if r.daily["bh_ret"].null_count() < r.daily.height:
        fig.add_trace(go.Bar(x=labels, y=months["bh_ret"].to_list(), name="buy and hold"))
    fig.update_layout(
        title=f"{r.title}: monthly returns", yaxis_tickformat=".1%", height=320, barmode="group"
    )
    return fig


def _overlay(records: Sequence[BacktestRecord]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in records:
        c = _curves(r)
        fig.add_trace(go.Scatter(x=c["day"].to_list(), y=c["equity"].to_list(), name=r.title))
    fig.update_layout(title="Out-of-sample equity of every model, net of costs", height=380)
    return fig
