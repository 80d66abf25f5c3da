"""How a report value reads in a table (the CLI's and Prefect's): each column has a kind that
fixes its rounding and words (AUC to 3 d.p., Sharpe to 2, a price to its instrument's
precision, ``-`` for nothing or NaN) and a colour a terminal may use. ``--json`` never uses it."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from core.instruments import instrument

EMPTY = "-"


class Kind(StrEnum):
    TEXT = "text"
    INT = "int"  # counts: 87.0 reads 87
    AUC = "auc"  # 3 d.p.
    PROB = "prob"  # probabilities and their tests (DSR, PSR, PBO): 3 d.p.
    RATIO = "ratio"  # Sharpe, profit factor, multipliers: 2 d.p.
    PERCENT = "percent"  # a fraction, shown as a percentage to 1 d.p.
    MONEY = "money"  # 2 d.p. with thousands separators
    PRICE = "price"  # the row's instrument precision (one digit finer than its pip)
    NUMBER = "number"  # 4 significant digits (quantities, weights)
    TIME = "time"  # YYYY-MM-DD HH:MM
    BOOL = "bool"  # yes / no
    DECISION = "decision"  # promoted / refused / kept champion …, coloured
    SIDE = "side"  # BUY / SELL (also +1 / -1) and tiers, coloured


NUMERIC = frozenset(
    {Kind.INT, Kind.AUC, Kind.PROB, Kind.RATIO, Kind.PERCENT, Kind.MONEY, Kind.PRICE, Kind.NUMBER}
)


@dataclass(frozen=True)
class Column:
    """What a column holds and how a table shows it: ``label`` its short header, ``wide`` only
    with ``--wide``, ``max_width`` the widest it gets before its text is cut (folded if wide)."""

    kind: Kind = Kind.TEXT
    label: str | None = None
    wide: bool = False
    max_width: int | None = None


@dataclass(frozen=True)
class Cell:
    text: str
    style: str | None = None  # a colour name for terminals ("green", "red", …)


GOOD_WORDS = frozenset({"promoted", "promoted manually", "BUY", "STRONG_BUY", "placed", "OK"})
BAD_WORDS = frozenset({"refused", "rejected", "SELL", "STRONG_SELL", "ERROR", "SPEC_MISMATCH"})
WARN_WORDS = frozenset({"AVOID", "STALE", "rolled back", "restored by rollback"})
_DECIMALS = {Kind.AUC: 3, Kind.PROB: 3, Kind.RATIO: 2}


# Every column a table shows, by name: one name means one thing in every table (the stages'
# reports of ``core.reports``, models list, positions, the shadow report). Undeclared columns are
# plain text; a table may show more of them only with --wide (``UnitReport.wide``).
COLUMNS: dict[str, Column] = {
    # units and stages
    "timeframe": Column(Kind.TEXT, "tf"),
    "version": Column(Kind.TEXT, "ver"),
    "error": Column(Kind.TEXT),
    "reasons": Column(Kind.TEXT, max_width=26),
    "rows": Column(Kind.INT),
    # collect, store
    "fetched": Column(Kind.INT),
    "new": Column(Kind.INT),
    "replaced": Column(Kind.INT),
    "duplicated": Column(Kind.INT, "dup"),
    "quarantined": Column(Kind.INT),
    "gaps": Column(Kind.INT),
    "missing_candles": Column(Kind.INT, "missing", wide=True),
    "first_ts": Column(Kind.TIME, "first"),
    "last_ts": Column(Kind.TIME, "last"),
    "after": Column(Kind.TIME),
    "before": Column(Kind.TIME),
    "missing": Column(Kind.INT),
    "ts": Column(Kind.TIME, "candle"),
    # dataset
    "features": Column(Kind.INT),
    "spec_hash": Column(Kind.TEXT, "spec", wide=True),
    "label_counts": Column(Kind.TEXT, "labels"),
    "dropped": Column(Kind.TEXT, max_width=40),
    "skipped": Column(Kind.TEXT),
    "candle_first": Column(Kind.TIME, "from", wide=True),
    "candle_last": Column(Kind.TIME, "to", wide=True),
    "path": Column(Kind.TEXT, wide=True),
    # train and promote
    "model_name": Column(Kind.TEXT, "model", wide=True),
    "run_id": Column(Kind.TEXT, "run", wide=True),
    "experiment": Column(Kind.TEXT, wide=True),
    "reused": Column(Kind.BOOL, wide=True),
    "trials": Column(Kind.INT, "trials/family"),
    "promoted": Column(Kind.BOOL, wide=True),
    "kind": Column(Kind.TEXT, wide=True),
    "decision": Column(Kind.DECISION),
    "champion_version": Column(Kind.TEXT, "vs champion", wide=True),
    "cv_auc": Column(Kind.AUC, "cv AUC"),
    "oos_auc": Column(Kind.AUC, "AUC"),
    "oos_logloss": Column(Kind.PROB, "logloss", wide=True),
    "oos_sharpe": Column(Kind.RATIO, "Sharpe"),
    "oos_days": Column(Kind.INT, "days"),
    "psr": Column(Kind.PROB, "PSR", wide=True),
    "dsr": Column(Kind.PROB, "DSR"),
    "pbo": Column(Kind.PROB, "PBO"),
    "trials_total": Column(Kind.INT, "trials"),
    "trials_effective": Column(Kind.RATIO, "indep. trials", wide=True),
    "trades": Column(Kind.INT),
    "win_rate": Column(Kind.PERCENT, "win", wide=True),
    "profit_factor": Column(Kind.RATIO, "PF", wide=True),
    "max_drawdown": Column(Kind.PERCENT, "max DD", wide=True),
    "total_return": Column(Kind.PERCENT, "return"),
    "exposure": Column(Kind.PERCENT, wide=True),
    "bh_sharpe": Column(Kind.RATIO, "B&H"),
    "cv_sharpe": Column(Kind.RATIO, "cv Sharpe", wide=True),
    # models list
    "aliases": Column(Kind.TEXT),
    # signals, positions
    "status": Column(Kind.DECISION),
    "action": Column(Kind.SIDE, "vote"),
    "probability": Column(Kind.PROB, "p"),
    "weight": Column(Kind.INT),  # 0–100
    "tier": Column(Kind.SIDE),
    "position_multiplier": Column(Kind.RATIO, "size"),
    "order_id": Column(Kind.TEXT, "order id", wide=True),
    "quantity": Column(Kind.NUMBER, "qty"),
    "stop_loss": Column(Kind.PRICE, "SL"),
    "take_profit": Column(Kind.PRICE, "TP"),
    "model_version": Column(Kind.TEXT, "ver"),
    "champion_kind": Column(Kind.TEXT, "crowned", wide=True),
    "shadow": Column(Kind.BOOL, wide=True),
    "dry_run": Column(Kind.BOOL, "dry run", wide=True),
    "model": Column(Kind.TEXT),  # a signal's deciding version; models list: the registered name
    "order": Column(Kind.DECISION, max_width=24),
    "side": Column(Kind.SIDE),
    "entry_ts": Column(Kind.TIME, "opened"),
    "entry_price": Column(Kind.PRICE, "entry"),
    "last_price": Column(Kind.PRICE, "last"),
    "unrealized_pnl": Column(Kind.MONEY, "PnL"),
    "timeout_at": Column(Kind.TIME, "timeout", wide=True),
    "balance": Column(Kind.MONEY),
    "equity": Column(Kind.MONEY),
    "realized_pnl": Column(Kind.MONEY, "realized PnL"),
    "day_start_equity": Column(Kind.MONEY, "day start equity"),
    "peak_equity": Column(Kind.MONEY, "peak equity"),
    "drawdown": Column(Kind.PERCENT),
    "pending_orders": Column(Kind.INT, "pending orders"),
    "as_of": Column(Kind.TIME, "as of"),
    # report shadow
    "model_versions": Column(Kind.TEXT, "versions"),
    "signals": Column(Kind.INT),
    "buys": Column(Kind.INT),
    "resolved": Column(Kind.INT),
    "wins": Column(Kind.INT),
    "hit_rate": Column(Kind.PERCENT, "hit rate"),
    "pending": Column(Kind.INT),
    # retrain check
    "champion": Column(Kind.TEXT),
    "newest": Column(Kind.TEXT),
    "data_end": Column(Kind.TIME, "data end"),
    "new_samples": Column(Kind.INT, "new samples"),
    "live_resolved": Column(Kind.INT, "resolved"),
    "live_hit_rate": Column(Kind.PERCENT, "hit rate"),
    "trained_hours_ago": Column(Kind.INT, "trained h ago"),
    "retrain": Column(Kind.BOOL),
    "trigger": Column(Kind.TEXT),
    "flow_run": Column(Kind.TEXT, "flow run", wide=True),
    # run summary
    "candles": Column(Kind.INT),
    "dataset_rows": Column(Kind.INT, "rows"),
    "best_family": Column(Kind.TEXT, "family"),
    "net_sharpe": Column(Kind.RATIO, "Sharpe"),
    "signal": Column(Kind.SIDE),
}


def format_value(value: Any, kind: Kind = Kind.TEXT, symbol: str | None = None) -> str:
    """``value`` as a table shows it; ``symbol`` gives a price its precision."""
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {format_value(v, _kind_of(v))}" for k, v in value.items())
    if isinstance(value, Iterable):
        return "; ".join(format_value(v, kind) for v in value)
    if isinstance(value, int | float):
        return _number(value, kind, symbol)
    return str(value)


def _text(value: str) -> str:
    if len(value) > 19 and value[10:11] == "T":  # an ISO timestamp from a JSON-ready row
        return value[:16].replace("T", " ")
    return value


def _kind_of(value: Any) -> Kind:
    """A nested value's kind: counts are integers, other numbers get 4 significant digits."""
    if isinstance(value, float) and not value.is_integer():
        return Kind.NUMBER
    return Kind.INT


