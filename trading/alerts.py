"""TradingView alerts received by the API's webhook: validated (known symbol, a known action, a
recent time), stored once each in the live database's ``alerts`` table (its ``key`` is a hash of
the alert's content and candle, under a unique constraint), and scored afterwards by their own
resolved hit rate, the way ``trading.shadow`` scores a model's BUY signals. An alert is never
executed: it is one more opinion about a symbol, the ``tradingview`` component of the signal
weight (:func:`alert_opinion`) when ``signals.weights.tradingview`` is > 0."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.errors import CandleflowError, InvalidSymbolError, UnknownTimeframeError
from core.feature_spec import LabelSpec
from core.store import CandleStore
from core.symbols import normalize_symbol
from core.timeframes import as_utc, parse_timeframe
from models.signal import AlertOpinion, Side
from trading.records import Json, alerts, json_safe
from trading.shadow import known_outcomes

SOURCE = "tradingview"
SECRET_FIELD = "passphrase"
FUTURE_TOLERANCE = timedelta(seconds=60)  # clocks differ a little
ACTIONS = {"buy": 1, "long": 1, "sell": -1, "short": -1, "flat": 0, "close": 0, "exit": 0}
SIDE_ACTION = {1: "buy", -1: "sell", 0: "flat"}
_TV_INTERVAL = re.compile(r"^(\d*)([SDWM]?)$")  # TradingView's {{interval}}: 60, 240, 1D, W
_TV_UNITS = {"": "m", "S": "s", "D": "d", "W": "w", "M": "mo"}
HISTORY_LIMIT = 5000  # a strategy's newest BUY alerts its hit rate is learned from
WARMUP_WINDOWS = 4  # σ's recursive estimate starts this many vol windows before the oldest alert
HIT_RATE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "strategy": pl.String(),
    "alerts": pl.Int64(),
    "buys": pl.Int64(),
    "resolved": pl.Int64(),
    "wins": pl.Int64(),
    "hit_rate": pl.Float64(),
}


class AlertError(CandleflowError):
    """An alert that cannot be accepted; ``field`` names what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Alert:
    """One validated alert (``payload``: as received, its passphrase left out)."""

    symbol: str
    timeframe: str
    ts: datetime
    candle_ts: datetime
    action: str
    side: int
    price: float | None
    strategy: str
    payload: dict[str, Json]

    @property
    def key(self) -> str:
        """Same content, same candle: same key (a TradingView retry is stored once)."""
        text = json.dumps(self.payload, sort_keys=True) + "|" + self.candle_ts.isoformat()
        return hashlib.sha256(text.encode()).hexdigest()


def tradingview_timeframe(value: object) -> str:
    """Our timeframe name of TradingView's ``{{interval}}`` (``60`` → 1h, ``1D`` → 1d) or of one
    of ours (``1h``)."""
    text = str(value).strip()
    match = _TV_INTERVAL.match(text.upper())
    if match and (match[1] or match[2]):
        count, unit = int(match[1] or 1), _TV_UNITS[match[2]]
        if unit == "m" and count % 60 == 0:
            count, unit = count // 60, "h"
        text = f"{count}{unit}"
    return parse_timeframe(text).name


