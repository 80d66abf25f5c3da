"""Bad input to the candle store, the importer and the configuration, as a hostile user gives it:
each case asserts what happens (stored, quarantined with its reason, refused, or an exit code),
the one-line message, and — where nothing should change — that the store is byte-identical.

Library cases go through the import's own tasks (``read_candles_file``, ``store_candles``); a few
CLI cases run the import flow under the session's Prefect harness."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.config import load_settings
from core.errors import ConfigError
from core.provenance import ImportPolicy, ImportRefusedError
from core.reports import CollectReport
from core.store import STALE_TEMP_SECONDS, CandleStore, write_parquet_atomic
from tasks.collect import read_candles_file, store_candles
from tests.conftest import T0, make_candles

SYMBOL, TF = "EURUSD", "1h"
CANDLES = make_candles(T0, 48)  # what the store holds before each case (where it holds any)
runner = CliRunner()


def _csv(path: Path, frame: pl.DataFrame, *, volume: bool = True) -> Path:
    """``frame`` as a user's CSV with naive timestamps (read as UTC)."""
    columns = ["open", "high", "low", "close", *(["volume"] if volume else [])]
    lines = ["Date," + ",".join(c.capitalize() for c in columns)]
    for row in frame.iter_rows(named=True):
        values = ",".join(repr(float(row[c])) for c in columns)
        lines.append(f"{row['ts']:%Y-%m-%d %H:%M},{values}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _import(home: Path, path: Path, policy: ImportPolicy | None = None) -> CollectReport:
    """What ``import_candles`` does, without the Prefect engine."""
    settings = load_settings(home=home)
    candles = read_candles_file.fn(path, TF, "UTC")
    return store_candles.fn(
        settings.home,
        SYMBOL,
        TF,
        candles,
        source=f"import:{path}",
        keep_forming=True,
        bounds=settings.validation.bounds(SYMBOL),
        policy=policy or ImportPolicy(),
    )


def _snapshot(home: Path) -> dict[str, bytes]:
    """Every store file by path (lock files aside: empty, and created by any writer; the command
    log aside: it records the refusal)."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not {"locks", "logs"} & set(p.relative_to(home).parts)
    }


def _one_line(message: str) -> str:
    assert message.strip() and "\n" not in message.strip(), message
    return message


def _with_row(frame: pl.DataFrame, row: int, **values: float) -> pl.DataFrame:
    rows = frame.to_dicts()
    rows[row].update(values)
    return pl.DataFrame(rows, schema=frame.schema)


def _scaled(frame: pl.DataFrame, row: int, factor: float) -> pl.DataFrame:
    return _with_row(
        frame, row, **{c: frame[c][row] * factor for c in ("open", "high", "low", "close")}
    )


# --------------------------------------------------------------------- rows quarantined, not stored
@dataclass(frozen=True)
class BadRow:
    id: str
    frame: pl.DataFrame  # the file's candles; row 20 is the bad one
    reason: str


BAD_ROWS = [
    BadRow(
        "volume-1e308",
        _with_row(CANDLES, 20, volume=1e308),
        "volume above the plausible maximum 1e+15",
    ),
    BadRow("volume-inf", _with_row(CANDLES, 20, volume=float("inf")), "non-finite volume"),
    BadRow("negative-price", _with_row(CANDLES, 20, low=-1.1), "non-positive price"),
    BadRow(
        "decimal-point-slipped",
        _scaled(CANDLES, 20, 10.0),
        "price jump beyond 1.5x the closes around it",
    ),
    BadRow(
        "wick-to-zero",
        _with_row(CANDLES, 20, low=0.0001),
        "price jump beyond 1.5x the closes around it",
    ),
]


@pytest.mark.parametrize("case", BAD_ROWS, ids=lambda c: c.id)
def test_an_absurd_row_is_quarantined_with_its_reason_never_stored(
    tmp_path: Path, case: BadRow
) -> None:
    home = tmp_path / "home"
    report = _import(home, _csv(tmp_path / "in.csv", case.frame))
    assert (report.new, report.quarantined) == (47, 1)
    quarantine = CandleStore(home).read_quarantine(SYMBOL, TF)
    assert quarantine["reason"].to_list() == [_one_line(case.reason)]
    assert quarantine["source_row"].to_list() == [21]
    stored = CandleStore(home).read(SYMBOL, TF)
    assert case.frame["ts"][20] not in stored["ts"].to_list()
    assert stored["volume"].max() < 1e15 and stored["low"].min() > 1.0


# ----------------------------------------------------------------- imports refused, store untouched
@dataclass(frozen=True)
class Refused:
    id: str
    setup: Callable[[CandleStore], None]  # what the store holds first
    frame: pl.DataFrame  # the file
    message: str  # the refusal, with {n} for the stored candle count where it appears
    volume: bool = True  # the file has a volume column
    policy: ImportPolicy = field(default_factory=ImportPolicy)


def _collected(store: CandleStore) -> None:
    store.upsert(SYMBOL, TF, CANDLES, source="broker:simulated")


def _imported(store: CandleStore) -> None:
    store.upsert(SYMBOL, TF, CANDLES, source="import:/data/first.csv", policy=ImportPolicy())


def _legacy(store: CandleStore) -> None:
    write_parquet_atomic(CANDLES, store.path(SYMBOL, TF))  # stored before provenance existed


REAL = make_candles(T0 + timedelta(days=400), 30, price=1.3)  # another market, years apart

REFUSED = [
    Refused(
        "another-source-into-a-broker-dataset",
        _collected,
        REAL,
        "EURUSD 1h holds 48 candles from broker 'simulated'; this file is another source; nothing "
        "was stored: re-run with --replace to replace them, or import it as another symbol",
    ),
    Refused(
        "into-a-dataset-of-unrecorded-source",
        _legacy,
        REAL,
        "EURUSD 1h holds 48 candles from an unrecorded source (stored before sources were "
        "recorded); this file is another source",
    ),
    Refused(
        "file-without-volume-over-real-volumes",
        _imported,
        CANDLES,
        "EURUSD 1h: this import would change 48 of the stored candles (largest change: volume",
        volume=False,
    ),
    Refused(
        "file-without-volume-after-real-volumes",
        _imported,
        make_candles(T0 + timedelta(hours=48), 10),
        "EURUSD 1h: this file has no volume (all 10 candles 0) but the stored candles have volumes",
        volume=False,
    ),
    Refused(
        "naive-timestamps-shifted-2h",
        _imported,
        CANDLES.with_columns(pl.col("ts") + timedelta(hours=2)),
        "its candles match the stored ones 2 h earlier: check the file's time zone (--tz)",
    ),
    Refused(
        "one-close-corrected",
        _imported,
        _with_row(CANDLES, 30, close=CANDLES["close"][30] * (1 + 1e-6)),
        "this import would change 1 of the stored candles (largest change: close",
    ),
    Refused(
        "replace-with-no-valid-candle",
        _collected,
        REAL.with_columns(low=pl.lit(-1.0)),
        "EURUSD 1h: this file has no valid candle to replace the stored 48 with; nothing was "
        "stored",
        policy=ImportPolicy(replace=True),
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_a_refused_import_leaves_the_store_byte_identical(tmp_path: Path, case: Refused) -> None:
    home = tmp_path / "home"
    case.setup(CandleStore(home))
    before = _snapshot(home)
    path = _csv(tmp_path / "in.csv", case.frame, volume=case.volume)
    with pytest.raises(ImportRefusedError) as refused:
        _import(home, path, case.policy)
    assert case.message in _one_line(str(refused.value))
    assert _snapshot(home) == before


# ----------------------------------------------------------------- accepted: what the user meant
def test_a_shuffled_file_is_sorted_not_quarantined(tmp_path: Path) -> None:
    rows = CANDLES.to_dicts()
    random.Random(9).shuffle(rows)
    report = _import(
        tmp_path / "home", _csv(tmp_path / "in.csv", pl.DataFrame(rows, schema=CANDLES.schema))
    )
    assert (report.new, report.quarantined) == (48, 0)
    assert CandleStore(tmp_path / "home").read(SYMBOL, TF).equals(CANDLES)


def test_a_shuffled_file_still_quarantines_conflicting_duplicates(tmp_path: Path) -> None:
    conflicting = _with_row(CANDLES[7:8], 0, close=CANDLES["close"][7] + 0.0001)
    rows = pl.concat([CANDLES, conflicting]).to_dicts()
    random.Random(3).shuffle(rows)
    report = _import(
        tmp_path / "home", _csv(tmp_path / "in.csv", pl.DataFrame(rows, schema=CANDLES.schema))
    )
    assert (report.new, report.quarantined) == (47, 2)
    assert report.reasons == {"conflicting duplicate timestamp": 2}


def test_replace_and_allow_corrections_take_what_was_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _collected(CandleStore(home))
    replaced = _import(home, _csv(tmp_path / "real.csv", REAL), ImportPolicy(replace=True))
    assert (replaced.new, replaced.rows) == (30, 30)
    corrected = _with_row(REAL, 5, close=REAL["close"][5] * 1.0001)
    report = _import(
        home, _csv(tmp_path / "fix.csv", corrected), ImportPolicy(allow_corrections=True)
    )
    assert report.replaced == 1
    assert CandleStore(home).read(SYMBOL, TF).equals(corrected)
    sources = [r.source for r in CandleStore(home).provenance(SYMBOL, TF).records]
    assert sources == [f"import:{tmp_path / 'real.csv'}", f"import:{tmp_path / 'fix.csv'}"]


def test_a_re_import_within_the_tolerance_is_no_correction(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _imported(CandleStore(home))
    noise = CANDLES.with_columns(pl.col("close") * (1 + 1e-12))  # a CSV round trip's last digit
    report = _import(home, _csv(tmp_path / "again.csv", noise))
    assert report.quarantined == 0 and report.rows == 48


def test_a_stale_temp_file_of_a_killed_write_is_removed_on_the_next_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "candles" / TF
    folder.mkdir(parents=True)
    leftover = folder / f".GBPUSD.parquet.{'0f' * 16}.tmp"
    leftover.write_bytes(b"PAR1 torn")
    old = time.time() - STALE_TEMP_SECONDS - 1
    os.utime(leftover, (old, old))
    _import(home, _csv(tmp_path / "in.csv", CANDLES))
    assert not leftover.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["EURUSD.parquet"]


# ------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ConfigCase:
    id: str
    env: dict[str, str]
    toml: str | None = None
    error: str | None = None  # a fragment of the one-line message; None: it loads
    check: Callable[[dict], bool] | None = None  # on `config show`'s JSON


CONFIG = [
    ConfigCase(
        "env-families-bare",
        {"CANDLEFLOW_TRAINING__FAMILIES": "logreg"},
        check=lambda c: c["training"]["families"] == ["logreg"],
    ),
    ConfigCase(
        "env-higher-timeframes-bare",
        {"CANDLEFLOW_FEATURES__HIGHER_TIMEFRAMES": "4h"},
        check=lambda c: c["features"]["higher_timeframes"] == ["4h"],
    ),
    ConfigCase(
        "env-list-comma-separated",
        {"CANDLEFLOW_FEATURES__FAMILIES__RETURNS": "1, 24"},
        check=lambda c: c["features"]["families"]["returns"] == [1, 24],
    ),
    ConfigCase(
        "env-table-not-json",
        {"CANDLEFLOW_CCXT__OPTIONS": "timeout=5"},
        error="environment variable CANDLEFLOW_CCXT__OPTIONS (ccxt.options) = 'timeout=5': "
        "not valid JSON",
    ),
    ConfigCase(
        "talib-timeperiod-negative",
        {},
        toml='[features]\nindicators = [{ function = "RSI", params = { timeperiod = -3 } }]\n',
        error="RSI parameter timeperiod = -3: out of range; allowed: whole numbers 2 to 100000",
    ),
    ConfigCase(
        "plausibility-bound-below-1",
        {"CANDLEFLOW_VALIDATION__BY_ASSET_CLASS__FX__MAX_PRICE_JUMP": "0.5"},
        error="validation.by_asset_class.fx.max_price_jump = '0.5': Input should be greater than 1",
    ),
]


@pytest.mark.parametrize("case", CONFIG, ids=lambda c: c.id)
def test_config_values_load_or_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: ConfigCase
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    args = ["config", "show"]
    if case.toml is not None:
        (tmp_path / "my.toml").write_text(case.toml)
        args = ["--config", str(tmp_path / "my.toml"), *args]
    result = runner.invoke(app, args, catch_exceptions=False)
    if case.error is None:
        assert result.exit_code == 0, result.stderr
        assert case.check is not None and case.check(json.loads(result.stdout))
        return
    assert result.exit_code == 2 and result.stdout == ""
    assert case.error in " ".join(_one_line(result.stderr).split())
    with pytest.raises(ConfigError):  # the library says the same
        load_settings(tmp_path / "my.toml" if case.toml else None)


# ------------------------------------------------------------------------- the CLI, end to end
def test_cli_refuses_another_source_with_exit_2_and_the_replace_takes_it(
    tmp_path: Path, prefect_harness: None
) -> None:
    home = tmp_path / "home"
    _collected(CandleStore(home))
    before = _snapshot(home)
    path = _csv(tmp_path / "real.csv", REAL)
    args = ["import", str(path), "--symbol", "eur/usd", "--timeframe", "1h"]
    refused = runner.invoke(app, args, catch_exceptions=False)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "EURUSD 1h holds 48 candles from broker 'simulated'" in _one_line(refused.stderr)
    assert "Traceback" not in refused.stderr
    assert _snapshot(home) == before

    taken = runner.invoke(app, [*args, "--replace", "--json"], catch_exceptions=False)
    assert taken.exit_code == 0, taken.stderr
    assert (json.loads(taken.stdout)["new"], json.loads(taken.stdout)["rows"]) == (30, 30)
    assert CandleStore(home).read(SYMBOL, TF).equals(REAL)


def test_cli_refuses_a_correction_then_takes_it_when_allowed(
    tmp_path: Path, prefect_harness: None
) -> None:
    home = tmp_path / "home"
    _imported(CandleStore(home))
    before = _snapshot(home)
    path = _csv(tmp_path / "noon.csv", CANDLES, volume=False)
    args = ["import", str(path), "--symbol", SYMBOL, "--timeframe", "1h"]
    refused = runner.invoke(app, args, catch_exceptions=False)
    assert refused.exit_code == 2
    message = " ".join(_one_line(refused.stderr).split())
    assert "would change 48 of the stored candles (largest change: volume" in message
    assert "--allow-corrections" in message
    assert _snapshot(home) == before
    taken = runner.invoke(app, [*args, "--allow-corrections", "--json"], catch_exceptions=False)
    assert taken.exit_code == 0, taken.stderr
    assert json.loads(taken.stdout)["replaced"] == 48
