"""The live database's migrations: a database made before them keeps its rows and reaches head
when the ledger opens it, the head is the schema in code (a table changed without a revision
fails here), the baseline is what the previous code made, and processes opening one new database
at once migrate it once."""

from __future__ import annotations

import multiprocessing
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from brokers.execution import EXECUTION_METADATA
from trading import migrations
from trading.ledger import Ledger
from trading.migrations import MigrationError
from trading.records import LEDGER_METADATA

PRE_ALEMBIC = Path(__file__).with_name("live_db_pre_alembic.sql")
TS = datetime(2024, 1, 2, 20, tzinfo=UTC)


def _statements(sql: str) -> list[str]:
    """The DDL statements of a script, whitespace normalised, comments left out."""
    text = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def _old_database(path: Path) -> str:
    """A live database as the code before migrations left it, with rows in its tables."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    try:
        raw.executescript(PRE_ALEMBIC.read_text())
        raw.executescript(
            """
            INSERT INTO signals (symbol, timeframe, ts, model_name, model_version, shadow, status,
                action, probability, components, created_at, updated_at)
            VALUES ('EURUSD', '1h', '2024-01-02 20:00:00.000000', 'candleflow.EURUSD.1h', '3', 0,
                'OK', 1, 0.61, '{"reasons": ["kept"]}', '2024-01-02 21:00:00.000000',
                '2024-01-02 21:00:00.000000');
            INSERT INTO orders (order_id, symbol, timeframe, ts, model_version, side, quantity,
                status, broker, dry_run, created_at, updated_at)
            VALUES ('cf-1', 'EURUSD', '1h', '2024-01-02 20:00:00.000000', '3', 1, 10.0,
                'SUBMITTED', 'paper', 0, '2024-01-02 21:00:00.000000',
                '2024-01-02 21:00:00.000000');
            INSERT INTO paper_accounts (account, currency, initial_balance, balance,
                day_start_equity, peak_equity, updated_at)
            VALUES ('paper', 'USD', 1000.0, 987.5, 1000.0, 1000.0, '2024-01-02 21:00:00.000000');
            """
        )
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return url


def _revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.current(conn)


def _differences(engine: sa.Engine, *metadata: sa.MetaData) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, list(metadata))


def test_a_database_made_before_migrations_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    url = _old_database(tmp_path / "live.db")
    assert _revision(sa.create_engine(url)) is None  # no alembic_version table

    ledger = Ledger(url)
    assert _revision(ledger.engine) == migrations.head()
    (signal,) = ledger.signals().to_dicts()
    assert (signal["symbol"], signal["ts"], signal["probability"]) == ("EURUSD", TS, 0.61)
    assert signal["components"] == '{"reasons": ["kept"]}'
    (order,) = ledger.orders().to_dicts()
    assert (order["order_id"], order["status"], order["quantity"]) == ("cf-1", "SUBMITTED", 10.0)
    with ledger.engine.connect() as conn:
        balance = conn.execute(sa.text("SELECT balance FROM paper_accounts")).scalar_one()
    assert balance == 987.5
    assert _differences(ledger.engine, LEDGER_METADATA, EXECUTION_METADATA) == []
    ledger.dispose()
    assert Ledger(url).signals().height == 1  # opened again: nothing to do, nothing lost


def test_the_migrations_head_is_the_schema_in_code(tmp_path: Path) -> None:
    """Fails when a table of trading.records or brokers.execution changes without a revision:
    write one with ``python -m trading.migrations "what changed"``."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    assert migrations.upgrade(engine) and _revision(engine) == migrations.head()
    assert _differences(engine, LEDGER_METADATA, EXECUTION_METADATA) == []
    # The comparison sees a change: the schema in code with one more column.
    changed = sa.MetaData()
    for table in LEDGER_METADATA.tables.values():
        table.to_metadata(changed)
    changed.tables["signals"].append_column(sa.Column("note", sa.Text))
    (difference,) = _differences(engine, changed, EXECUTION_METADATA)
    assert difference[0] == "add_column" and difference[3].name == "note"


def test_the_baseline_is_the_schema_the_previous_code_made(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0001")
    with engine.connect() as conn:
        made = conn.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        ).all()
    ddl = {" ".join(sql.split()) for name, sql in made if name != "alembic_version"}
    assert ddl == set(_statements(PRE_ALEMBIC.read_text()))


def test_a_half_made_database_gets_the_missing_tables(tmp_path: Path) -> None:
    """The execution broker alone (``PaperBroker.create_all``) made its tables first."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'live.db'}")
    EXECUTION_METADATA.create_all(engine)
    ledger = Ledger(str(engine.url))
    assert {"signals", "orders", "risk_events"} <= set(sa.inspect(ledger.engine).get_table_names())
    assert _differences(ledger.engine, LEDGER_METADATA, EXECUTION_METADATA) == []


def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    Ledger(url).dispose()
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(MigrationError, match="revision f00d, which this candleflow does not"):
        Ledger(url)


def test_an_in_memory_ledger_has_its_tables() -> None:
    ledger = Ledger("sqlite://")
    assert _revision(ledger.engine) == migrations.head()
    assert ledger.signals().is_empty() and ledger.orders().is_empty()


def _open(url: str) -> str | None:
    ledger = Ledger(url)
    return _revision(ledger.engine)


def test_processes_opening_one_new_database_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        revisions = pool.map(_open, [url] * 8)
    assert revisions == [migrations.head()] * 8
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    assert (tmp_path / "live.db.lock").exists()


def test_migration_file_names_follow_their_revision() -> None:
    """``NNNN_slug.py`` with ``revision = "NNNN"``: the next one is numbered after it."""
    for path in (migrations.FOLDER / "versions").glob("*.py"):
        number = re.match(r"(\d{4})_", path.name)
        assert number and f'revision = "{number[1]}"' in path.read_text(), path.name
