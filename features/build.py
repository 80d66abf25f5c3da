"""Features of a symbol × timeframe from its candles, a higher timeframe's and correlated symbols':
one function for training and for the newest candle in live use.

No look-ahead: a row at bar t (open time ``ts``, closed at ``ts + tf``) uses candles closed by then.
A higher timeframe's or another symbol's candle becomes visible when *it* has closed: the join is
as-of on close times, backward (the latest closed one, however old: during a market's weekend
closure its last values stay visible, as they would be to a trader). Nothing is ever filled
backward; warm-up rows stay NaN here and are dropped (and counted) when a dataset is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from core.errors import CandleflowError
from core.feature_spec import CorrelatedSpec, FeatureSpec
from core.instruments import instrument
from core.symbols import normalize_symbol
from core.timeframes import Timeframe, parse_timeframe
from features.families import family_columns, lagged_log_return
from features.indicators import ATR_PERIOD, Inputs, indicator_columns, raw_function

logger = logging.getLogger(__name__)

Block = pl.DataFrame | dict[str, Any]  # feature columns: a frame, or arrays / a series by name

SMALL_GATHER = 64  # rows of an as-of join gathered with numpy (a frame of the block costs more)


class FeatureError(CandleflowError):
    """Features could not be computed (e.g. an indicator produced ±inf)."""


@dataclass(frozen=True)
class Features:
    frame: pl.DataFrame  # ``ts`` + feature columns, one row per candle (NaN during warm-up)
    columns: list[str]
    spec: FeatureSpec  # the effective spec: what was actually built
    skipped: list[str] = field(default_factory=list)  # what the spec asked for and was not built


def _checked(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """±inf is an error, never a feature value (NaN is warm-up and is dropped later)."""
    infinite = [name for name, values in columns.items() if np.isinf(values).any()]
    if infinite:
        raise FeatureError(f"feature column(s) {infinite} hold ±inf values")
    return columns


def epoch_us(ts: pl.Series) -> np.ndarray:
    """Microseconds since the epoch of a datetime series, through numpy (polars' ``dt.epoch``
    runs a query per call: ~0.1 ms, several per live decision)."""
    return ts.to_numpy().astype("datetime64[us]").view(np.int64)


def candle_inputs(candles: pl.DataFrame) -> Inputs:
    return {
        c: candles[c].to_numpy().astype(np.float64, copy=False)
        for c in ("open", "high", "low", "close", "volume")
    }


def _pool() -> ThreadPoolExecutor:
    """Threads for the independent parts of a feature build: TA-Lib and numpy release the GIL,
    so a build uses every core (measured: 2 threads ≈ 1.85× one on 2 cores)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="candleflow-features"
        )
    return _POOL


_POOL: ThreadPoolExecutor | None = None


class _Inline:
    """Runs a job at once in the calling thread (a finished future): for small builds — the
    newest rows of live scoring — the pool's hand-offs cost more than the jobs."""

    @staticmethod
    def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # re-raised by result(), as from the pool
            future.set_exception(exc)
        return future


def _block_jobs(
    candles: pl.DataFrame, spec: FeatureSpec, with_calendar: bool, inline: bool = False
) -> list[Future[dict[str, np.ndarray]]]:
    """Indicators and families of one candle series, as jobs on the pool (columns come in job
    order: the indicators as listed, then the families)."""
    inputs = candle_inputs(candles)
    atr = raw_function("ATR")(inputs["high"], inputs["low"], inputs["close"], timeperiod=ATR_PERIOD)
    seconds = epoch_us(candles["ts"]) // 1_000_000 if with_calendar else None
    # Inline (live) builds check the rows they return instead of whole series: see the caller.
    pool, check = (_Inline, _call) if inline else (_pool(), _checked_call)
    jobs = [pool.submit(check, indicator_columns, [item], inputs, atr) for item in spec.indicators]
    jobs.append(pool.submit(check, family_columns, spec.families, inputs, atr, seconds))
    return jobs


def _call(fn: Callable[..., dict[str, np.ndarray]], *args: Any) -> dict[str, np.ndarray]:
    return fn(*args)


def _checked_call(fn: Callable[..., dict[str, np.ndarray]], *args: Any) -> dict[str, np.ndarray]:
    return _checked(fn(*args))


