"""The simulated market: determinism, range/timeframe consistency, sessions, the forming candle,
realism statistics, and the planted edge (present at the default strength, absent at 0)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import brokers.simulated as simulated
from brokers.base import MarketDataBroker
from brokers.registry import create_broker
from brokers.simulated import EPOCH, REFERENCE, SimulatedBroker
from core.candles import CANDLE_SCHEMA
from core.config import load_settings
from core.errors import UnknownSymbolError
from core.instruments import CATALOGUE
from core.timeframes import TIMEFRAMES

NOW = datetime(2026, 6, 1, 12, 34, tzinfo=UTC)  # a Monday, mid-hour
HOUR = timedelta(hours=1)


def make(seed: int = 7, edge: float = 0.12, now: datetime = NOW) -> SimulatedBroker:
    return SimulatedBroker(seed=seed, edge=edge, now=lambda: now)


def closes(symbol: str, seed: int, edge: float, days: int) -> np.ndarray:
    frame = make(seed, edge).fetch_candles(symbol, "1h", NOW - timedelta(days=days), NOW)
    return frame["close"].to_numpy()[:-1]  # drop the forming candle


def simple_model_auc(close: np.ndarray, horizon: int = 12) -> float:
    """Logistic regression on vol-normalised past returns over 1/3/6/12/24 candles predicting the
    sign of the next ``horizon`` candles' return; time-ordered 70/30 split; out-of-sample AUC."""
    log_close = np.log(close)
    returns = np.diff(log_close, prepend=np.nan)
    vol = pl.Series(returns).rolling_std(120).to_numpy()
    n = len(close)
    features = np.full((n, 5), np.nan)
    for column, lag in enumerate((1, 3, 6, 12, 24)):
        features[lag:, column] = (log_close[lag:] - log_close[:-lag]) / (vol[lag:] * math.sqrt(lag))
    target = np.full(n, np.nan)
    target[:-horizon] = log_close[horizon:] - log_close[:-horizon]
    usable = np.isfinite(features).all(axis=1) & np.isfinite(target)
    x, y = features[usable], target[usable] > 0
    cut = int(0.7 * len(y))
    model = LogisticRegression().fit(x[:cut], y[:cut])
    return float(roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1]))


def autocorrelation(values: np.ndarray, lag: int) -> float:
    centred = values - values.mean()
    return float(np.sum(centred[lag:] * centred[:-lag]) / np.sum(centred**2))


# --- determinism and consistency -------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    start, end = NOW - timedelta(days=20), NOW
    first = make(seed=7).fetch_candles("EURUSD", "1h", start, end)
    again = make(seed=7).fetch_candles("eur/usd", "1h", start, end)
    other = make(seed=8).fetch_candles("EURUSD", "1h", start, end)
    assert first.height > 300
    assert first.equals(again)
    assert first["ts"].equals(other["ts"])
    assert not np.allclose(first["close"].to_numpy(), other["close"].to_numpy())


def test_symbols_and_edges_give_different_paths() -> None:
    start, end = NOW - timedelta(days=10), NOW
    btc = make().fetch_candles("BTCUSD", "1h", start, end)["close"].to_numpy()
    eth = make().fetch_candles("ETHUSD", "1h", start, end)["close"].to_numpy()
    no_edge = make(edge=0.0).fetch_candles("BTCUSD", "1h", start, end)["close"].to_numpy()
    assert np.corrcoef(np.diff(np.log(btc)), np.diff(np.log(eth)))[0, 1] < 0.5
    assert not np.allclose(btc, no_edge)


@pytest.mark.parametrize(
    ("symbol", "timeframe"),
    [("EURUSD", "1h"), ("BTCUSD", "15m"), ("US500", "4h"), ("XAUUSD", "1d")],
)
def test_a_range_equals_its_pieces_exactly(symbol: str, timeframe: str) -> None:
    broker, tf = make(), TIMEFRAMES[timeframe]
    start, end = NOW - timedelta(days=90), NOW
    mid = tf.floor(NOW - timedelta(days=41, hours=5))
    whole = broker.fetch_candles(symbol, timeframe, start, end)
    pieces = pl.concat(
        [
            broker.fetch_candles(symbol, timeframe, start, mid),
            broker.fetch_candles(symbol, timeframe, mid, end),
        ]
    )
    assert whole.equals(pieces)
    lo, hi = NOW - timedelta(days=60, hours=3), NOW - timedelta(days=50, hours=7)
    inner = broker.fetch_candles(symbol, timeframe, lo, hi)
    assert inner.height > 0
    assert inner.equals(whole.filter((pl.col("ts") >= tf.floor(lo)) & (pl.col("ts") < hi)))


