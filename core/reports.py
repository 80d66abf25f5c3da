"""The records the stages return: one pydantic model per stage's report row (collect, dataset,
train, promote, signal, retrain) and the run's summary. Tasks return them; the
CLI tables, ``--json`` and the Prefect artifacts render them from the model. A light module (the
CLI imports it at start-up without Prefect or MLflow)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, computed_field

Number = float | int | None


class UnitReport(BaseModel):
    """One symbol × timeframe's row of a stage's report; ``error`` set when the unit failed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Columns a terminal table leaves out (kept in --json and the artifacts).
    hidden: ClassVar[tuple[str, ...]] = ()

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
        return tuple(c for c in cls.columns() if c not in cls.hidden)

    def row(self) -> dict[str, Any]:
        """The row as JSON-ready values (what ``--json`` prints and artifacts show)."""
        data = self.model_dump(mode="json")
        return {c: data[c] for c in self.columns()}


class CollectReport(UnitReport):
    """Candles fetched (or read from a file), validated and upserted into the store."""

    hidden: ClassVar[tuple[str, ...]] = ("missing_candles", "rows", "reasons")

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

    hidden: ClassVar[tuple[str, ...]] = ("candle_first", "candle_last", "path")

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

    hidden: ClassVar[tuple[str, ...]] = ("champion_version", "checks", "summary")

    version: str | None = None
    promoted: bool | None = None
    kind: str | None = None  # gate | manual | rollback | already_champion | no_challenger
    reasons: list[str] | None = None
    champion_version: str | None = None
    checks: list[CheckReport] | None = None
    summary: str | None = None  # one line a person reads


class TrainReport(UnitReport):
    """A training recorded in MLflow: the registered version and its out-of-sample metrics."""

    hidden: ClassVar[tuple[str, ...]] = (
        "run_id",
        "experiment",
        "families",
        "reused",
        "promotion",
    )

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

    def best_family(self) -> str | None:
        families = self.families or {}
        return max(families, key=lambda f: families[f].get("oos_roc_auc", 0), default=None)


class SignalReport(UnitReport):
    """One live decision on the newest closed candle (the champion's, or a challenger's shadow)."""

    hidden: ClassVar[tuple[str, ...]] = (
        "model_version",
        "reasons",
        "quantity",
        "stop_loss",
        "take_profit",
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
