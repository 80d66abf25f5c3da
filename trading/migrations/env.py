"""Alembic's environment for the live database, run by ``trading.migrations`` with an open
connection (``config.attributes["connection"]``); the ``sqlalchemy.url`` option serves the alembic
command line and offline SQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

from brokers.execution import EXECUTION_METADATA
from core.db import UTCDateTime
from trading.records import LEDGER_METADATA

# Every table of the live database: the ledger's and the execution broker's.
TARGET_METADATA = [LEDGER_METADATA, EXECUTION_METADATA]


def render_item(kind: str, item: object, autogen: AutogenContext) -> str | bool:
    """Generated revisions name plain SQLAlchemy types: a revision must not change when a
    project type does (UTCDateTime is a DATETIME in the database)."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime()"
    return False


# SQLite cannot alter most of a table in place: "batch" operations copy it instead.
OPTIONS = {
    "target_metadata": TARGET_METADATA,
    "render_as_batch": True,
    "compare_type": True,
    "render_item": render_item,
}


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


config = context.config
connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