def test_candles_do_not_depend_on_the_cached_horizon_or_the_clock() -> None:
    start, end = datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 3, 8, tzinfo=UTC)
    simulated._PATHS.clear()
    early = make(now=datetime(2018, 3, 20, tzinfo=UTC)).fetch_candles("GBPUSD", "5m", start, end)
    short = len(simulated._PATHS[(7, 0.12, "GBPUSD")].regime)
    late = make(now=NOW).fetch_candles("GBPUSD", "1h", start, NOW)  # grows the cached path
    assert len(simulated._PATHS[(7, 0.12, "GBPUSD")].regime) > short
    again = make(now=NOW).fetch_candles("GBPUSD", "5m", start, end)  # from the longer path
    assert early.equals(again)
    hourly = late.filter(pl.col("ts") < end)
    assert hourly.equals(aggregate(early, "1h"))


def aggregate(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    return (
        frame.group_by_dynamic("ts", every=every)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(list(CANDLE_SCHEMA))
    )


@pytest.mark.parametrize("symbol", ["EURUSD", "BTCUSD", "US100"])
def test_timeframes_are_aggregates_of_each_other(symbol: str) -> None:
    broker = make()
    start, end = datetime(2025, 2, 3, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)
    hourly = broker.fetch_candles(symbol, "1h", start, end)
    assert aggregate(hourly, "4h").equals(broker.fetch_candles(symbol, "4h", start, end))
    assert aggregate(hourly, "1d").equals(broker.fetch_candles(symbol, "1d", start, end))
    day = start + timedelta(days=4)
    minutes = broker.fetch_candles(symbol, "1m", day, day + timedelta(days=1))
    half_hours = broker.fetch_candles(symbol, "30m", day, day + timedelta(days=1))
    assert half_hours.height >= 2 * 22 and aggregate(minutes, "30m").equals(half_hours)
    assert aggregate(minutes, "1h").equals(
        hourly.filter(pl.col("ts").is_between(day, day + timedelta(days=1), closed="left"))
    )


# --- validity --------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", sorted(CATALOGUE))
def test_candles_are_valid_for_every_catalogue_symbol(symbol: str) -> None:
    frame = make().fetch_candles(symbol, "1h", NOW - timedelta(days=45), NOW)
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame.height > 500
    o, h, lo, c = (frame[col].to_numpy() for col in ("open", "high", "low", "close"))
    assert (lo > 0).all()
    assert (lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
    assert (lo < h).all()
    assert (frame["volume"].to_numpy()[:-1] > 0).all()
    ts = frame["ts"]
    assert ts.is_sorted() and ts.n_unique() == frame.height
    assert (ts.dt.minute() == 0).all() and (ts.dt.second() == 0).all()


def test_one_minute_candles_open_at_the_previous_close_except_across_the_weekend() -> None:
    frame = make().fetch_candles(
        "EURUSD", "1m", datetime(2025, 3, 7, 20, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)
    )
    step = frame["ts"].diff().dt.total_minutes().to_numpy()[1:]
    opens, prev_close = frame["open"].to_numpy()[1:], frame["close"].to_numpy()[:-1]
    assert (opens[step == 1] == prev_close[step == 1]).all()
    assert step.max() == 48 * 60 + 1  # Friday 21:59 → Sunday 22:00
    assert (opens[step > 1] != prev_close[step > 1]).all()  # the weekend gap


def test_history_starts_at_the_epoch() -> None:
    frame = make().fetch_candles(
        "BTCUSD", "1d", datetime(2015, 1, 1, tzinfo=UTC), datetime(2018, 1, 5, tzinfo=UTC)
    )
    assert frame["ts"].to_list() == [EPOCH + timedelta(days=d) for d in range(4)]


# --- sessions --------------------------------------------------------------------------------


def test_fx_has_no_weekend_candles_and_opens_sunday_22_utc() -> None:
    frame = make().fetch_candles("EURUSD", "1h", NOW - timedelta(days=56), NOW)
    weekday, hour = frame["ts"].dt.weekday().to_numpy(), frame["ts"].dt.hour().to_numpy()
    assert not (weekday == 6).any()  # polars: Monday = 1 … Sunday = 7
    assert not ((weekday == 7) & (hour < 22)).any()
    assert not ((weekday == 5) & (hour >= 22)).any()
    assert ((weekday == 7) & (hour == 22)).sum() == 8
    gaps = frame["ts"].diff().drop_nulls()
    assert (gaps == timedelta(hours=49)).sum() == 8 and set(gaps.unique()) == {HOUR, 49 * HOUR}


def test_crypto_trades_every_hour() -> None:
    start = NOW - timedelta(days=56)
    frame = make().fetch_candles("BTCUSD", "1h", start, NOW)
    expected = int((NOW - start) / HOUR) + 1  # hours since start, plus the forming one
    assert frame.height == expected
    assert (frame["ts"].diff().drop_nulls() == HOUR).all()


# --- the clock -------------------------------------------------------------------------------


def test_the_forming_candle_grows_while_closed_candles_stay() -> None:
    start = NOW - timedelta(days=2)
    early = make(now=NOW).fetch_candles("BTCUSD", "1h", start, NOW + timedelta(days=3))
    later = make(now=NOW + timedelta(minutes=20)).fetch_candles("BTCUSD", "1h", start, NOW)
    final = make(now=NOW + HOUR).fetch_candles("BTCUSD", "1h", start, NOW + HOUR)
    assert early["ts"][-1] == later["ts"][-1] == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert early[:-1].equals(later[:-1]) and early[:-1].equals(final[:-2])
    forming, grown, closed = early[-1], later[-1], final[-2]
    assert forming["open"].item() == closed["open"].item()
    assert forming["volume"].item() < grown["volume"].item() < closed["volume"].item()
    assert forming["close"].item() != grown["close"].item()
    assert forming["high"].item() <= grown["high"].item() <= closed["high"].item()
    assert forming["low"].item() >= grown["low"].item() >= closed["low"].item()


def test_the_current_minute_reveals_only_its_open() -> None:
    start = NOW - 3 * HOUR
    at_minute = make(now=NOW).fetch_candles("XAUUSD", "1m", start, NOW + HOUR)
    inside = make(now=NOW + timedelta(seconds=30)).fetch_candles("XAUUSD", "1m", start, NOW + HOUR)
    assert inside[:-1].equals(at_minute)
    current = inside.row(-1, named=True)
    assert current["ts"] == NOW and current["volume"] == 0.0
    assert current["open"] == current["high"] == current["low"] == current["close"]
    assert current["open"] == at_minute["close"][-1]
    hours = [
        make(now=t).fetch_candles("XAUUSD", "1h", start, NOW + HOUR)
        for t in (NOW, NOW + timedelta(seconds=30))
    ]
    assert hours[0].equals(hours[1])


def test_at_an_exact_boundary_the_last_candle_is_complete() -> None:
    boundary = datetime(2026, 6, 1, 13, tzinfo=UTC)
    at_boundary = make(now=boundary).fetch_candles("ETHUSD", "1h", boundary - 5 * HOUR, boundary)
    afterwards = make(now=NOW + HOUR).fetch_candles("ETHUSD", "1h", boundary - 5 * HOUR, boundary)
    assert at_boundary.equals(afterwards)
    future = make(now=boundary).fetch_candles("ETHUSD", "1h", boundary, boundary + 10 * HOUR)
    assert future.is_empty()


# --- the edge --------------------------------------------------------------------------------

NULL_SERIES = [("BTCUSD", 1), ("ETHUSD", 2), ("SOLUSD", 3), ("BTCUSD", 4)]


def robust_autocorrelation_z(returns: np.ndarray, lags: int = 24) -> np.ndarray:
    """ρ_k / se_k for k = 1…lags with a heteroskedasticity-robust se: with volatility clustering
    the plain 1/sqrt(n) understates the spread of ρ_k under the null (about 1.6× here)."""
    centred = returns - returns.mean()
    z = []
    for lag in range(1, lags + 1):
        products = centred[lag:] * centred[:-lag]
        z.append(products.sum() / math.sqrt(np.sum(products**2)))
    return np.array(z)


@pytest.mark.parametrize(("edge", "dependent"), [(0.0, False), (0.12, True)])
def test_returns_are_uncorrelated_only_without_edge(edge: float, dependent: bool) -> None:
    chi2_999_df24 = 51.18
    for symbol, seed in NULL_SERIES:
        returns = np.diff(np.log(closes(symbol, seed, edge, days=3 * 365)))
        z = robust_autocorrelation_z(returns)
        lag1 = autocorrelation(returns, 1)
        if dependent:
            assert np.sum(z**2) > 3 * chi2_999_df24 and lag1 > 3 / math.sqrt(len(returns))
        else:
            assert np.sum(z**2) < chi2_999_df24, (symbol, seed, z.round(2))
            assert np.abs(z).max() < 4.0 and abs(lag1) < 0.03


@pytest.mark.parametrize("edge", [0.0, 0.12])
def test_standardized_returns_are_iid_noise_exactly_when_edge_is_zero(edge: float) -> None:
    """With edge 0, r_H / σ_H is the shock ε_H itself: zero mean, no autocorrelation at any lag
    (plain 1/sqrt(n) bounds are valid here, the series being i.i.d. under the null)."""
    days = 2900
    z = np.concatenate(
        [
            np.diff(path.log_price[: days * 24 + 1]) / path.sigma[: days * 24]
            for path in (
                simulated._hourly_path(seed, edge, sym, days)
                for sym, seed in [("BTCUSD", 1), ("EURUSD", 2), ("US500", 3)]
            )
        ]
    )
    bound = 4 / math.sqrt(len(z))
    rho = np.array([autocorrelation(z, lag) for lag in range(1, 25)])
    if edge == 0.0:
        assert abs(z.mean()) < bound and abs(z.std() - 1) < 0.02  # driftless, unit variance
        assert np.abs(rho).max() < bound and len(z) * np.sum(rho**2) < 51.18  # χ²(24) 99.9 %
    else:
        assert rho[0] > 5 * bound


def test_a_simple_model_finds_the_edge_and_nothing_without_it() -> None:
    null = [simple_model_auc(closes(sym, seed, 0.0, days=3 * 365)) for sym, seed in NULL_SERIES]
    edge = [simple_model_auc(closes(sym, seed, 0.12, days=3 * 365)) for sym, seed in NULL_SERIES]
    assert abs(np.mean(null) - 0.5) < 0.03, null
    assert np.mean(edge) > 0.53, edge
    assert np.mean(edge) < 0.65, edge  # weak, not absurd


# --- realism ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "annual_vol"), [("EURUSD", 0.07), ("BTCUSD", 0.60), ("US500", 0.16)]
)
def test_returns_look_like_a_market(symbol: str, annual_vol: float) -> None:
    frame = make().fetch_candles(symbol, "1h", NOW - timedelta(days=730), NOW)[:-1]
    returns = np.diff(np.log(frame["close"].to_numpy()))
    assert float(pl.Series(returns).kurtosis()) > 5.0  # fat tails (excess kurtosis; normal: 0)
    assert autocorrelation(np.abs(returns), 1) > 0.05  # volatility clusters
    per_year = len(returns) / 2
    assert 0.6 * annual_vol < returns.std() * math.sqrt(per_year) < 1.6 * annual_vol
    spread = np.log(frame["high"].to_numpy() / frame["low"].to_numpy())[1:]
    assert np.corrcoef(spread, frame["volume"].to_numpy()[1:])[0, 1] > 0.3


@pytest.mark.parametrize("symbol", sorted(CATALOGUE))
def test_prices_sit_near_the_catalogue_level(symbol: str) -> None:
    frame = make().fetch_candles(
        symbol, "1d", REFERENCE - timedelta(days=180), REFERENCE + timedelta(days=180)
    )
    asset = simulated._ASSETS[symbol]
    at_reference = frame.filter(pl.col("ts") == REFERENCE)  # a Monday: every market is open
    assert at_reference["open"].item() == pytest.approx(asset.price, rel=1e-9)
    band = math.exp(3.5 * asset.annual_vol * math.sqrt(0.5))  # 3.5 sd over half a year
    ratio = frame["close"].to_numpy() / asset.price
    assert 1 / band < ratio.min() and ratio.max() < band


def test_regimes_switch_and_differ_in_volatility() -> None:
    path = simulated._hourly_path(7, 0.12, "BTCUSD", 3000)
    regime = path.regime[:3000]
    switches = np.count_nonzero(np.diff(regime))
    assert 100 < switches < 1000 and set(np.unique(regime)) == {0, 1, 2}
    daily_sigma = path.sigma[: 3000 * 24].reshape(-1, 24).mean(axis=1)
    by_regime = [np.median(daily_sigma[regime == r]) for r in range(3)]
    assert by_regime[1] < by_regime[0] < by_regime[2]  # range calm, volatile wild


# --- the broker contract ---------------------------------------------------------------------


def test_unknown_symbols_are_refused_with_the_list() -> None:
    broker = make()
    assert broker.check_symbol("eur/usd") == "EURUSD"
    with pytest.raises(UnknownSymbolError, match=r"available: .*BTCUSD.*EURUSD"):
        broker.check_symbol("DOGEUSD")
    with pytest.raises(UnknownSymbolError):
        broker.fetch_candles("XYZ", "1h", NOW - HOUR, NOW)


def test_conforms_to_the_protocol_and_is_built_from_settings() -> None:
    broker = make()
    assert isinstance(broker, MarketDataBroker)
    assert broker.name == "simulated"
    caps = broker.capabilities
    assert set(caps.timeframes) == {"1m", "5m", "15m", "30m", "1h", "4h", "1d"}
    assert not caps.needs_credentials and not caps.can_trade and caps.history_start == EPOCH
    settings = load_settings(simulated={"seed": 99, "edge": 0.0})
    built = create_broker(settings)
    assert isinstance(built, SimulatedBroker) and (built.seed, built.edge) == (99, 0.0)
    with pytest.raises(ValueError, match="edge"):
        SimulatedBroker(edge=1.5)


def test_every_catalogue_symbol_has_market_parameters() -> None:
    assert set(simulated._ASSETS) == set(CATALOGUE)
