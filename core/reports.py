"""Field names of the reports the stages print and publish, in one light module (the CLI imports
it at start-up without Prefect or MLflow)."""

# One live signal (``candleflow signals --json``, the live-signals table artifact).
SIGNAL_FIELDS = (
    "symbol",
    "timeframe",
    "ts",
    "status",
    "action",
    "probability",
    "weight",
    "tier",
    "position_multiplier",
    "order_id",
    "model_version",
    "champion_kind",  # how the champion was crowned: gate | manual | rollback (None: shadow)
    "shadow",
    "reasons",
)

# One line of ``candleflow run``'s summary, per symbol × timeframe.
SUMMARY_FIELDS = (
    "symbol",
    "timeframe",
    "candles",
    "dataset_rows",
    "best_family",
    "oos_auc",
    "net_sharpe",
    "dsr",
    "promoted",
    "signal",
    "tier",
)
