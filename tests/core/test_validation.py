from datetime import timedelta

import polars as pl
import pytest

from core.timeframes import parse_timeframe
from core.validation import Plausibility, plausibility_for, validate_candles
from tests.conftest import T0, make_candles

H1 = parse_timeframe("1h")
NOW = T0 + timedelta(days=30)
PRICES = ["open", "high", "low", "close"]


def _with(frame: pl.DataFrame, row: int, **values: object) -> pl.DataFrame:
    out = frame.to_dicts()
    out[row].update(values)
    return pl.DataFrame(out, schema=frame.schema)


def test_clean_candles_pass_untouched() -> None:
    frame = make_candles(T0, 50)
    result = validate_candles(frame, H1, NOW)
    assert result.bad.is_empty()
    assert result.good.equals(frame)
    assert result.duplicates == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"close": float("nan")}, "missing close"),
        ({"open": None}, "missing open"),
        ({"high": float("inf")}, "non-finite high"),
        ({"low": -1.0}, "non-positive price"),
        ({"open": 0.0}, "non-positive price"),
        ({"high": 1.0}, "high below open/close"),
        ({"low": 1.2}, "low above open/close"),
        ({"volume": -5.0}, "negative volume"),
        ({"ts": T0 + timedelta(hours=3, minutes=30)}, "timestamp not aligned to 1h"),
        ({"ts": NOW + timedelta(days=2)}, "timestamp in the future"),
        ({"ts": None}, "missing or unparsable timestamp"),
    ],
)
def test_each_rule_quarantines_with_its_reason(change: dict, reason: str) -> None:
    frame = _with(make_candles(T0, 10), 3, **change)
    result = validate_candles(frame, H1, NOW)
    assert result.bad.height == 1
    assert reason in result.bad["reason"][0]
    assert result.good.height == 9


def test_forming_candle_is_not_closed() -> None:
    frame = make_candles(NOW - timedelta(hours=2), 3)  # the last opens 0 h before now
    result = validate_candles(frame, H1, NOW)
    assert result.bad["reason"].to_list() == ["candle not closed yet"]


def test_swapped_rows_cost_one_row_not_the_rest() -> None:
    frame = make_candles(T0, 6)
    shuffled = pl.concat([frame[:3], frame[4:5], frame[3:4], frame[5:]])
    result = validate_candles(shuffled, H1, NOW)
    assert result.bad["reason"].to_list() == ["out-of-order timestamp"]
    assert result.bad["ts"][0] in (frame["ts"][3], frame["ts"][4])
    assert result.good.height == 5


def test_one_mistyped_date_far_ahead_quarantines_only_that_row() -> None:
    frame = make_candles(T0, 2000)
    typo = _with(frame, 700, ts=T0 + timedelta(days=85))  # past the last row
    result = validate_candles(typo, H1, T0 + timedelta(days=90))
    assert result.bad.height == 1
    assert result.bad["reason"][0] == "out-of-order timestamp"
    assert result.bad["ts"][0] == T0 + timedelta(days=85)
    assert result.good.height == 1999


def test_non_adjacent_exact_copy_collapses_instead_of_being_out_of_order() -> None:
    frame = make_candles(T0, 10)
    repeated = pl.concat([frame[:6], frame[2:3], frame[6:]])
    result = validate_candles(repeated, H1, NOW)
    assert result.bad.is_empty()
    assert result.duplicates == 1 and result.good.equals(frame)


def test_sub_second_timestamps_are_not_aligned() -> None:
    frame = _with(make_candles(T0, 4), 2, ts=T0 + timedelta(hours=2, microseconds=500_000))
    result = validate_candles(frame, H1, NOW)
    assert result.bad["reason"].to_list() == ["timestamp not aligned to 1h"]


def test_naive_now_is_utc() -> None:
    frame = make_candles(T0, 4)
    assert validate_candles(frame, H1, NOW.replace(tzinfo=None)).good.height == 4


