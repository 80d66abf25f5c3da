from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from core.store import CandleStore, _ReadCache, find_gaps, write_parquet_atomic
from core.timeframes import parse_timeframe
from tests.conftest import T0, make_candles

NOW = T0 + timedelta(days=60)


@pytest.fixture(params=[0, 16], ids=["uncached", "cached"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> CandleStore:
    """Every store behaviour holds with the read cache (``cache_mb``) as without it."""
    return CandleStore(tmp_path / "store", cache_mb=request.param)


def test_first_upsert_stores_sorted_candles_readable_by_any_tool(store: CandleStore) -> None:
    frame = make_candles(T0, 24)
    report = store.upsert("eur/usd", "1h", frame.reverse().sort("ts"), now=NOW)
    assert (report.new, report.replaced, report.duplicated, report.quarantined) == (24, 0, 0, 0)
    assert report.rows == 24 and report.first_ts == T0
    path = store.path("EURUSD", "1h")
    assert path == store.home / "candles" / "1h" / "EURUSD.parquet"
    import pandas as pd
    import pyarrow.parquet as pq

    assert pq.read_table(path).num_rows == 24
    assert pd.read_parquet(path)["ts"].is_monotonic_increasing
    assert store.read("EURUSD", "1h").equals(frame)


def test_upsert_is_idempotent_and_newest_value_wins(store: CandleStore) -> None:
    frame = make_candles(T0, 24)
    store.upsert("EURUSD", "1h", frame, now=NOW)
    again = store.upsert("EURUSD", "1h", frame, now=NOW)
    assert (again.new, again.replaced, again.duplicated, again.rows) == (0, 0, 24, 24)

    corrected = frame.with_columns(
        pl.when(pl.col("ts") == frame["ts"][-1])
        .then(pl.col("close") + 0.0001)
        .otherwise(pl.col("close"))
        .alias("close"),
        pl.when(pl.col("ts") == frame["ts"][-1])
        .then(pl.col("high") + 0.001)
        .otherwise(pl.col("high"))
        .alias("high"),
    )
    more = pl.concat([corrected[-3:], make_candles(T0 + timedelta(hours=24), 5)])
    report = store.upsert("EURUSD", "1h", more, now=NOW)
    assert (report.new, report.replaced, report.duplicated) == (5, 1, 2)
    stored = store.read("EURUSD", "1h")
    assert stored.height == 29
    assert stored["ts"].is_unique().all() and stored["ts"].is_sorted()
    assert stored.filter(pl.col("ts") == frame["ts"][-1])["close"][0] == corrected["close"][-1]


def test_backfill_before_stored_range_merges_in_order(store: CandleStore) -> None:
    store.upsert("EURUSD", "1h", make_candles(T0 + timedelta(hours=10), 10), now=NOW)
    report = store.upsert("EURUSD", "1h", make_candles(T0, 10), now=NOW)
    assert report.new == 10 and report.rows == 20
    assert store.read("EURUSD", "1h")["ts"].is_sorted()


def test_bad_rows_are_quarantined_with_reasons_good_rows_stored(store: CandleStore) -> None:
    frame = make_candles(T0, 10).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(-1.0).otherwise(pl.col("low")).alias("low")
    )
    report = store.upsert("EURUSD", "1h", frame, now=NOW)
    assert report.new == 9 and report.quarantined == 1
    assert report.reasons == {"non-positive price": 1}
    quarantined = store.read_quarantine("EURUSD", "1h")
    assert quarantined.height == 1
    assert quarantined["reason"][0] == "non-positive price"
    assert quarantined["source"][0] == "collect"
    assert quarantined["ts"][0] == frame["ts"][4]
    # Seeing the same bad row again does not duplicate it in quarantine.
    store.upsert("EURUSD", "1h", frame, now=NOW)
    assert store.read_quarantine("EURUSD", "1h").height == 1
    assert store.datasets()[0].quarantined == 1


def test_gaps_are_reported_not_invented(store: CandleStore) -> None:
    frame = make_candles(T0, 48).filter(
        ~pl.col("ts").is_in([T0 + timedelta(hours=h) for h in (5, 6, 7, 30)])
    )
    report = store.upsert("EURUSD", "1h", frame, now=NOW)
    assert (report.gaps, report.missing_candles, report.rows) == (2, 4, 44)
    gaps = store.gaps("EURUSD", "1h")
    assert gaps["missing"].to_list() == [3, 1]
    assert gaps["after"][0] == T0 + timedelta(hours=4)
    # An incremental upsert reports only the gaps in its own window.
    later = store.upsert("EURUSD", "1h", make_candles(T0 + timedelta(hours=48), 3), now=NOW)
    assert later.gaps == 0


def test_find_gaps_on_daily_series() -> None:
    ts = make_candles(T0, 10, step=timedelta(days=1))["ts"].gather([0, 1, 2, 5, 6, 9])
    gaps = find_gaps(ts, parse_timeframe("1d"))
    assert gaps["missing"].to_list() == [2, 2]


def test_crash_halfway_through_a_write_leaves_the_old_file(
    store: CandleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make_candles(T0, 24)
    store.upsert("EURUSD", "1h", original, now=NOW)
    path = store.path("EURUSD", "1h")
    before = path.read_bytes()

    def torn_write(self: pl.DataFrame, file: Path, **kwargs: object) -> None:
        Path(file).write_bytes(b"PAR1" + b"\0" * 100)  # half a file…
        raise OSError("disk full")  # …then the crash

    monkeypatch.setattr(pl.DataFrame, "write_parquet", torn_write)
    with pytest.raises(OSError, match="disk full"):
        store.upsert("EURUSD", "1h", make_candles(T0 + timedelta(hours=24), 5), now=NOW)
    assert path.read_bytes() == before
    assert store.read("EURUSD", "1h").equals(original)
    assert sorted(p.name for p in path.parent.iterdir()) == ["EURUSD.parquet"]  # no temp left


def test_crash_between_write_and_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.parquet"
    write_parquet_atomic(make_candles(T0, 3), path)
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        write_parquet_atomic(make_candles(T0, 30), path)
    assert pl.read_parquet(path).height == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_last_ts_and_read_range(store: CandleStore) -> None:
    assert store.last_ts("EURUSD", "1h") is None
    assert store.read("EURUSD", "1h").is_empty()
    store.upsert("EURUSD", "1h", make_candles(T0, 10), now=NOW)
    assert store.last_ts("EURUSD", "1h") == T0 + timedelta(hours=9)
    window = store.read("EURUSD", "1h", T0 + timedelta(hours=2), T0 + timedelta(hours=5))
    assert window.height == 3


def test_concurrent_upserts_to_one_dataset_lose_nothing(store: CandleStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    chunks = [make_candles(T0 + timedelta(hours=10 * i), 10) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: store.upsert("EURUSD", "1h", c, now=NOW), chunks))
    assert store.read("EURUSD", "1h").height == 80


def test_corrupt_file_is_a_store_error(store: CandleStore) -> None:
    from core.errors import StoreError

    store.upsert("EURUSD", "1h", make_candles(T0, 5), now=NOW)
    store.path("EURUSD", "1h").write_bytes(b"not parquet at all")
    for call in (
        lambda: store.read("EURUSD", "1h"),
        lambda: store.last_ts("EURUSD", "1h"),
        store.datasets,
        lambda: store.upsert("EURUSD", "1h", make_candles(T0, 1)),
    ):
        with pytest.raises(StoreError, match=r"cannot read .*EURUSD\.parquet"):
            call()


def test_a_cached_reader_sees_every_write_of_another_store(tmp_path: Path) -> None:
    reader, writer = CandleStore(tmp_path, cache_mb=16), CandleStore(tmp_path)
    writer.upsert("EURUSD", "1h", make_candles(T0, 10), now=NOW)
    assert reader.read("EURUSD", "1h").height == 10
    for i in range(1, 6):  # writes in quick succession, some within one mtime tick
        writer.upsert("EURUSD", "1h", make_candles(T0 + timedelta(hours=9 + i), 1), now=NOW)
        assert reader.read("EURUSD", "1h").height == 10 + i
        assert reader.last_ts("EURUSD", "1h") == T0 + timedelta(hours=9 + i)
    corrected = make_candles(T0, 1, price=1.2)  # same rows, one value changed
    writer.upsert("EURUSD", "1h", corrected, now=NOW)
    assert reader.read("EURUSD", "1h")["close"][0] == corrected["close"][0]
    window = reader.read("EURUSD", "1h", T0 + timedelta(hours=2), T0 + timedelta(hours=5))
    assert window.equals(
        writer.read("EURUSD", "1h", T0 + timedelta(hours=2), T0 + timedelta(hours=5))
    )
    writer.path("EURUSD", "1h").unlink()
    assert reader.read("EURUSD", "1h").is_empty() and reader.last_ts("EURUSD", "1h") is None


def test_the_read_cache_keeps_unchanged_files_within_its_budget(tmp_path: Path) -> None:
    frames = {name: make_candles(T0, 50) for name in "abc"}
    for name, frame in frames.items():
        write_parquet_atomic(frame, tmp_path / name)
    size = frames["a"].estimated_size()
    cache, loads = _ReadCache(max_bytes=2 * size), []

    def read(name: str) -> pl.DataFrame:
        return cache.read(
            tmp_path / name, lambda: loads.append(name) or pl.read_parquet(tmp_path / name)
        )

    for name in "abab":
        assert read(name).equals(frames[name])
    assert loads == ["a", "b"]  # unchanged files are read once
    read("c")  # over the budget: the least recently used (a) goes
    read("b")
    read("a")
    assert loads == ["a", "b", "c", "a"]
    write_parquet_atomic(frames["a"].head(3), tmp_path / "a")  # a new version: read again
    assert read("a").height == 3 and loads[-1] == "a" and len(loads) == 5
    small, counted = _ReadCache(max_bytes=size // 2), []  # a frame over the budget: not kept
    for _ in range(2):
        small.read(tmp_path / "b", lambda: counted.append(1) or frames["b"])
    assert len(counted) == 2
