"""The file broker: real CSVs shipped with ``backtesting``, generated files in the formats real
downloads use (Yahoo, MetaTrader, Dukascopy, Binance, European ``;``), broken files, and the
directory broker on top."""

from __future__ import annotations

import gzip
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from brokers.files import FileBroker, read_candle_file
from brokers.registry import create_broker
from core.candles import CANDLE_SCHEMA
from core.config import FilesSettings, Settings
from core.errors import (
    ConfigError,
    DataFormatError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
)
from core.timeframes import TIMEFRAMES

OUTPUT_SCHEMA = {**CANDLE_SCHEMA, "source_row": pl.Int64()}


def _backtesting_csv(name: str) -> Path:
    import backtesting

    path = Path(backtesting.__file__).parent / "test" / name
    assert path.is_file(), f"backtesting no longer ships {path}"
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def row(frame: pl.DataFrame, i: int) -> dict:
    return frame.row(i, named=True)


# ------------------------------------------------------------------ real data (backtesting)
def test_eurusd_hourly_pandas_export_with_unnamed_index() -> None:
    frame = read_candle_file(_backtesting_csv("EURUSD.csv"))
    assert frame.schema == OUTPUT_SCHEMA
    assert frame.height == 5000
    assert frame["source_row"].to_list() == list(range(1, 5001))
    assert frame["ts"][0] == utc(2017, 4, 19, 9)
    assert frame["ts"][-1] == utc(2018, 2, 7, 15)
    assert row(frame, 0) == {
        "ts": utc(2017, 4, 19, 9),
        "open": 1.0716,
        "high": 1.0722,
        "low": 1.07083,
        "close": 1.07219,
        "volume": 1413.0,
        "source_row": 1,
    }
    assert frame["ts"].is_sorted() and frame["ts"].null_count() == 0


def test_eurusd_naive_times_in_london_are_converted() -> None:
    frame = read_candle_file(_backtesting_csv("EURUSD.csv"), timezone="Europe/London")
    assert frame["ts"][0] == utc(2017, 4, 19, 8)  # BST = UTC+1
    assert frame["ts"][-1] == utc(2018, 2, 7, 15)  # GMT = UTC
    assert frame["ts"].n_unique() == 5000


def test_goog_daily() -> None:
    frame = read_candle_file(_backtesting_csv("GOOG.csv"))
    assert frame.height == 2148
    assert frame["ts"][0] == utc(2004, 8, 19)
    assert frame["ts"][-1] == utc(2013, 3, 1)
    last = row(frame, -1)
    assert (last["open"], last["close"], last["volume"]) == (797.8, 806.19, 2175400.0)


def test_daily_dates_stay_dates_whatever_the_time_zone() -> None:
    frame = read_candle_file(_backtesting_csv("GOOG.csv"), timezone="Asia/Tokyo")
    assert frame["ts"][0] == utc(2004, 8, 19)
    assert (frame["ts"].dt.hour() == 0).all()


def test_btcusd_monthly_fractional_volume() -> None:
    frame = read_candle_file(_backtesting_csv("BTCUSD.csv"))
    assert frame.height == 156
    assert (frame["ts"][0], frame["ts"][-1]) == (utc(2012, 1, 31), utc(2024, 12, 31))
    assert row(frame, 0)["volume"] == pytest.approx(2012.25343589)
    assert row(frame, -1)["high"] == 108364.0


# ------------------------------------------------------------------ real-world formats
def test_yahoo_uses_close_not_adj_close_and_null_cells(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "GOOG.csv",
        (
            "Date,Open,High,Low,Close,Adj Close,Volume\n"
            "1999-01-04,10.0,11.0,9.5,10.5,2.1,1000\n"
            "1999-01-05,null,null,null,null,null,null\n"
        ),
    )
    frame = read_candle_file(path)
    assert row(frame, 0)["close"] == 10.5
    assert frame["ts"].to_list() == [utc(1999, 1, 4), utc(1999, 1, 5)]
    assert row(frame, 1)["open"] is None and row(frame, 1)["volume"] is None