def test_exact_duplicates_collapse_and_conflicts_are_quarantined() -> None:
    frame = make_candles(T0, 5)
    exact = pl.concat([frame, frame[2:3]]).sort("ts")
    result = validate_candles(exact, H1, NOW)
    assert result.duplicates == 1 and result.bad.is_empty() and result.good.height == 5

    conflicting = pl.concat([frame, _with(frame, 2, close=frame["close"][2] + 0.0001)[2:3]])
    result = validate_candles(conflicting.sort("ts"), H1, NOW)
    assert result.bad.height == 2
    assert set(result.bad["reason"]) == {"conflicting duplicate timestamp"}
    assert frame["ts"][2] not in result.good["ts"].to_list()


def test_several_reasons_are_all_named_and_extras_are_kept() -> None:
    frame = _with(make_candles(T0, 4), 1, high=0.5, volume=-1.0).with_columns(
        source_row=pl.int_range(1, 5)
    )
    result = validate_candles(frame, H1, NOW)
    assert result.bad["reason"][0] == "high below open/close; negative volume"
    assert result.bad["source_row"].to_list() == [2]
    assert result.reasons == {"high below open/close": 1, "negative volume": 1}
    assert "source_row" not in result.good.columns


# ------------------------------------------------------------------------- plausibility bounds
def test_an_absurd_but_finite_volume_is_quarantined_and_the_rest_kept() -> None:
    frame = _with(make_candles(T0, 10), 4, volume=1e308)
    result = validate_candles(frame, H1, NOW)
    assert result.bad["reason"].to_list() == ["volume above the plausible maximum 1e+15"]
    assert result.good.height == 9 and result.good["volume"].max() < 1e15


def test_the_volume_bound_is_configurable() -> None:
    frame = _with(make_candles(T0, 10), 4, volume=5000.0)
    assert validate_candles(frame, H1, NOW).bad.is_empty()
    strict = validate_candles(frame, H1, NOW, Plausibility(max_volume=1000.0))
    assert strict.reasons == {"volume above the plausible maximum 1000": 1}


def _scaled(frame: pl.DataFrame, row: int, factor: float) -> pl.DataFrame:
    values = {c: frame[c][row] * factor for c in ("open", "high", "low", "close")}
    return _with(frame, row, **values)


def test_a_price_off_by_a_factor_is_quarantined_not_its_neighbours() -> None:
    frame = _scaled(make_candles(T0, 30), 12, 10.0)  # a decimal point slipped
    result = validate_candles(frame, H1, NOW, plausibility_for("EURUSD"))
    assert result.bad["reason"].to_list() == ["price jump beyond 1.5x the closes around it"]
    assert result.bad["ts"][0] == frame["ts"][12]
    assert result.good.height == 29  # the candle after the spike is not blamed for it


def test_the_price_jump_bound_is_per_asset_class() -> None:
    assert plausibility_for("EURUSD").max_price_jump == 1.5
    assert plausibility_for("BTC/USDT").max_price_jump == 5.0
    assert plausibility_for("US500") == Plausibility(max_price_jump=2.0)
    wick = _with(make_candles(T0, 30), 12, low=1.1 / 3)  # a wick to a third of the price
    fx = validate_candles(wick, H1, NOW, plausibility_for("EURUSD"))
    crypto = validate_candles(wick, H1, NOW, plausibility_for("BTCUSD"))
    assert fx.bad.height == 1 and crypto.bad.is_empty()


def test_a_lasting_move_is_the_market_not_an_error() -> None:
    frame = make_candles(T0, 40)
    moved = pl.concat([frame[:20], frame[20:].with_columns(pl.col(PRICES) * 1.8)])
    assert validate_candles(moved, H1, NOW, plausibility_for("EURUSD")).bad.is_empty()


def test_a_single_new_candle_is_judged_against_the_stored_ones() -> None:
    stored = make_candles(T0, 20)
    new = make_candles(T0 + timedelta(hours=20), 1).with_columns(pl.col(PRICES) * 10)
    alone = validate_candles(new, H1, NOW, plausibility_for("EURUSD"))
    assert alone.bad.is_empty()  # nothing to compare it with
    after = validate_candles(new, H1, NOW, plausibility_for("EURUSD"), stored=stored)
    assert after.reasons == {"price jump beyond 1.5x the closes around it": 1}
    # A stored spike is replaced by a sane value: the new value is judged, not the old one.
    spiked = _scaled(stored, 10, 10.0)
    fix = validate_candles(stored[10:11], H1, NOW, plausibility_for("EURUSD"), stored=spiked)
    assert fix.bad.is_empty()
