import os
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from core.provenance import ImportPolicy, ImportRefusedError
from core.read_cache import ReadCache
from core.store import STALE_TEMP_SECONDS, CandleStore, find_gaps, write_parquet_atomic
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
    cache, loads = ReadCache(max_bytes=2 * size), []

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
    small, counted = ReadCache(max_bytes=size // 2), []  # a frame over the budget: not kept
    for _ in range(2):
        small.read(tmp_path / "b", lambda: counted.append(1) or frames["b"])
    assert len(counted) == 2


# --------------------------------------------------------------------- provenance and imports
FILE = "import:/data/EURUSD_1h.csv"


def _files(store: CandleStore) -> dict[str, bytes]:
    """Every file under the store's home, by relative path (locks aside: a lock file is empty)."""
    return {
        str(p.relative_to(store.home)): p.read_bytes()
        for p in sorted(store.home.rglob("*"))
        if p.is_file() and "locks" not in p.parts
    }


def test_each_source_is_recorded_with_its_first_and_last_write(store: CandleStore) -> None:
    assert store.provenance("EURUSD", "1h").records == ()
    first, later, frame = NOW, NOW + timedelta(hours=5), make_candles(T0, 13)
    store.upsert("EURUSD", "1h", frame[:10], now=first, source="broker:simulated")
    store.upsert("EURUSD", "1h", frame[8:], now=later, source="broker:simulated")  # 3 new
    (record,) = store.provenance("EURUSD", "1h").records
    assert (record.source, record.first, record.last, record.candles) == (
        "broker:simulated",
        first,
        later,
        13,
    )
    import pyarrow.parquet as pq  # any Parquet tool sees it: it is the file's own metadata

    metadata = pq.read_metadata(store.path("EURUSD", "1h")).metadata
    assert b"broker:simulated" in metadata[b"candleflow.provenance"]


def test_an_import_into_a_broker_dataset_is_refused_and_changes_nothing(store: CandleStore) -> None:
    store.upsert("EURUSD", "1h", make_candles(T0, 24), now=NOW, source="broker:simulated")
    before = _files(store)
    real = make_candles(T0 + timedelta(days=30), 10, price=1.3)  # no overlap at all
    with pytest.raises(ImportRefusedError) as refused:
        store.upsert("EURUSD", "1h", real, now=NOW, source=FILE, policy=ImportPolicy())
    assert str(refused.value) == (
        "EURUSD 1h holds 24 candles from broker 'simulated'; this file is another source; "
        "nothing was stored: re-run with --replace to replace them, or import it as another symbol"
    )
    assert _files(store) == before


def test_replace_puts_the_file_in_place_of_the_dataset(store: CandleStore) -> None:
    store.upsert("EURUSD", "1h", make_candles(T0, 24), now=NOW, source="broker:simulated")
    real = make_candles(T0 + timedelta(days=30), 10, price=1.3)
    report = store.upsert(
        "EURUSD", "1h", real, now=NOW, source=FILE, policy=ImportPolicy(replace=True)
    )
    assert (report.new, report.rows, report.first_ts) == (10, 10, real["ts"][0])
    assert store.read("EURUSD", "1h").equals(real)
    assert [r.source for r in store.provenance("EURUSD", "1h").records] == [FILE]
    with pytest.raises(ImportRefusedError, match="no valid candle to replace the stored 10"):
        bad = real.with_columns(low=pl.lit(-1.0))
        store.upsert("EURUSD", "1h", bad, now=NOW, source=FILE, policy=ImportPolicy(replace=True))
    assert store.read("EURUSD", "1h").equals(real)


def test_further_files_extend_an_imported_dataset(store: CandleStore) -> None:
    store.upsert("EURUSD", "1h", make_candles(T0, 24), now=NOW, source=FILE, policy=ImportPolicy())
    more = make_candles(T0, 30)[20:]  # overlaps 4 candles, the same values
    report = store.upsert(
        "EURUSD", "1h", more, now=NOW, source="import:/data/2024.csv", policy=ImportPolicy()
    )
    assert (report.new, report.duplicated, report.rows) == (6, 4, 30)


def test_an_import_that_changes_stored_candles_shows_the_diff(store: CandleStore) -> None:
    frame = make_candles(T0, 24)
    store.upsert("EURUSD", "1h", frame, now=NOW, source=FILE, policy=ImportPolicy())
    before = _files(store)
    changed = frame.with_columns(
        close=pl.when(pl.col("ts") >= T0 + timedelta(hours=5))
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close")),
        high=pl.col("high") * 1.002,
    )
    with pytest.raises(ImportRefusedError) as refused:
        store.upsert("EURUSD", "1h", changed, now=NOW, source=FILE, policy=ImportPolicy())
    message = str(refused.value)
    assert message.startswith("EURUSD 1h: this import would change 24 of the stored candles")
    assert (
        "largest change: high" in message and "first changed candle 2024-01-02 00:00 UTC" in message
    )
    assert message.endswith("if the file is right, re-run with --allow-corrections")
    assert _files(store) == before
    report = store.upsert(
        "EURUSD", "1h", changed, now=NOW, source=FILE, policy=ImportPolicy(allow_corrections=True)
    )
    assert report.replaced == 24 and store.read("EURUSD", "1h").equals(changed)


def test_a_file_without_volume_does_not_zero_real_volumes(store: CandleStore) -> None:
    frame = make_candles(T0, 24)
    store.upsert("EURUSD", "1h", frame, now=NOW, source=FILE, policy=ImportPolicy())
    no_volume = frame.with_columns(volume=pl.lit(0.0))
    with pytest.raises(ImportRefusedError, match=r"would change 24 .*largest change: volume"):
        store.upsert("EURUSD", "1h", no_volume, now=NOW, source=FILE, policy=ImportPolicy())
    later = make_candles(T0 + timedelta(hours=24), 5).with_columns(volume=pl.lit(0.0))
    with pytest.raises(ImportRefusedError, match=r"no volume \(all 5 candles 0\) but the stored"):
        store.upsert("EURUSD", "1h", later, now=NOW, source=FILE, policy=ImportPolicy())
    assert store.read("EURUSD", "1h").equals(frame)


def test_shifted_timestamps_are_refused_with_a_time_zone_hint(store: CandleStore) -> None:
    frame = make_candles(T0, 48)
    store.upsert("EURUSD", "1h", frame, now=NOW, source=FILE, policy=ImportPolicy())
    shifted = frame.with_columns(pl.col("ts") + timedelta(hours=2))  # local time read as UTC
    with pytest.raises(ImportRefusedError) as refused:
        store.upsert("EURUSD", "1h", shifted, now=NOW, source=FILE, policy=ImportPolicy())
    assert "would change 46 of the stored candles" in str(refused.value)
    assert "match the stored ones 2 h earlier: check the file's time zone (--tz)" in str(
        refused.value
    )


def test_a_broker_corrects_its_own_candles_freely(store: CandleStore) -> None:
    frame = make_candles(T0, 24)
    store.upsert("EURUSD", "1h", frame, now=NOW, source="broker:simulated")
    revised = frame[-3:].with_columns(pl.col("close") * 1.0001, pl.col("high") * 1.001)
    report = store.upsert("EURUSD", "1h", revised, now=NOW, source="broker:simulated")
    assert report.replaced == 3


def test_a_dataset_stored_before_sources_were_recorded_is_not_merged_into(
    store: CandleStore,
) -> None:
    write_parquet_atomic(make_candles(T0, 24), store.path("EURUSD", "1h"))  # no provenance
    with pytest.raises(ImportRefusedError, match="24 candles from an unrecorded source"):
        store.upsert(
            "EURUSD",
            "1h",
            make_candles(T0 + timedelta(days=9), 3),
            now=NOW,
            source=FILE,
            policy=ImportPolicy(),
        )


# ------------------------------------------------------------------------------ temp leftovers
def _leftover(folder: Path, name: str, age_seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.parquet.{'ab' * 16}.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    stamp = time.time() - age_seconds
    os.utime(tmp, (stamp, stamp))
    return tmp


def test_stale_temp_files_are_removed_on_the_next_write_to_their_folder(store: CandleStore) -> None:
    candles, quarantine = store.home / "candles" / "1h", store.home / "quarantine" / "1h"
    old = _leftover(candles, "GBPUSD", STALE_TEMP_SECONDS + 60)
    old_q = _leftover(quarantine, "USDJPY", STALE_TEMP_SECONDS + 60)
    fresh = _leftover(candles, "AUDUSD", 5)  # a writer may still be busy with it
    other_tf = _leftover(store.home / "candles" / "4h", "GBPUSD", STALE_TEMP_SECONDS + 60)
    mine = candles / ".notes.tmp"  # not a store temp file
    mine.write_text("x")
    store.upsert("EURUSD", "1h", make_candles(T0, 3), now=NOW)
    assert not old.exists() and not old_q.exists()
    assert fresh.exists() and other_tf.exists() and mine.exists()


def test_a_temp_file_is_never_removed_under_a_live_writer(store: CandleStore) -> None:
    import threading

    tmp = _leftover(store.home / "candles" / "1h", "GBPUSD", STALE_TEMP_SECONDS + 60)
    with store._locked("GBPUSD", "1h"):  # a writer of GBPUSD is busy
        writer = threading.Thread(target=store.upsert, args=("EURUSD", "1h", make_candles(T0, 3)))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and tmp.exists()  # it waits for the lock, not removing
    writer.join(10)
    assert not writer.is_alive() and not tmp.exists()
    assert store.read("EURUSD", "1h").height == 3