def test_only_adjusted_close_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "X.csv", "Date,Open,High,Low,Adj Close\n2020-01-02,1,2,0.5,1.5\n")
    with pytest.raises(DataFormatError, match=r"Adj Close.*Rename it to Close"):
        read_candle_file(path)


def test_metatrader_tab_export_prefers_tick_volume_when_real_volume_is_zero(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "EURUSD_H1.csv",
        (
            "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
            "2017.01.02\t00:00:00\t1.05155\t1.05190\t1.05100\t1.05150\t220\t0\t12\n"
            "2017.01.02\t01:00:00\t1.05150\t1.05200\t1.05120\t1.05180\t180\t0\t12\n"
        ),
    )
    frame = read_candle_file(path)
    assert frame["ts"].to_list() == [utc(2017, 1, 2, 0), utc(2017, 1, 2, 1)]
    assert frame["volume"].to_list() == [220.0, 180.0]
    assert row(frame, 1)["close"] == 1.0518


def test_metatrader5_unicode_export_utf16_crlf(tmp_path: Path) -> None:
    text = (
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\r\n"
        "2017.01.02\t00:00:00\t1.05155\t1.05190\t1.05100\t1.05150\t220\t5\t12\r\n"
    )
    path = tmp_path / "EURUSD_H1.csv"
    path.write_bytes(text.encode("utf-16"))  # with a byte-order mark, as MetaTrader 5 writes
    assert row(read_candle_file(path), 0) == {
        "ts": utc(2017, 1, 2),
        "open": 1.05155,
        "high": 1.0519,
        "low": 1.051,
        "close": 1.0515,
        "volume": 5.0,  # real volume when there is any
        "source_row": 1,
    }


def test_metatrader_headerless_history_export(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "EURUSD60.csv",
        (
            "2017.01.02,13:00,1.0465,1.0470,1.0460,1.0468,311\n"
            "2017.01.02,14:00,1.0468,1.0480,1.0466,1.0477,402\n"
        ),
    )
    frame = read_candle_file(path)
    assert frame["ts"].to_list() == [utc(2017, 1, 2, 13), utc(2017, 1, 2, 14)]
    assert row(frame, 1) == {
        "ts": utc(2017, 1, 2, 14),
        "open": 1.0468,
        "high": 1.048,
        "low": 1.0466,
        "close": 1.0477,
        "volume": 402.0,
        "source_row": 2,
    }


def test_dukascopy_gmt_time_is_day_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "EURUSD_Candlestick_1_Hour_BID.csv",
        (
            "Gmt time,Open,High,Low,Close,Volume\n"
            "01.02.2017 22:00:00.000,1.05,1.06,1.04,1.055,1234.56\n"
            "01.02.2017 23:00:00.000,1.055,1.06,1.05,1.052,99.5\n"
        ),
    )
    frame = read_candle_file(path, timezone="America/New_York")  # the header says GMT
    assert frame["ts"].to_list() == [utc(2017, 2, 1, 22), utc(2017, 2, 1, 23)]
    assert frame["volume"].to_list() == [1234.56, 99.5]


def test_dukascopy_local_time_with_gmt_offset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        (
            "Local time,Open,High,Low,Close,Volume\n"
            "02.01.2017 00:00:00.000 GMT+0200,1.05,1.06,1.04,1.055,10\n"
            "02.07.2017 00:00:00.000 GMT+0300,1.05,1.06,1.04,1.055,10\n"
        ),
    )
    frame = read_candle_file(path, timezone="Asia/Tokyo")  # explicit offsets win
    assert frame["ts"].to_list() == [utc(2017, 1, 1, 22), utc(2017, 7, 1, 21)]