def _number(value: float, kind: Kind, symbol: str | None) -> str:
    if kind is Kind.SIDE:
        return {1: "BUY", -1: "SELL", 0: "FLAT"}.get(int(value), str(value))
    if kind is Kind.MONEY:
        return f"{value:,.2f}"
    if kind in _DECIMALS:
        return f"{value:.{_DECIMALS[kind]}f}"
    if kind is Kind.PERCENT:
        return f"{value:.1%}"
    if kind is Kind.PRICE:
        return f"{value:.{price_decimals(symbol)}f}"
    if kind is Kind.INT or (isinstance(value, int) and kind is not Kind.NUMBER):
        return str(round(value))
    return _significant(value, 4)


def price_decimals(symbol: str | None) -> int:
    """Digits a price of ``symbol`` is quoted to: one finer than its pip (EURUSD 5, USDJPY 3)."""
    if not symbol:
        return 2
    pip = instrument(symbol).pip_size
    return max(0, -math.floor(math.log10(pip)) + 1)


def _significant(value: float, digits: int) -> str:
    if value == 0 or float(value).is_integer():
        return f"{value:,.0f}"
    decimals = min(8, max(0, digits - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:,.{decimals}f}"


def style_of(value: Any, kind: Kind) -> str | None:
    """A colour for decisions and sides: green to act on, red refused or selling."""
    if kind not in (Kind.DECISION, Kind.SIDE) or value is None:
        return None
    word = format_value(value, kind).removeprefix("none: ")  # an order not placed: why
    if word in GOOD_WORDS:
        return "green"
    if word in BAD_WORDS or word.startswith("refused"):
        return "red"
    return "yellow" if word in WARN_WORDS else None


def visible_columns(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    wide: bool = False,
    detail: Collection[str] = (),
    specs: Mapping[str, Column] = COLUMNS,
) -> list[str]:
    """The columns a table shows: wide ones (by their spec, or this table's ``detail``) only
    when ``wide``, and none that is empty in every row (e.g. ``error``)."""
    shown = [c for c in columns if wide or not (c in detail or specs.get(c, Column()).wide)]
    filled = [c for c in shown if any(row.get(c) not in (None, "", [], {}) for row in rows)]
    return filled or shown


def cells(
    row: Mapping[str, Any], columns: Sequence[str], specs: Mapping[str, Column] = COLUMNS
) -> list[Cell]:
    """A row's cells in ``columns`` order (a price takes the row's symbol's precision)."""
    symbol = row.get("symbol") if isinstance(row.get("symbol"), str) else None
    out = []
    for column in columns:
        kind, value = specs.get(column, Column()).kind, row.get(column)
        out.append(Cell(format_value(value, kind, symbol), style_of(value, kind)))
    return out


def formatted_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    specs: Mapping[str, Column] = COLUMNS,
) -> list[dict[str, str]]:
    """The rows' ``columns`` as text, keyed by column name (a Prefect table artifact)."""
    return [
        {c: cell.text for c, cell in zip(columns, cells(row, columns, specs), strict=True)}
        for row in rows
    ]


def label(column: str, specs: Mapping[str, Column] = COLUMNS) -> str:
    spec = specs.get(column)
    return spec.label if spec is not None and spec.label else column