def parse_alert(
    body: Mapping[str, object],
    symbols: set[str],
    default_timeframe: str,
    now: datetime,
    max_age: timedelta,
) -> Alert:
    """The alert of a webhook body, validated; :class:`AlertError` names the field at fault.
    ``symbols``: those candleflow knows (the universe and the stored ones)."""
    ticker = str(body.get("ticker") or "").strip()
    if not ticker:
        raise AlertError("ticker", "ticker: missing")
    try:  # "BINANCE:BTCUSD" → BTCUSD
        symbol = normalize_symbol(ticker.rsplit(":", 1)[-1])
    except InvalidSymbolError as exc:
        raise AlertError("ticker", f"ticker {ticker!r}: {exc}") from None
    if symbol not in symbols:
        raise AlertError("ticker", f"ticker {ticker!r}: {symbol} is not a symbol candleflow knows")
    action = str(body.get("action") or "").strip().lower()
    if action not in ACTIONS:
        raise AlertError("action", f"action {action!r}: allowed {', '.join(ACTIONS)}")
    try:
        timeframe = tradingview_timeframe(body.get("timeframe") or default_timeframe)
    except UnknownTimeframeError as exc:
        raise AlertError("timeframe", f"timeframe: {exc}") from None
    ts = _alert_time(body.get("time"), now, max_age)
    payload = {str(k): json_safe(v) for k, v in body.items() if k != SECRET_FIELD}
    return Alert(
        symbol,
        timeframe,
        ts,
        parse_timeframe(timeframe).floor(ts),
        SIDE_ACTION[ACTIONS[action]],
        ACTIONS[action],
        _price(body.get("price")),
        str(body.get("strategy") or SOURCE).strip()[:200],
        payload,
    )