@pytest.mark.parametrize("header", [True, False])
def test_binance_klines_epoch_milliseconds(tmp_path: Path, header: bool) -> None:
    names = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\n"
    )
    body = (
        "1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68,1704070799999,"
        "53957200.2,47134,682.5,28964570.9,0\n"
        "1704070800000,42475.23,42775.00,42431.65,42613.56,1196.37,1704074399999,"
        "51043312.1,45634,617.6,26350218.1,0\n"
    )
    frame = read_candle_file(write(tmp_path, "BTCUSDT-1h.csv", (names if header else "") + body))
    assert frame["ts"].to_list() == [utc(2024, 1, 1, 0), utc(2024, 1, 1, 1)]
    assert row(frame, 0)["close"] == 42475.23 and row(frame, 0)["volume"] == 1271.68


@pytest.mark.parametrize(
    "stamp", ["1483369200", "1483369200000", "1483369200000000", "1483369200.0"]
)
def test_epoch_unit_is_told_by_magnitude(tmp_path: Path, stamp: str) -> None:
    path = write(tmp_path, "e.csv", f"timestamp,open,high,low,close\n{stamp},1,2,0.5,1.5\n")
    assert read_candle_file(path, timezone="Europe/Paris")["ts"][0] == utc(2017, 1, 2, 15)


def test_us_dates_month_first_unless_a_day_above_12_says_otherwise(tmp_path: Path) -> None:
    us = write(
        tmp_path, "us.csv", "Date,Open,High,Low,Close\n1/4/1999,1,2,0.5,1.5\n1/5/1999,1,2,0.5,1.5\n"
    )
    assert read_candle_file(us)["ts"].to_list() == [utc(1999, 1, 4), utc(1999, 1, 5)]
    eu = write(
        tmp_path,
        "eu.csv",
        "Date,Open,High,Low,Close\n1/4/1999,1,2,0.5,1.5\n13/4/1999,1,2,0.5,1.5\n",
    )
    assert read_candle_file(eu)["ts"].to_list() == [utc(1999, 4, 1), utc(1999, 4, 13)]


def test_excel_serial_days_are_wall_clock(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Date,Open,High,Low,Close\n42737.625,1,2,0.5,1.5\n")
    assert read_candle_file(path, timezone="Europe/Berlin")["ts"][0] == utc(2017, 1, 2, 14)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-01-02 15:00:00", utc(2017, 1, 2, 15)),
        ("2017-01-02T15:00:00", utc(2017, 1, 2, 15)),
        ("2017-01-02T15:00:00Z", utc(2017, 1, 2, 15)),
        ("2017-01-02T17:00:00+02:00", utc(2017, 1, 2, 15)),
        ("2017-01-02 10:00:00-0500", utc(2017, 1, 2, 15)),
        ("2017-01-02 15:00:00.123456", utc(2017, 1, 2, 15, 0, 0, 123456)),
        ("2017.01.02 15:00", utc(2017, 1, 2, 15)),
        ("20170102", utc(2017, 1, 2)),
        ("20170102 150000", utc(2017, 1, 2, 15)),
        ("1/2/2017 3:00:00 PM", utc(2017, 1, 2, 15)),
        ("Jan 02, 2017", utc(2017, 1, 2)),
        ("1/2/17", utc(2017, 1, 2)),
    ],
)
def test_timestamp_spellings(tmp_path: Path, text: str, expected: datetime) -> None:
    path = write(tmp_path, "t.csv", f'Datetime,Open,High,Low,Close\n"{text}",1,2,0.5,1.5\n')
    assert read_candle_file(path)["ts"].to_list() == [expected]


