"""Generic SQLAlchemy helpers shared by the databases: a portable UTC datetime column type
and an engine factory with sensible SQLite defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine

from core.timeframes import as_utc


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, stored as naive UTC: the same on SQLite (which keeps no
    time zone) and PostgreSQL, so comparisons and ordering agree across databases."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file its folder is created and writers wait (up to
    30 s) for one another instead of failing at once."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    database = sa_url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": 30})
    # In memory: every connection must see the same database.
    return sa.create_engine(url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False})