def _gather(jobs: list[Future[dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for job in jobs:
        columns.update(job.result())
    return columns


def resample(candles: pl.DataFrame, timeframe: Timeframe) -> pl.DataFrame:
    """Candles aggregated to ``timeframe`` (epoch-aligned buckets). The newest bucket may be
    incomplete; it only becomes visible at its close, which lies after the data."""
    micros = epoch_us(candles["ts"])
    bucket = micros // (timeframe.seconds * 1_000_000)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], bucket.size] - 1
    inputs = candle_inputs(candles)
    return pl.DataFrame(
        {
            "ts": pl.Series(bucket[starts] * timeframe.seconds * 1_000_000).cast(
                pl.Datetime("us", "UTC")
            ),
            "open": inputs["open"][starts],
            "high": np.maximum.reduceat(inputs["high"], starts),
            "low": np.minimum.reduceat(inputs["low"], starts),
            "close": inputs["close"][ends],
            "volume": np.add.reduceat(inputs["volume"], starts),
        }
    )


def _as_of(
    ts: pl.Series,
    base: Timeframe,
    other_ts: pl.Series,
    other_tf: Timeframe,
    columns: dict[str, np.ndarray],
    prefix: str,
) -> Block:
    """``columns`` of another series (timestamps ``other_ts``, sorted) as known at each base bar's
    close: the newest of its candles closed by then; NaN before its first."""
    base_close = epoch_us(ts) + base.seconds * 1_000_000
    other_close = epoch_us(other_ts) + other_tf.seconds * 1_000_000
    index = np.searchsorted(other_close, base_close, side="right") - 1
    unknown = int(np.searchsorted(index, 0))  # base times are sorted: a prefix knows nothing yet
    if index.size <= SMALL_GATHER:  # a few rows (live scoring): columns, no frame of the block
        rows = np.maximum(index, 0)
        gathered = {f"{prefix}{name}": values[rows] for name, values in columns.items()}
        for values in gathered.values():
            values[:unknown] = np.nan
        return gathered
    block = pl.DataFrame({f"{prefix}{name}": values for name, values in columns.items()})
    known = block[pl.Series(index[unknown:])]  # polars' parallel gather: ~3× numpy's here
    head = pl.DataFrame({c: np.full(unknown, np.nan) for c in block.columns})
    return pl.concat([head, known], how="vertical")


def _frame(blocks: list[Block]) -> pl.DataFrame:
    """The blocks side by side, in order; neighbouring column blocks make one frame."""
    frames: list[pl.DataFrame] = []
    pending: dict[str, Any] = {}
    for block in blocks:
        if isinstance(block, pl.DataFrame):
            if pending:
                frames.append(_columns_frame(pending))
                pending = {}
            frames.append(block)
        else:
            pending.update(block)
    if pending:
        frames.append(_columns_frame(pending))
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="horizontal")


def _columns_frame(columns: dict[str, Any]) -> pl.DataFrame:
    """A frame of named columns. A few rows of float64 arrays (live scoring) are built as one
    transposed block: polars builds a frame in ~5 µs a column, ~0.5 ms for a feature row, and a
    transposed block in ~0.08 ms — the same frame."""
    series = {n: v for n, v in columns.items() if isinstance(v, pl.Series)}
    arrays = {n: v for n, v in columns.items() if n not in series}
    small = all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in arrays.values())
    rows = {len(v) for v in columns.values()}
    if not (small and len(rows) == 1 and rows.pop() <= SMALL_GATHER and len(arrays) > 1):
        return pl.DataFrame(columns)
    block = np.ascontiguousarray(np.column_stack(list(arrays.values())).T)
    frame = pl.from_numpy(block, orient="row").transpose(column_names=list(arrays))
    for name, values in series.items():  # e.g. ts, in its place
        frame.insert_column(list(columns).index(name), values.alias(name))
    return frame


def _higher_sources(
    candles: pl.DataFrame,
    spec: FeatureSpec,
    tf: Timeframe,
    higher: Mapping[str, pl.DataFrame | None],
) -> tuple[list[tuple[Timeframe, pl.DataFrame]], list[str]]:
    """The candles of each higher timeframe the spec asks for, and what was skipped."""
    sources, skipped = [], []
    for name in spec.higher_timeframes:
        htf = parse_timeframe(name)
        if htf.duration <= tf.duration or htf.seconds % tf.seconds:
            skipped.append(f"higher timeframe {name}: not a multiple above {tf.name}")
            continue
        source = higher.get(name)
        if source is None or source.is_empty():
            source = resample(candles, htf)
        sources.append((htf, source))
    return sources, skipped


def _tails(columns: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The last ``rows`` values of each column (all of them when ``rows`` is their length)."""
    return {name: values[values.size - rows :] for name, values in columns.items()}


def _correlated(
    symbol: str,
    ts: pl.Series,
    spec: CorrelatedSpec,
    tf: Timeframe,
    others: Mapping[str, pl.DataFrame | None],
) -> tuple[list[Block], list[str], list[str]]:
    frames: list[Block] = []
    used, skipped = [], []
    for other in correlated_symbols(symbol, spec):
        data = others.get(other)
        if data is None or data.is_empty():
            skipped.append(f"correlated symbol {other}: no {tf.name} candles in the store")
            continue
        log_close = np.log(data["close"].to_numpy().astype(np.float64))
        columns = {f"ret_{lag}": lagged_log_return(log_close, lag) for lag in spec.returns}
        columns[f"vol_{spec.volatility}"] = raw_function("STDDEV")(
            lagged_log_return(log_close, 1), spec.volatility, 1
        )
        frames.append(_as_of(ts, tf, data["ts"], tf, _checked(columns), f"x{other}_"))
        used.append(other)
    return frames, used, skipped


def correlated_symbols(symbol: str, spec: CorrelatedSpec) -> list[str]:
    """The symbols the spec correlates ``symbol`` with (never itself)."""
    symbol = normalize_symbol(symbol)
    chosen = spec.symbols.get(symbol)
    if chosen is None:
        chosen = spec.by_asset_class.get(instrument(symbol).asset_class.value, [])
    return [s for s in (normalize_symbol(c) for c in chosen) if s != symbol]


def compute_features(
    candles: pl.DataFrame,
    spec: FeatureSpec,
    timeframe: str | Timeframe,
    *,
    symbol: str,
    higher: Mapping[str, pl.DataFrame | None] | None = None,
    correlated: Mapping[str, pl.DataFrame | None] | None = None,
    last: int | None = None,
) -> Features:
    """Features for every candle of ``candles`` (sorted by ``ts``). ``higher`` maps a higher
    timeframe to its stored candles (resampled from ``candles`` when absent); ``correlated`` maps
    a symbol to its candles of the same timeframe (skipped, and named, when absent). ``last``:
    only the newest ``last`` rows in the frame (live scoring): every series is still computed
    over all of ``candles``, so they equal the same rows of the whole frame."""
    tf = parse_timeframe(timeframe)
    ts = candles["ts"] if last is None else candles["ts"].tail(last)
    try:
        # Every block's indicators and families are jobs on the pool, submitted at once so the
        # cores stay busy; a block's as-of join follows when the block is complete.
        # Higher timeframes first: their smaller blocks finish early, and their as-of joins here
        # overlap with this timeframe's jobs still running.
        sources, skipped = _higher_sources(candles, spec, tf, higher or {})
        inline = last is not None
        htf_jobs = [
            (htf, source, _block_jobs(source, spec, with_calendar=False, inline=inline))
            for htf, source in sources
        ]
        base_jobs = _block_jobs(candles, spec, with_calendar=True, inline=inline)
        htf_blocks = [
            _as_of(ts, tf, source["ts"], htf, _gather(jobs), f"tf{htf.name}_")
            for htf, source, jobs in htf_jobs
        ]
        base = {"ts": ts, **_tails(_gather(base_jobs), ts.len())}
        built = [htf.name for htf, _ in sources]
        corr_blocks, used, corr_skipped = _correlated(
            symbol, ts, spec.correlated, tf, correlated or {}
        )
    except FeatureError as exc:
        raise FeatureError(f"{symbol} {tf}: {exc}") from None
    blocks = [base, *htf_blocks, *corr_blocks]
    if inline:  # the rows returned are checked (the series behind them were not)
        try:
            for block in blocks:
                if isinstance(block, pl.DataFrame):  # beyond SMALL_GATHER rows
                    block = {c: block[c].to_numpy() for c in block.columns}
                _checked({n: v for n, v in block.items() if n != "ts"})
        except FeatureError as exc:
            raise FeatureError(f"{symbol} {tf}: {exc}") from None
    frame = _frame(blocks)
    effective = spec.model_copy(
        update={
            "higher_timeframes": built,
            "correlated": spec.correlated.model_copy(
                update={"by_asset_class": {}, "symbols": {normalize_symbol(symbol): used}}
            ),
        }
    )
    return Features(frame, frame.columns[1:], effective, skipped + corr_skipped)