def test_semicolon_and_decimal_comma(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "DAX.csv",
        (
            "Date;Eröffnung;Open;High;Low;Close;Volume\n"
            "02.01.2017;x;1,0465;1,0489;1,0401;1,0412;1.413,5\n"
            "03.01.2017;x;1,0412;1,0450;1,0340;1,0405;987\n"
        ),
    )
    frame = read_candle_file(path)
    assert frame["ts"].to_list() == [utc(2017, 1, 2), utc(2017, 1, 3)]
    assert row(frame, 0) == {
        "ts": utc(2017, 1, 2),
        "open": 1.0465,
        "high": 1.0489,
        "low": 1.0401,
        "close": 1.0412,
        "volume": 1413.5,
        "source_row": 1,
    }
    assert frame["volume"][1] == 987.0


def test_semicolon_with_decimal_points(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Date;Open;High;Low;Close\n2017-01-02;1.5;2.5;1.25;2\n")
    assert row(read_candle_file(path), 0)["high"] == 2.5


def test_newest_first_file_is_reversed_keeping_source_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "desc.csv",
        (
            "Date,Open,High,Low,Close\n"
            "2017-01-04,3,3,3,3\n2017-01-03,2,2,2,2\nnot a date,9,9,9,9\n2017-01-02,1,1,1,1\n"
        ),
    )
    frame = read_candle_file(path)
    assert frame["source_row"].to_list() == [4, 3, 2, 1]
    assert frame["ts"].to_list() == [utc(2017, 1, 2), None, utc(2017, 1, 3), utc(2017, 1, 4)]
    assert frame["open"].to_list() == [1.0, 9.0, 2.0, 3.0]


def test_unsorted_file_is_sorted_keeping_source_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mixed.csv",
        (
            "Date,Open,High,Low,Close\n2017-01-04,3,3,3,3\nnot a date,9,9,9,9\n"
            "2017-01-05,2,2,2,2\n2017-01-02,1,1,1,1\n2017-01-04,4,4,4,4\n"
        ),
    )
    frame = read_candle_file(path)
    # Stable: the two rows of 01-04 keep their order (the validator judges them as a conflict);
    # the row without a timestamp goes last, still pointing at its file row.
    assert frame["source_row"].to_list() == [4, 1, 5, 3, 2]
    assert frame["ts"].to_list() == [
        utc(2017, 1, 2),
        utc(2017, 1, 4),
        utc(2017, 1, 4),
        utc(2017, 1, 5),
        None,
    ]
    assert frame["open"].to_list() == [1.0, 3.0, 4.0, 2.0, 9.0]


def test_shuffled_file_across_dst_fall_back_reads_every_hour_once(tmp_path: Path) -> None:
    local = ["10-28 22", "10-28 23", "10-29 00", "10-29 01", "10-29 01", "10-29 02", "10-29 03"]
    rows = [f"2017-{s}:00,{i},{i},{i},{i}\n" for i, s in enumerate(local, 1)]
    shuffled = [rows[i] for i in (0, 2, 1, 3, 5, 4, 6)]  # the repeated hour keeps its order
    path = write(tmp_path, "s.csv", "time,open,high,low,close\n" + "".join(shuffled))
    frame = read_candle_file(path, timezone="Europe/London")
    assert frame["ts"].to_list() == [
        utc(2017, 10, 28, 21),
        utc(2017, 10, 28, 22),
        utc(2017, 10, 28, 23),
        *(utc(2017, 10, 29, h) for h in range(4)),
    ]
    assert frame["open"].to_list() == [float(i) for i in range(1, 8)]


def test_london_wall_clock_across_both_dst_changes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "GBPUSD_1h.csv",
        (
            "time,open,high,low,close\n"
            "2017-03-26 00:00,1,1,1,1\n2017-03-26 02:00,1,1,1,1\n2017-03-26 03:00,1,1,1,1\n"
            "2017-10-29 00:00,1,1,1,1\n2017-10-29 01:00,1,1,1,1\n2017-10-29 01:00,1,1,1,1\n"
            "2017-10-29 02:00,1,1,1,1\n"
        ),
    )
    frame = read_candle_file(path, timezone="Europe/London")
    assert frame["ts"].to_list() == [
        utc(2017, 3, 26, 0),
        utc(2017, 3, 26, 1),
        utc(2017, 3, 26, 2),
        utc(2017, 10, 28, 23),
        utc(2017, 10, 29, 0),
        utc(2017, 10, 29, 1),
        utc(2017, 10, 29, 2),
    ]


