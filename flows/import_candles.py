"""Import a user's CSV/Parquet candle file into the store through the same validation and upsert
as ``collect``: bad rows are quarantined with their reasons and file row numbers. An import into
a dataset of another source, or one that would change stored candles, is refused (nothing is
written) unless ``replace`` / ``allow_corrections``."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from core.config import Settings, load_settings
from core.provenance import ImportPolicy
from core.reports import CollectReport
from core.symbols import normalize_symbol
from core.timeframes import parse_timeframe
from flows._fanout import publish_table
from tasks.collect import read_candles_file, store_candles


@flow(name="import-candles")
def import_candles(
    file: str,
    symbol: str,
    timeframe: str,
    timezone: str | None = None,
    home: str | None = None,
    config: str | None = None,
    settings: Settings | None = None,
    replace: bool = False,
    allow_corrections: bool = False,
) -> CollectReport:
    """Validate and store ``file`` as ``symbol`` × ``timeframe``. ``replace``: the file's
    candles take the place of every stored one (also of another source); ``allow_corrections``:
    the file may change stored candles."""
    settings = settings or load_settings(config, home)
    path = Path(file).expanduser().resolve()
    symbol, tf = normalize_symbol(symbol), parse_timeframe(timeframe).name
    candles = read_candles_file(path, tf, timezone or settings.files.timezone)
    row = store_candles(
        settings.home,
        symbol,
        tf,
        candles,
        source=f"import:{path}",
        keep_forming=True,
        bounds=settings.validation.bounds(symbol),
        policy=ImportPolicy(replace=replace, allow_corrections=allow_corrections),
    )
    publish_table("import-report", [row], f"Imported {path.name}")
    return row


if __name__ == "__main__":
    import sys

    import_candles(*sys.argv[1:4])
