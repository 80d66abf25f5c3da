"""Tasks of the live-signals stage: open the run (paper account brought up to date, account
snapshot, pending orders, the registry's aliases), score each symbol, publish charts, notify."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from brokers.paper import PaperBroker
from core.config import Settings
from core.errors import CandleflowError
from core.store import CandleStore
from core.timeframes import parse_timeframe
from models.tracking import setup
from trading.ledger import Ledger
from trading.live import LiveContext, pending_positions, run_symbol
from trading.live_models import ModelCache

# Models stay loaded, the database engine open and candle files read, between runs of a
# long-lived process (`candleflow serve`): models keyed by version, engines by database URL,
# candle stores (whole-file reads kept until the file changes) by state directory.
logger = logging.getLogger(__name__)

_CACHES: dict[str, ModelCache] = {}
_LEDGERS: dict[str, Ledger] = {}
_STORES: dict[str, CandleStore] = {}
STORE_CACHE_MB = 512


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def open_live_run(
    settings: Settings, symbols: list[str], timeframe: str, now: datetime | None = None
) -> LiveContext:
    """Bring the paper account up to the newest candles (fills, exits) and snapshot it."""
    url = settings.live.resolved_database_url(settings.home)
    if url not in _LEDGERS:  # one engine (connection pool) per database for the process
        _LEDGERS[url] = Ledger(url)
        _LEDGERS[url].create_all()
    ledger = _LEDGERS[url]
    broker = PaperBroker(ledger.engine, settings.paper, settings.costs)
    home = str(settings.home)
    if home not in _STORES:
        _STORES[home] = CandleStore(settings.home, cache_mb=STORE_CACHE_MB)
    store = _STORES[home]
    broker.update({s: store.read(s, timeframe) for s in symbols}, timeframe)
    client = setup(settings.home, settings.mlflow.tracking_uri)  # also MLflow's URI, for loads
    if home not in _CACHES:
        _CACHES[home] = ModelCache(client)
    cache = _CACHES[home]
    cache.refresh()  # the run's aliases, in one registry query
    return LiveContext(
        settings,
        store,
        ledger,
        broker,
        cache,
        broker.state(),
        now or datetime.now(UTC),
        pending=pending_positions(ledger, store),  # after the update: fills are positions
    )


@task(cache_policy=NO_CACHE, task_run_name="signal-{symbol}-{timeframe}")
def score_symbol(ctx: LiveContext, symbol: str, timeframe: str) -> list[dict[str, Any]]:
    """The champion's decision on the newest closed candle (and the challenger's, in shadow)."""
    return run_symbol(ctx, symbol, timeframe)


@task(cache_policy=NO_CACHE)
def publish_charts(ctx: LiveContext, rows: list[dict[str, Any]], last_n: int = 120) -> list[str]:
    """A PNG per scored symbol (last candles, the signal, SL and TP) and a markdown artifact.
    One symbol's chart failing does not cost the others: the task fails at the end, naming it."""
    from trading.charts import signal_chart

    paths, parts, failed = [], ["# Live signals", ""], []
    for r in rows:
        if r["shadow"] or r["status"] != "OK":
            continue
        folder = ctx.settings.home / "live" / "charts" / r["timeframe"]
        path = folder / f"{r['symbol']}_{r['ts']:%Y%m%dT%H%M}.png"
        end = r["ts"] + parse_timeframe(r["timeframe"]).duration  # up to the signal's candle
        try:
            signal_chart(
                ctx.store.read(r["symbol"], r["timeframe"], end=end).tail(last_n),
                symbol=r["symbol"],
                timeframe=r["timeframe"],
                signal_ts=r["ts"],
                action=r["action"],
                probability=r["probability"],
                tier=r["tier"],
                stop_loss=r.get("stop_loss"),
                take_profit=r.get("take_profit"),
                path=path,
                last_n=last_n,
            )
        except Exception as exc:
            logger.exception("chart of %s %s failed", r["symbol"], r["timeframe"])
            failed.append(f"{r['symbol']} {r['timeframe']}: {type(exc).__name__}: {exc}")
            continue
        paths.append(str(path))
        parts += [
            f"## {r['symbol']} {r['timeframe']} — {r['tier']}",
            _inline(path),
            f"`{path}`",
            "",
        ]
    if paths:
        create_markdown_artifact(
            key="live-signal-charts", markdown="\n".join(parts), description="Signal charts"
        )
    if failed:
        raise ChartError(f"{len(failed)} chart(s) failed: " + "; ".join(failed))
    return paths


class ChartError(CandleflowError):
    """Signal charts could not be drawn (the signals and orders are not affected)."""


def _inline(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def notify_signals(settings: Settings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Post the signals to the configured webhook (off unless ``live.webhook_url`` is set)."""
    from trading.notify import notify

    report = notify([r for r in rows if not r["shadow"] and r["status"] == "OK"], settings.live)
    return {"sent": report.sent, "skipped": report.skipped, "error": report.error}