def test_newest_first_file_across_dst_fall_back(tmp_path: Path) -> None:
    stamps = [
        "2017-10-29 02:00",
        "2017-10-29 01:30",
        "2017-10-29 01:00",
        "2017-10-29 01:30",
        "2017-10-29 01:00",
        "2017-10-29 00:30",
    ]
    path = write(
        tmp_path, "d.csv", "time,open,high,low,close\n" + "".join(f"{s},1,1,1,1\n" for s in stamps)
    )
    frame = read_candle_file(path, timezone="Europe/London")
    assert frame["source_row"].to_list() == [6, 5, 4, 3, 2, 1]
    assert frame["ts"].diff().drop_nulls().dt.total_minutes().to_list() == [30] * 5
    assert frame["ts"][0] == utc(2017, 10, 28, 23, 30)


def test_parquet_from_pandas_with_datetime_index(tmp_path: Path) -> None:
    index = pd.DatetimeIndex(["2017-01-02 15:00", "2017-01-02 16:00"], name="Date")
    data = pd.DataFrame(
        {
            "Open": [1.0, 2.0],
            "High": [2.0, 3.0],
            "Low": [0.5, 1.5],
            "Close": [1.5, 2.5],
            "Volume": [10, 20],
        },
        index=index,
    )
    data.to_parquet(tmp_path / "a.parquet")
    data.rename_axis(None).to_parquet(tmp_path / "b.pq")
    for name in ("a.parquet", "b.pq"):
        frame = read_candle_file(tmp_path / name, timezone="Europe/Berlin")
        assert frame.schema == OUTPUT_SCHEMA
        assert frame["ts"].to_list() == [utc(2017, 1, 2, 14), utc(2017, 1, 2, 15)]
        assert frame["volume"].to_list() == [10.0, 20.0]


def test_parquet_with_aware_and_epoch_columns(tmp_path: Path) -> None:
    aware = pl.DataFrame(
        {
            "timestamp": [datetime(2017, 1, 2, 16, tzinfo=UTC)],
            "open": [1],
            "high": [2],
            "low": [0.5],
            "close": [1.5],
        }
    ).with_columns(pl.col("timestamp").dt.convert_time_zone("Europe/Berlin"))
    aware.write_parquet(tmp_path / "aware.parquet")
    epoch = aware.with_columns(pl.col("timestamp").dt.epoch("ms"))
    epoch.write_parquet(tmp_path / "epoch.parquet")
    for name in ("aware.parquet", "epoch.parquet"):
        frame = read_candle_file(tmp_path / name, timezone="Asia/Tokyo")
        assert frame["ts"].to_list() == [utc(2017, 1, 2, 16)]
        assert frame["volume"].to_list() == [0.0]


def test_gzip_txt_bom_preamble_and_blank_lines(tmp_path: Path) -> None:
    text = (
        "https://www.CryptoDataDownload.com\n\ufeffunix,date,symbol,open,high,low,close,"
        "Volume BTC,Volume USDT\n"
        "1609462800,2021-01-01 01:00:00,BTC/USDT,1,2,0.5,1.5,7.5,11\n\n"
        "1609466400,2021-01-01 02:00:00,BTC/USDT,1,2,0.5,1.5,8.5,12\n"
    )
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(text.encode()))
    write(tmp_path, "b.txt", text)
    for name in ("a.csv.gz", "b.txt"):
        frame = read_candle_file(tmp_path / name)
        assert frame["ts"].to_list() == [utc(2021, 1, 1, 1), utc(2021, 1, 1, 2)]
        assert frame["source_row"].to_list() == [1, 3]  # the blank line is data row 2
        assert frame["volume"].to_list() == [7.5, 8.5]


