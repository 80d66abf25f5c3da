"""Live-stage figures (issue targets in brackets), on the simulated market:

* per-symbol decision with a cached model — features of the last candle (the model's own spec),
  the ensemble's 4 families, vote, weight, risk layer; no database — timed as candles arrive
  (each round brings every symbol one new candle, read from memory: the store as of the round's
  time), four ways interleaved in one loop, ratios against today's: the signal service's way
  (feature streams, ``features.incremental``: one step per new candle; compiled families)
  [p99 ≤ 2 ms, ≥ 5× today's]; the tail rebuilt with compiled families (``candleflow signals``,
  a fresh process each run); the same with the record's explanation (TreeSHAP); and today's
  path (the tail, the libraries' scores and TreeSHAP at once) [p99 ≤ 20 ms]. Next to them: a
  feature stream's start (once per symbol and process, on the same tail), the features of the
  newest candle alone and on the whole stored history (what the bounded tail saves), the 4
  families alone by their libraries and compiled, and the code fingerprint check each model
  makes once when it loads (``models.fingerprint``; made before the decisions are timed);
* a live run of 20 symbols through the Prefect flow — incremental collect, paper account update,
  scoring, records, orders, charts [≤ 5 s wall for 20 symbols, Prefect overhead included], once
  with models loading (as every run served by ``candleflow serve``: a fresh process) and twice
  cached; next to it, one chart alone. The simulated catalogue has 17 symbols: the other 3 are a
  user's own imported candles (the second market seed's crypto series under other names), brought
  up to date before each run, untimed, as an import would; their fetch from the simulated broker
  fails fast inside the run, as a symbol unknown to the broker does.

Set-up (not timed): 200 days of candles, one quick training per symbol (1 trial per family, 2
folds) promoted by hand — the figures concern scoring, not model quality.

    uv run --frozen python bench/bench_live.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl

    from core.store import CandleStore
    from features.incremental import FeatureStreams
    from trading.live import LiveContext
    from trading.live_models import LiveModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

END = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
REPEATS = 300
# Beyond the catalogue: name → the series of the second market seed it is made of.
IMPORTED = {"ADAUSD": "BTCUSD", "XRPUSD": "ETHUSD", "DOTUSD": "SOLUSD"}


def _import(home: Path, until: datetime) -> None:
    """The imported symbols' closed candles up to ``until`` (200 days), into the store."""
    from brokers.simulated import SimulatedBroker
    from core.store import CandleStore

    store, broker = CandleStore(home), SimulatedBroker(seed=8)
    for name, source in IMPORTED.items():
        candles = broker.fetch_candles(source, "1h", until - timedelta(days=200), until)
        closed = candles.filter(candles["ts"] + timedelta(hours=1) <= until)
        store.upsert(name, "1h", closed)


def _setup(home: Path, symbols: list[str]) -> None:
    from core.config import load_settings
    from core.instruments import CATALOGUE
    from flows.build_dataset import build_datasets
    from flows.collect_candles import collect_candles
    from flows.train_models import train_models
    from models.registry import Reviewer
    from models.tracking import setup

    collect_candles(symbols=[s for s in symbols if s in CATALOGUE], end=END - timedelta(hours=3))
    _import(home, END - timedelta(hours=3))
    build_datasets(symbols=symbols)
    train_models(symbols=symbols, trials=1, promote=False)
    settings = load_settings()
    reviewer = Reviewer(settings, setup(settings.home))
    for symbol in symbols:
        reviewer.promote_manually(symbol, "1h", "1", "bench: every symbol needs a champion")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


class _Arriving:
    """The store as candles arrive: each series' candles closed by ``now`` (slices of frames
    read once, no file I/O), so that every decision round scores a new candle."""

    def __init__(self, store: CandleStore) -> None:
        self.store, self.now_us = store, 0
        self._frames: dict[tuple[str, str], tuple[pl.DataFrame, np.ndarray]] = {}

    def read(self, symbol: str, timeframe: str, *_: object) -> pl.DataFrame:
        from core.timeframes import parse_timeframe
        from features.build import epoch_us

        key = (symbol, str(timeframe))
        if key not in self._frames:
            frame = self.store.read(symbol, timeframe)
            closes = epoch_us(frame["ts"]) + parse_timeframe(timeframe).seconds * 1_000_000
            self._frames[key] = (frame, closes)
        frame, closes = self._frames[key]
        return frame.head(int(np.searchsorted(closes, self.now_us, "right")))

    def at(self, now: datetime) -> None:
        self.now_us = int(now.timestamp() * 1_000_000)


