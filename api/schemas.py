"""The bodies the HTTP API takes and answers (pydantic: validated, and documented at ``/docs``).
A prediction answers the record ``candleflow signals --json`` prints (``core.reports.SignalReport``)
with the details the ledger keeps beside it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from core.reports import SignalReport


class Candle(BaseModel):
    """One OHLCV candle; ``ts`` is its open time (ISO 8601 or epoch seconds; naive means UTC)."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


class PredictRequest(BaseModel):
    """Which champion to ask; ``candles``: the newest candles, laid over the stored ones (not
    stored) once they pass the import's validation; none: the store's newest closed candle."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"symbol": "EURUSD", "timeframe": "1h"}]},
    )

    symbol: str = Field(min_length=1, max_length=32)
    timeframe: str | None = Field(default=None, description="default: the first configured")
    candles: list[Candle] = Field(default_factory=list)


class Prediction(SignalReport):
    """The decision as ``candleflow signals --json`` reports it, with its details: the model,
    each family's probability, the weight's components, the explanation, and the order the
    risk layer would place (``quantity``, ``stop_loss``, ``take_profit``; nothing is placed)."""

    model_name: str | None = None
    threshold: float | None = None
    families: dict[str, float] | None = None
    components: dict[str, Any] | None = None
    explanation: dict[str, Any] | None = None
    would_order: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def order(self) -> str | None:
        """A prediction places no order: what the risk layer would do."""
        if self.would_order:
            return "would place (a prediction places none)"
        return super().order


class Refusal(BaseModel):
    """A 4xx answer: what is wrong and, for a refused decision, its record."""

    detail: str
    status: str | None = None
    decision: Prediction | None = None


class SignalRow(BaseModel):
    """One row of the ledger's signals table."""

    model_config = ConfigDict(extra="allow")

    symbol: str
    timeframe: str
    ts: datetime
    model_name: str
    model_version: str
    shadow: bool
    status: str
    action: Literal["BUY", "SELL", "FLAT"] | None = None
    probability: float | None = None
    weight: float | None = None
    tier: str | None = None
    position_multiplier: float | None = None
    components: Any = None
    explanation: Any = None


class AlertAnswer(BaseModel):
    """What became of a TradingView alert: stored (``created``) or already stored."""

    id: int
    created: bool
    symbol: str
    timeframe: str
    action: str
    candle_ts: datetime
    note: str = "stored, not executed: an alert is never traded on its own"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    home: str
    database: str