def test_reimported_quarantine_file_gets_its_own_source_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "fixed.csv",
        "ts,open,high,low,close,volume,source_row,reason\n"
        "2017-01-02 15:00:00+00:00,1,2,0.5,1.5,3,17,missing close\n",
    )
    assert row(read_candle_file(path), 0)["source_row"] == 1


def test_close_wins_over_last(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Date,Open,High,Low,Last,Close\n2017-01-02,1,2,0.5,1.9,1.5\n")
    assert row(read_candle_file(path), 0)["close"] == 1.5
    path = write(tmp_path, "y.csv", "Date,Open,High,Low,Last,Settle\n2017-01-02,1,2,0.5,1.9,1.5\n")
    assert row(read_candle_file(path), 0)["close"] == 1.9


@pytest.mark.parametrize("volume", ["", ",5"])
def test_headerless_date_ohlc_volume(tmp_path: Path, volume: str) -> None:
    path = write(
        tmp_path,
        "x.csv",
        f"2017-01-02 15:00:00,1,2,0.5,1.5{volume}\n2017-01-02 16:00:00,1,2,0.5,1.5{volume}\n",
    )
    frame = read_candle_file(path)
    assert frame["ts"].to_list() == [utc(2017, 1, 2, 15), utc(2017, 1, 2, 16)]
    assert frame["volume"][0] == (5.0 if volume else 0.0)


def test_compact_dates_with_a_bad_cell_stay_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "Date,Open,High,Low,Close\n20170102,1,2,0.5,1.5\n"
        "20171345,1,2,0.5,1.5\n20170104,1,2,0.5,1.5\n",
    )
    assert read_candle_file(path)["ts"].to_list() == [utc(2017, 1, 2), None, utc(2017, 1, 4)]


def test_headers_in_any_case_and_short_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "  TIMESTAMP , O , H , L , C , Tick Volume \n"
        "2017-01-02 15:00:00 , 1 , 2 , 0.5 , 1.5 , 7 \n",
    )
    assert row(read_candle_file(path), 0) == {
        "ts": utc(2017, 1, 2, 15),
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 7.0,
        "source_row": 1,
    }


def test_missing_volume_is_zero_but_bad_volume_cell_is_null(tmp_path: Path) -> None:
    none = write(tmp_path, "a.csv", "Date,Open,High,Low,Close\n2017-01-02,1,2,0.5,1.5\n")
    assert read_candle_file(none)["volume"].to_list() == [0.0]
    bad = write(
        tmp_path,
        "b.csv",
        "Date,Open,High,Low,Close,Volume\n2017-01-02,1,2,0.5,1.5,n/a\n2017-01-03,1,2,0.5,1.5,5\n",
    )
    assert read_candle_file(bad)["volume"].to_list() == [None, 5.0]


def test_thousands_separators_in_quoted_cells(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "Date,Price,Open,High,Low,Vol.\n"
        '"2021-01-04","3,700.65","3,764.61","3,769.99","3,662.71",1\n',
    )
    assert row(read_candle_file(path), 0)["close"] == 3700.65  # investing.com's Price is the close


# ------------------------------------------------------------------ broken files
def test_missing_close_column_lists_what_was_found(tmp_path: Path) -> None:
    path = write(tmp_path, "EURUSD.csv", "Date,Open,High,Low\n2017-01-02,1,2,0.5\n")
    with pytest.raises(DataFormatError) as info:
        read_candle_file(path)
    message = str(info.value)
    assert message.startswith("EURUSD.csv: no close column;")
    assert "found ['Date', 'Open', 'High', 'Low']" in message
    assert "need a timestamp column" in message


