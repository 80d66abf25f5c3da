from datetime import UTC, datetime, timedelta

from core.collect import collection_units, drop_forming, fetch_window
from core.config import load_settings
from core.timeframes import parse_timeframe
from tests.conftest import make_candles

H1 = parse_timeframe("1h")
NOW = datetime(2024, 3, 5, 10, 25, tzinfo=UTC)


def test_first_collection_goes_history_days_back_and_stops_before_the_forming_candle() -> None:
    window = fetch_window(H1, NOW, None, history_days=30, overlap_bars=3)
    assert window.start == datetime(2024, 2, 4, 10, tzinfo=UTC)
    assert window.end == datetime(2024, 3, 5, 10, tzinfo=UTC)  # the 10:00 candle is forming


def test_incremental_collection_starts_overlap_bars_before_the_newest_stored() -> None:
    last = datetime(2024, 3, 5, 7, tzinfo=UTC)
    window = fetch_window(H1, NOW, last, history_days=30, overlap_bars=3)
    assert window.start == datetime(2024, 3, 5, 4, tzinfo=UTC)
    assert not window.is_empty


def test_up_to_date_store_gives_only_the_overlap() -> None:
    last = datetime(2024, 3, 5, 9, tzinfo=UTC)
    assert fetch_window(H1, NOW, last, 30, overlap_bars=0).start == datetime(
        2024, 3, 5, 9, tzinfo=UTC
    )


def test_explicit_start_backfills() -> None:
    window = fetch_window(
        H1,
        NOW,
        datetime(2024, 3, 5, 9, tzinfo=UTC),
        30,
        3,
        start=datetime(2023, 1, 1, 0, 30, tzinfo=UTC),
    )
    assert window.start == datetime(2023, 1, 1, tzinfo=UTC)


def test_drop_forming_keeps_closed_future_and_unparsed_rows() -> None:
    frame = make_candles(NOW.replace(minute=0) - timedelta(hours=3), 6)
    kept = drop_forming(frame, H1, NOW)
    assert NOW.replace(minute=0) not in kept["ts"].to_list()
    assert kept.height == 5  # 3 closed + 2 in the future (validation quarantines those)


def test_collection_units_default_to_universe_and_accept_others() -> None:
    settings = load_settings()
    assert collection_units(settings) == [(s, "1h") for s in settings.universe.symbols]
    assert collection_units(settings, ["sol/usd", "SOLUSD"], ["4h", "1h"]) == [
        ("SOLUSD", "4h"),
        ("SOLUSD", "1h"),
    ]


def test_local_data_brokers_take_their_whole_history_first() -> None:
    from core.collect import EARLIEST

    window = fetch_window(H1, NOW, None, 30, 3, whole_history=True)
    assert window.start == EARLIEST
    last = datetime(2024, 3, 5, 7, tzinfo=UTC)
    assert fetch_window(H1, NOW, last, 30, 3, whole_history=True).start == last - 3 * H1.duration