def _alert_time(value: object, now: datetime, max_age: timedelta) -> datetime:
    """The alert's time (ISO text, or epoch seconds / milliseconds); absent: ``now``."""
    now = as_utc(now)
    if value is None or value == "":
        return now
    try:
        if isinstance(value, int | float) or str(value).strip().isdigit():
            number = float(value)  # type: ignore[arg-type]
            ts = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, now.tzinfo)
        else:
            ts = as_utc(datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")))
    except (ValueError, OverflowError, OSError):
        raise AlertError("time", f"time {value!r}: not an ISO time or epoch seconds") from None
    if ts > now + FUTURE_TOLERANCE:
        raise AlertError("time", f"time {ts:%Y-%m-%d %H:%M:%S} UTC is in the future")
    if now - ts > max_age:
        raise AlertError(
            "time",
            f"stale alert: time {ts:%Y-%m-%d %H:%M:%S} UTC is older than"
            f" {max_age.total_seconds():g} s",
        )
    return ts


def _price(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        price = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AlertError("price", f"price {value!r}: not a number") from None
    if not (math.isfinite(price) and price > 0):
        raise AlertError("price", f"price {value!r}: must be a finite number > 0")
    return price


def store_alert(engine: sa.Engine, alert: Alert, now: datetime) -> tuple[int, bool]:
    """Store the alert once; returns (row id, created) — False: the same alert came before."""
    values = {
        "key": alert.key,
        "source": SOURCE,
        "symbol": alert.symbol,
        "timeframe": alert.timeframe,
        "ts": alert.ts,
        "candle_ts": alert.candle_ts,
        "action": alert.action,
        "side": alert.side,
        "price": alert.price,
        "strategy": alert.strategy,
        "payload": alert.payload,
        "created_at": as_utc(now),
    }
    try:
        with engine.begin() as conn:
            return conn.execute(alerts.insert().values(**values)).inserted_primary_key[0], True
    except IntegrityError:
        with engine.connect() as conn:
            found = conn.execute(sa.select(alerts.c.id).where(alerts.c.key == alert.key)).first()
        if found is None:
            raise  # not the duplicate key: a real integrity problem
        return int(found[0]), False


def recent_alerts(
    engine: sa.Engine,
    since: datetime | None = None,
    symbol: str | None = None,
    limit: int = 100,
) -> list[dict[str, object]]:
    """The newest alerts first (``ts`` ≥ ``since``, of ``symbol``), at most ``limit``."""
    stmt = sa.select(alerts)
    if since is not None:
        stmt = stmt.where(alerts.c.ts >= as_utc(since))
    if symbol is not None:
        stmt = stmt.where(alerts.c.symbol == normalize_symbol(symbol))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(alerts.c.ts.desc(), alerts.c.id.desc()).limit(limit))
        return [dict(r) for r in rows.mappings()]


def hit_rates(
    rows: list[dict[str, object]],
    candles_by_key: dict[tuple[str, str], pl.DataFrame],
    labels: LabelSpec,
) -> pl.DataFrame:
    """Per symbol × timeframe × strategy: alerts, BUY alerts, those whose outcome the candles
    know (the labels' triple barrier from the alert's candle, as ``trading.shadow`` judges a
    BUY signal), wins (take-profit first) and ``hit_rate`` = wins / resolved (NaN: none)."""
    out = []
    for (symbol, timeframe), group in _by_unit(rows).items():
        candles = candles_by_key.get((symbol, timeframe))
        outcomes = {} if candles is None else _outcomes(candles, timeframe, labels)
        for strategy in sorted({str(r["strategy"]) for r in group}):
            mine = [r for r in group if r["strategy"] == strategy]
            buys = [r for r in mine if r["side"] == 1]
            stamps = [as_utc(r["candle_ts"]) for r in buys]  # type: ignore[arg-type]
            known = [outcomes[ts] for ts in stamps if ts in outcomes]
            wins = sum(1 for label in known if label == 1)
            rate = wins / len(known) if known else math.nan
            out.append((symbol, timeframe, strategy, len(mine), len(buys), len(known), wins, rate))
    return pl.DataFrame(out, schema=HIT_RATE_SCHEMA, orient="row")


def _by_unit(rows: list[dict[str, object]]) -> dict[tuple[str, str], list[dict[str, object]]]:
    units: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in rows:
        units.setdefault((str(r["symbol"]), str(r["timeframe"])), []).append(r)
    return units


def _outcomes(candles: pl.DataFrame, timeframe: str, labels: LabelSpec) -> dict[datetime, int]:
    known = known_outcomes(candles, timeframe, labels)
    return {as_utc(ts): int(label) for ts, label in known.iter_rows()}


def alert_opinion(
    engine: sa.Engine,
    store: CandleStore,
    symbol: str,
    timeframe: str,
    now: datetime,
    labels: LabelSpec,
    max_age_bars: int,
) -> AlertOpinion | None:
    """The newest alert of ``symbol`` × ``timeframe`` at most ``max_age_bars`` bars old at
    ``now`` (None: there is none), with its strategy's :func:`hit_rates` there: over its newest
    ``HISTORY_LIMIT`` BUY alerts up to ``now``, outcomes from the stored candles before ``now``
    (nothing later is seen: a decision replayed at ``now`` gets the same opinion)."""
    symbol, tf, now = normalize_symbol(symbol), parse_timeframe(timeframe), as_utc(now)
    unit = (alerts.c.symbol == symbol) & (alerts.c.timeframe == tf.name) & (alerts.c.ts <= now)
    fresh = unit & (alerts.c.ts >= now - max_age_bars * tf.duration)
    newest_first = (alerts.c.ts.desc(), alerts.c.id.desc())
    with engine.connect() as conn:
        newest = conn.execute(
            sa.select(alerts.c.side, alerts.c.strategy, alerts.c.ts)
            .where(fresh)
            .order_by(*newest_first)
            .limit(1)
        ).first()
        if newest is None:
            return None
        buys = conn.execute(
            sa.select(
                alerts.c.symbol,
                alerts.c.timeframe,
                alerts.c.strategy,
                alerts.c.side,
                alerts.c.candle_ts,
            )
            .where(unit & (alerts.c.strategy == newest.strategy) & (alerts.c.side == 1))
            .order_by(*newest_first)
            .limit(HISTORY_LIMIT)
        )
        rows = [dict(r) for r in buys.mappings()]
    hit_rate, resolved = math.nan, 0
    if rows:
        oldest = min(as_utc(r["candle_ts"]) for r in rows)
        start = oldest - WARMUP_WINDOWS * labels.vol_window * tf.duration
        candles = store.read(symbol, tf, start=start, end=now)
        rate = hit_rates(rows, {(symbol, tf.name): candles}, labels).row(0, named=True)
        hit_rate, resolved = float(rate["hit_rate"]), int(rate["resolved"])
    return AlertOpinion(
        Side(int(newest.side)), hit_rate, resolved, str(newest.strategy), as_utc(newest.ts)
    )