def test_missing_timestamp_column(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Bar,Open,High,Low,Close\n1,1,2,0.5,1.5\n")
    with pytest.raises(DataFormatError, match=r"no timestamp column; found \['Bar'"):
        read_candle_file(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"Date,Open,High,Low,Close\n", "no data rows"),
        (random.Random(0).randbytes(4096), "binary"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100, "binary"),
        (b"just some text\nwithout separators\n", "no line separated"),
        (b"2017-01-02,1,2,0.5,1.5,3,4,5\n", "no header row and 8 columns"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=match):
        read_candle_file(path)


def test_unparsable_date_cells_keep_their_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        (
            "Date,Open,High,Low,Close\n2017-01-02,1,2,0.5,1.5\n2017-13-45,1,2,0.5,1.5\n"
            ",1,2,0.5,1.5\n2017-01-05,1,2,0.5,1.5\n"
        ),
    )
    frame = read_candle_file(path)
    assert frame.height == 4
    assert frame.filter(pl.col("ts").is_null())["source_row"].to_list() == [2, 3]
    assert frame["ts"][3] == utc(2017, 1, 5)


def test_no_readable_date_at_all(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Date,Open,High,Low,Close\nyesterday,1,2,0.5,1.5\n")
    with pytest.raises(DataFormatError, match=r"no value of column Date reads.*yesterday"):
        read_candle_file(path)


def test_non_numeric_price_cell_is_null(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "Date,Open,High,Low,Close\n2017-01-02,1,abc,0.5,1.5\n2017-01-03,1,2,0.5,1.5\n",
    )
    frame = read_candle_file(path)
    assert frame["high"].to_list() == [None, 2.0]
    assert frame["open"].to_list() == [1.0, 1.0]


@pytest.mark.parametrize("name", ["EURUSD.xlsx", "EURUSD.json", "EURUSD"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "Date,Open,High,Low,Close\n2017-01-02,1,2,0.5,1.5\n")
    with pytest.raises(DataFormatError, match=r"unsupported file type; use .csv"):
        read_candle_file(path)


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not a file"):
        read_candle_file(tmp_path)
    with pytest.raises(DataFormatError, match="no such file"):
        read_candle_file(tmp_path / "missing.csv")


def test_corrupt_parquet_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("Date,Open\n")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        read_candle_file(tmp_path / "x.parquet")
    (tmp_path / "x.csv.gz").write_text("Date,Open\n")
    with pytest.raises(DataFormatError, match="cannot be read"):
        read_candle_file(tmp_path / "x.csv.gz")


def test_unknown_time_zone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Mars/Base"):
        read_candle_file(_backtesting_csv("GOOG.csv"), timezone="Mars/Base")


# ------------------------------------------------------------------ FileBroker
@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    (directory / "1d").mkdir(parents=True)
    shutil.copy(_backtesting_csv("EURUSD.csv"), directory / "EURUSD_1h.csv")
    shutil.copy(_backtesting_csv("GOOG.csv"), directory / "1d" / "goog.csv")
    read_candle_file(_backtesting_csv("BTCUSD.csv")).drop("source_row").write_parquet(
        directory / "btc-usd_1d.parquet"
    )
    (directory / "notes.md").write_text("not data")
    (directory / "EURUSD.csv").write_text("no timeframe in the name: ignored")
    return directory


def test_broker_capabilities_and_settings(data_dir: Path) -> None:
    settings = Settings(files=FilesSettings(directory=data_dir, timezone="Europe/London"))
    broker = create_broker(settings, "files")
    assert isinstance(broker, FileBroker)
    assert (broker.directory, broker.timezone) == (data_dir, "Europe/London")
    assert broker.capabilities.timeframes == tuple(TIMEFRAMES)
    assert not broker.capabilities.needs_credentials and not broker.capabilities.can_trade


def test_broker_fetches_a_half_open_range(data_dir: Path) -> None:
    broker = FileBroker(data_dir)
    frame = broker.fetch_candles("eur/usd", "H1", utc(2017, 4, 19, 10), utc(2017, 4, 19, 13))
    assert frame.drop("source_row").schema == CANDLE_SCHEMA
    assert frame["ts"].to_list() == [utc(2017, 4, 19, h) for h in (10, 11, 12)]
    assert frame["open"][0] == 1.07214
    assert broker.fetch_candles("EURUSD", "1h", utc(2010, 1, 1), utc(2011, 1, 1)).is_empty()


def test_broker_symbol_spellings_and_layouts(data_dir: Path) -> None:
    broker = FileBroker(data_dir)
    assert broker.symbols() == ["BTCUSD", "EURUSD", "GOOG"]
    assert broker.check_symbol("btc_usd") == "BTCUSD"
    btc = broker.fetch_candles("BTC-USD", "1d", utc(2024, 12, 1), utc(2025, 1, 1))
    assert btc["ts"].to_list() == [utc(2024, 12, 31)]
    goog = broker.fetch_candles("Goog", "daily", utc(2013, 2, 28), utc(2013, 3, 2))
    assert goog["close"].to_list() == [801.2, 806.19]


def test_broker_unknown_symbol_names_directory_and_symbols(data_dir: Path) -> None:
    with pytest.raises(UnknownSymbolError) as info:
        FileBroker(data_dir).fetch_candles("GBPUSD", "1h", utc(2017, 1, 1), utc(2018, 1, 1))
    assert str(data_dir) in str(info.value)
    assert "BTCUSD, EURUSD, GOOG" in str(info.value)


def test_broker_missing_timeframe_and_duplicate_files(data_dir: Path) -> None:
    broker = FileBroker(data_dir)
    with pytest.raises(UnsupportedTimeframeError, match=r"no 4h file for EURUSD.*has 1h"):
        broker.fetch_candles("EURUSD", "4h", utc(2017, 5, 1), utc(2017, 6, 1))
    shutil.copy(data_dir / "1d" / "goog.csv", data_dir / "GOOG_1d.csv")
    with pytest.raises(DataFormatError, match="several files"):
        broker.fetch_candles("GOOG", "1d", utc(2013, 1, 1), utc(2013, 2, 1))


def test_broker_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"files\.directory"):
        FileBroker(tmp_path / "nowhere").check_symbol("EURUSD")


def test_broker_rereads_only_changed_files(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import brokers.files

    reads: list[Path] = []
    real = brokers.files.read_candle_file

    def counting(path: Path, *, timezone: str) -> pl.DataFrame:
        reads.append(path)
        return real(path, timezone=timezone)

    monkeypatch.setattr(brokers.files, "read_candle_file", counting)
    broker = FileBroker(data_dir)
    window = (utc(2017, 4, 19), utc(2017, 4, 20))
    before = broker.fetch_candles("EURUSD", "1h", *window)
    broker.fetch_candles("EURUSD", "1h", *window)
    assert len(reads) == 1
    path = data_dir / "EURUSD_1h.csv"
    path.write_text(",Open,High,Low,Close,Volume\n2017-04-19 09:00:00,2,3,1,2.5,7\n")
    os.utime(path, ns=(1, 1))
    after = broker.fetch_candles("EURUSD", "1h", *window)
    assert len(reads) == 2
    assert before.height == 15 and after["close"].to_list() == [2.5]


def test_broker_passes_undated_rows_on_for_quarantine(tmp_path: Path) -> None:
    write(
        tmp_path,
        "XAUUSD_1d.csv",
        "Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1.5\n"
        "garbage,1,2,0.5,1.5\n2020-01-03,1,2,0.5,-1\n",
    )
    frame = FileBroker(tmp_path).fetch_candles("XAUUSD", "1d", utc(2020, 1, 1), utc(2021, 1, 1))
    assert frame["ts"].to_list() == [utc(2020, 1, 2), None, utc(2020, 1, 3)]
    assert frame["source_row"].to_list() == [1, 2, 3]  # the undated row can be found in the file
    assert frame["close"][2] == -1.0  # bad values are left for the store's validator