def _decision(
    ctx: LiveContext,
    model: LiveModel,
    symbol: str,
    explain: bool,
    store: object | None = None,
    streams: FeatureStreams | None = None,
) -> None:
    """One decision as the live stage makes it (no database): score, signal, risk layer;
    ``explain``: the record's explanation too (TreeSHAP), as every stored record has;
    ``streams``: the newest candle's features from feature streams (the signal service's way)."""
    from models.risk import OrderRequest, bars_per_year, decide, risk_state
    from trading.scoring import score_last_candle, signal_of

    settings = ctx.settings
    scored, _ = score_last_candle(
        model, store or ctx.store, symbol, "1h", ctx.now, settings.signals, streams
    )
    state = risk_state(ctx.account_state(), settings.risk)
    signal = signal_of(scored, settings.signals, state)
    request = OrderRequest(symbol, 1, scored.close, scored.sigma, max(signal.multiplier, 1.0))
    decide(
        request,
        ctx.account_state(),
        settings.risk,
        model.labels,
        periods_per_year=bars_per_year("1h", symbol),
    )
    if explain:
        _ = scored.explanation


def _decision_latency(symbols: list[str], now: datetime | None = None) -> list[dict]:
    """Today's decision path and the compiled ones, interleaved in one loop (the machine's load
    falls on all alike), one new candle per symbol and round (the store as candles arrive):
    the same models scored by their libraries (``compiled=None``) with the explanation made at
    once, as before compiled inference; compiled on the tail's features; compiled on feature
    streams (``features.incremental``: one step per new candle, started before the rounds)."""
    from dataclasses import replace

    from core.config import load_settings
    from features.incremental import FeatureStreams
    from tasks.live import open_live_run

    settings = load_settings()
    if now is None:  # 5 min after the set-up's last collect (bench_api.py passes its own)
        now = END - timedelta(hours=2, minutes=55)
    ctx = open_live_run.fn(settings, symbols, "1h", now)
    fingerprint = []  # once per model load; made here so that decisions are timed without it
    models: dict[str, tuple[LiveModel, LiveModel]] = {}
    for symbol in symbols:
        model = ctx.cache.get(f"candleflow.{symbol}.1h", "champion")
        start = time.perf_counter()
        model.code_mismatch(ctx.store, symbol, "1h")
        fingerprint.append(time.perf_counter() - start)
        library = replace(model, compiled=None)
        library.code_mismatch(ctx.store, symbol, "1h")  # its own verdict, made once here
        models[symbol] = (library, model)
    rounds = -(-REPEATS // len(symbols))
    arriving, streams = _Arriving(ctx.store), FeatureStreams()
    first = now - timedelta(hours=rounds)  # the candles of the last ``rounds`` hours arrive
    arriving.at(first - timedelta(hours=1))
    starts = []
    for symbol in symbols:  # each stream starts on the tail the live path builds from
        begin = time.perf_counter()
        _decision(
            replace(ctx, now=first - timedelta(hours=1)),
            models[symbol][1],
            symbol,
            False,
            arriving,
            streams,
        )
        starts.append(time.perf_counter() - begin)
    today, compiled, streamed, explained = [], [], [], []
    for r in range(rounds):
        at = first + timedelta(hours=r)
        arriving.at(at)
        round_ctx = replace(ctx, now=at)
        for symbol in symbols:
            library, model = models[symbol]
            for samples, live, explain, feed in (
                (today, library, True, None),
                (compiled, model, False, None),
                (streamed, model, False, streams),
                (explained, model, True, None),
            ):
                start = time.perf_counter()
                _decision(round_ctx, live, symbol, explain, arriving, feed)
                samples.append(time.perf_counter() - start)
    assert streams.restarts == 0, "a stream started again: the candles did not continue"
    return [
        _ratio_row(
            "decision: feature streams, compiled families, vote, weight, risk (new candle)",
            streamed,
            today,
            target_p99_ms=2,
        ),
        _ratio_row(
            "decision: tail features, compiled families, vote, weight, risk", compiled, today
        ),
        _ratio_row(
            "decision + the record's explanation (TreeSHAP), tail, compiled", explained, today
        ),
        {
            "case": "today's path: tail features, libraries' scores + TreeSHAP, vote, weight, risk",
            "n": len(today),
            **_percentiles(today),
            "target_p99_ms": 20,
        },
        {
            "case": "per symbol and process: a feature stream starts (the tail, bar by bar)",
            **_stats(starts),
        },
        {
            "case": "per model load: code fingerprint check (3 reference rows rebuilt, scored)",
            "n": len(fingerprint),
            **_percentiles(fingerprint),
        },
        *_references(ctx, symbols, models),
        _chart_cost(ctx, symbols),
    ]


def _ratio_row(case: str, new: list[float], old: list[float], **extra: float) -> dict:
    """p50/p99 of ``new`` and how many times faster than ``old`` (same run) at each."""
    row, before = _percentiles(new), _percentiles(old)
    return {
        "case": case,
        "n": len(new),
        **row,
        "x_faster_p50": round(before["p50_ms"] / row["p50_ms"], 1),
        "x_faster_p99": round(before["p99_ms"] / row["p99_ms"], 1),
        **extra,
    }


def _references(
    ctx: LiveContext, symbols: list[str], models: dict[str, tuple[LiveModel, LiveModel]]
) -> list[dict]:
    """The parts: features of the newest candle (tail) and of the whole history; the families'
    probabilities of one row by their libraries (with TreeSHAP, as today) and compiled."""
    import sklearn

    from core.timeframes import parse_timeframe
    from features.build import compute_features
    from features.dataset import load_inputs, recent, tail_bars
    from models.zoo import probability_and_contributions

    tf = parse_timeframe("1h")
    tail, full, library, compiled = [], [], [], []
    for i in range(60):
        symbol = symbols[i % len(symbols)]
        model = models[symbol][1]
        inputs = load_inputs(ctx.store, symbol, "1h", model.spec)
        short = recent(inputs, tail_bars(model.spec, tf))
        for samples, source, last in ((tail, short, 1), (full, inputs, None)):
            start = time.perf_counter()
            compute_features(
                source.candles,
                model.spec,
                tf,
                symbol=symbol,
                higher=source.higher,
                correlated=source.correlated,
                last=last,
            )
            samples.append(time.perf_counter() - start)
        X = np.zeros((1, len(model.ensemble.feature_columns)))
        start = time.perf_counter()
        with sklearn.config_context(assume_finite=True):  # as scoring did
            for family in model.ensemble.models.values():
                probability_and_contributions(family, X)
        library.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.probabilities(X)
        compiled.append(time.perf_counter() - start)
    return [
        {"case": "reference: features of the newest candle (tail)", **_stats(tail)},
        {"case": "reference: features on the whole stored history", **_stats(full)},
        {
            "case": "reference: the 4 families by their libraries, with TreeSHAP (1 row)",
            **_stats(library),
        },
        _ratio_row("reference: the 4 families compiled (1 row)", compiled, library),
    ]


def _stats(samples: list[float]) -> dict:
    return {"n": len(samples), **_percentiles(samples)}


def _chart_cost(ctx: LiveContext, symbols: list[str]) -> dict:
    """One signal chart (the live flow draws one per symbol): 120 candles, SL/TP, a PNG."""
    from trading.charts import signal_chart

    samples = []
    for i in range(30):
        candles = ctx.store.read(symbols[i % len(symbols)], "1h").tail(120)
        close = float(candles["close"][-1])
        start = time.perf_counter()
        signal_chart(
            candles,
            symbol=symbols[i % len(symbols)],
            timeframe="1h",
            signal_ts=candles["ts"][-1],
            action="BUY",
            probability=0.61,
            tier="BUY",
            stop_loss=close * 0.99,
            take_profit=close * 1.02,
            path=ctx.settings.home / "bench-charts" / f"{i}.png",
        )
        samples.append(time.perf_counter() - start)
    return {"case": "reference: one signal chart (PNG)", "n": len(samples), **_percentiles(samples)}


def _flow_runs(home: Path, symbols: list[str]) -> list[dict]:
    from flows.live_signals import live_signals

    rows = []
    for label, now, charts in (
        ("models loading, charts", END - timedelta(hours=1, minutes=25), True),
        ("models cached, charts", END - timedelta(minutes=25), True),
        ("models cached, no charts", END + timedelta(minutes=35), False),
    ):
        _import(home, now)
        start = time.perf_counter()
        result = live_signals(symbols=symbols, now=now, charts=charts)
        seconds = time.perf_counter() - start
        statuses = sorted({r.status for r in result})
        rows.append(
            {
                "case": f"live flow, {len(symbols)} symbols, {label}",
                "seconds": round(seconds, 2),
                "statuses": ",".join(statuses),
                "scored_ok": sum(r.status == "OK" for r in result if not r.shadow),
                "orders": sum(1 for r in result if r.order_id),
                "target_s": 5.0,
            }
        )
    return rows


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-live-"))
    os.environ.update(
        {
            "CANDLEFLOW_HOME": str(home),
            "CANDLEFLOW_UNIVERSE__HISTORY_DAYS": "200",
            "CANDLEFLOW_TRAINING__FOLDS": "2",
            "CANDLEFLOW_SIGNALS__AVOID_REGIME_BELOW": "0",
            "PREFECT_HOME": str(home / "prefect"),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    from bench._common import save
    from core.instruments import CATALOGUE

    symbols = list(CATALOGUE) + list(IMPORTED)
    start = time.perf_counter()
    _setup(home, symbols)
    print(f"set-up {time.perf_counter() - start:.0f} s")
    rows = _decision_latency(symbols[:6]) + _flow_runs(home, symbols)
    save("live", rows)


if __name__ == "__main__":
    main()
