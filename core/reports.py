"""The records the stages return: one pydantic model per stage's report row (collect, dataset,
train, promote, signal, retrain) and the run's summary. Tasks return them; the
CLI tables, ``--json`` and the Prefect artifacts render them from the model. A light module (the
CLI imports it at start-up without Prefect or MLflow)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, computed_field

from core.formatting import COLUMNS  # noqa: F401  (each column's kind, beside the records)

Number = float | int | None
ORDER_TIERS = frozenset({"STRONG_BUY", "BUY", "SELL", "STRONG_SELL"})  # as models.signal


class UnitReport(BaseModel):
    """One symbol × timeframe's row of a stage's report; ``error`` set when the unit failed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Columns a terminal table leaves out, even with --wide (kept in --json and the artifacts).
    hidden: ClassVar[tuple[str, ...]] = ()
    # Columns this table shows only with --wide (besides those wide everywhere:
    # ``core.formatting.COLUMNS``).
    wide: ClassVar[tuple[str, ...]] = ()

    symbol: str
    timeframe: str
    error: str | None = None

    @classmethod
    def failed(cls, symbol: str, timeframe: str, error: str) -> Self:
        """The row of a unit whose stage failed (every other field empty)."""
        return cls.model_construct(
            **{
                name: f.get_default(call_default_factory=True)
                for name, f in cls.model_fields.items()
            }
            | {"symbol": symbol, "timeframe": timeframe, "error": error}
        )

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The table's columns: symbol and timeframe first, error last."""
        fields = [*cls.model_fields, *cls.model_computed_fields]
        names = [n for n in fields if n not in ("symbol", "timeframe", "error")]
        return ("symbol", "timeframe", *names, "error")

    @classmethod
    def table_columns(cls) -> tuple[str, ...]:
        """A table's columns (the wide ones show only with ``--wide``)."""
        return tuple(c for c in cls.columns() if c not in cls.hidden)

    def row(self) -> dict[str, Any]:
        """The row as JSON-ready values (what ``--json`` prints and artifacts show)."""
        data = self.model_dump(mode="json")
        return {c: data[c] for c in self.columns()}

    def table_row(self) -> dict[str, Any]:
        """The row a table shows: ``row()`` plus any column derived for it."""
        return self.row()

    def fields_json(self) -> dict[str, Any]:
        """The report's own fields in JSON types, without the computed columns: what another
        process reads back into the same report with ``model_validate`` (the signal service's
        answer to a command that handed it its run)."""
        return self.model_dump(mode="json", exclude=set(type(self).model_computed_fields))


def decision_word(promoted: bool | None, kind: str | None) -> str | None:
    """What the promotion gate did, in words: a champion kept is not "promoted False"."""
    if promoted is None and kind is None:
        return None
    words = {
        "no_challenger": "no challenger",
        "already_champion": "kept champion",
        "manual": "promoted manually",
        "rollback": "restored by rollback",
    }
    return words.get(kind or "gate") or ("promoted" if promoted else "refused")


class CollectReport(UnitReport):
    """Candles fetched (or read from a file), validated and upserted into the store."""

    wide: ClassVar[tuple[str, ...]] = ("rows", "reasons")

    fetched: int | None = None
    new: int | None = None
    replaced: int | None = None
    duplicated: int | None = None
    quarantined: int | None = None
    gaps: int | None = None
    missing_candles: int | None = None
    rows: int | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    reasons: dict[str, int] | None = None  # quarantine reasons → rows


class DatasetReport(UnitReport):
    """The training dataset written for a symbol × timeframe."""

    wide: ClassVar[tuple[str, ...]] = ("skipped",)

    rows: int | None = None
    features: int | None = None
    spec_hash: str | None = None
    label_counts: dict[str, int] | None = None
    dropped: dict[str, int] | None = None  # warm-up / unlabeled / non-event → rows
    skipped: list[str] | None = None
    candle_first: datetime | None = None
    candle_last: datetime | None = None
    path: str | None = None


class CheckReport(BaseModel):
    """One check of the promotion gate."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str


class PromoteReport(UnitReport):
    """The promotion gate's decision on a version."""

    hidden: ClassVar[tuple[str, ...]] = ("checks", "summary")

    version: str | None = None
    promoted: bool | None = None
    kind: str | None = None  # gate | manual | rollback | already_champion | no_challenger
    reasons: list[str] | None = None
    champion_version: str | None = None
    checks: list[CheckReport] | None = None
    summary: str | None = None  # one line a person reads

    @computed_field
    @property
    def decision(self) -> str | None:
        return decision_word(self.promoted, self.kind)


class TrainReport(UnitReport):
    """A training recorded in MLflow: the registered version and its out-of-sample metrics."""

    hidden: ClassVar[tuple[str, ...]] = ("metrics", "families", "promotion")
    wide: ClassVar[tuple[str, ...]] = ("trials",)

    model_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    experiment: str | None = None
    reused: bool | None = None  # the same data, spec and code were trained before: not retrained
    metrics: dict[str, Number] | None = None  # headline metrics under report names
    families: dict[str, dict[str, float]] | None = None  # per family: its metrics
    trials: int | None = None
    promotion: PromoteReport | None = None  # the gate's decision (None: not reviewed)

    @computed_field
    @property
    def promoted(self) -> bool | None:
        return None if self.promotion is None else self.promotion.promoted

    @computed_field
    @property
    def decision(self) -> str | None:
        return None if self.promotion is None else self.promotion.decision

    @classmethod
    def table_columns(cls) -> tuple[str, ...]:
        """The version, its headline metrics (``metrics`` flattened) and the gate's decision."""
        head, tail = ("symbol", "timeframe", "version"), ("decision", "error")
        rest = [c for c in super().table_columns() if c not in (*head, *tail)]
        return (*head, *TRAIN_METRICS, *rest, *tail)

    def table_row(self) -> dict[str, Any]:
        row = self.row()
        return row | (row["metrics"] or {})

    def best_family(self) -> str | None:
        families = self.families or {}
        return max(families, key=lambda f: families[f].get("oos_roc_auc", 0), default=None)


class SignalReport(UnitReport):
    """One live decision on the newest closed candle (the champion's, or a challenger's shadow)."""

    hidden: ClassVar[tuple[str, ...]] = ("reasons",)  # the CLI prints them below the table
    # The title names the timeframe; ``order`` says what the status meant for trading.
    wide: ClassVar[tuple[str, ...]] = (
        "timeframe",
        "status",
        "weight",
        "quantity",
        "stop_loss",
        "take_profit",
        "model_version",
    )

    ts: datetime | None = None
    status: str | None = None  # OK | SPEC_MISMATCH | STALE | NO_MODEL | ERROR
    action: str | None = None  # BUY | SELL | FLAT
    probability: float | None = None
    weight: float | None = None
    tier: str | None = None
    position_multiplier: float | None = None
    order_id: str | None = None
    quantity: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    model_version: str | None = None
    champion_kind: str | None = None  # gate | manual | rollback (None: shadow or no model)
    shadow: bool = False
    reasons: list[str] | None = None
    dry_run: bool | None = None  # the order was only logged by the broker (None: no order)

    @computed_field
    @property
    def order(self) -> str | None:
        """Whether an order went out: placed, dry-run, or none and why."""
        if self.order_id:
            return "dry-run" if self.dry_run else "placed"
        if self.status is None:
            return None
        if self.shadow:
            return "none: shadow"
        if self.status != "OK":
            return f"none: {self.status}"
        if self.tier not in ORDER_TIERS:
            return f"none: {self.tier}"
        why = (self.reasons or ["refused"])[-1]
        return f"none: {why}"

    @classmethod
    def table_columns(cls) -> tuple[str, ...]:
        """``model`` (the version and its role) stands before ``order``."""
        columns = [c for c in super().table_columns() if c not in ("model", "order", "error")]
        return (*columns, "model", "order", "error")

    def table_row(self) -> dict[str, Any]:
        return self.row() | {"model": self.model_label()}

    def model_label(self) -> str | None:
        """The deciding version and its role: ``v4``, ``v5 shadow``, ``v3 manual``; the shadow
        row is not a duplicate of the champion's."""
        if not self.model_version:
            return "shadow" if self.shadow else None
        role = "shadow" if self.shadow else self.champion_kind
        return f"v{self.model_version}" + (f" {role}" if role not in (None, "gate") else "")


class RetrainReport(UnitReport):
    """The retrain check's evidence and decision for one model."""

    champion: str | None = None
    newest: str | None = None
    data_end: datetime | None = None
    new_samples: int | None = None
    live_resolved: int | None = None
    live_hit_rate: float | None = None
    trained_hours_ago: float | None = None
    retrain: bool | None = None
    trigger: str | None = None
    reasons: list[str] | None = None
    flow_run: str | None = None


class SummaryRow(UnitReport):
    """One line of ``candleflow run``'s summary."""

    candles: int | None = None
    dataset_rows: int | None = None
    best_family: str | None = None
    oos_auc: float | None = None
    net_sharpe: float | None = None
    dsr: float | None = None
    promoted: bool | None = None
    decision: str | None = None  # decision_word of the promotion
    signal: str | None = None
    tier: str | None = None


class RunReport(BaseModel):
    """What ``candleflow run`` did: each stage's rows, its time, the stages' errors, a summary."""

    collect: list[CollectReport] = []
    dataset: list[DatasetReport] = []
    train: list[TrainReport] = []
    signals: list[SignalReport] = []
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    summary: list[SummaryRow] = []
    flow_run: str | None = None


# The train table's metric columns (``TrainReport.metrics`` flattened; report names of
# ``models.recording.SUMMARY_METRICS``): the headline ones, then those shown with --wide.
TRAIN_METRICS = (
    "cv_auc",
    "oos_auc",
    "oos_sharpe",
    "oos_days",
    "dsr",
    "pbo",
    "trials_total",
    "trades",
    "bh_sharpe",
    *("oos_logloss", "psr", "win_rate", "profit_factor", "max_drawdown", "exposure", "cv_sharpe"),
    "trials_effective",
)
