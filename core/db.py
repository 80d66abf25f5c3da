"""Generic SQLAlchemy helpers shared by the databases: a portable UTC datetime column type, an
engine factory with sensible SQLite defaults, and where a SQLite database's lock file lives."""

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


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The file of a SQLite database URL (None: another database, or one in memory)."""
    sa_url = sa.make_url(url)
    database = sa_url.database or ""
    if sa_url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database).expanduser()


def lock_file(url: str | sa.URL) -> Path | None:
    """The file beside a SQLite database that processes lock to change its schema one at a time
    (None: no file to put it beside)."""
    path = sqlite_file(url)
    return None if path is None else path.with_name(path.name + ".lock")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file its folder is created and writers wait (up to
    30 s) for one another instead of failing at once."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    path = sqlite_file(sa_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": 30})
    # In memory (or a "file:" URI): every connection must see the same database.
    return sa.create_engine(url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False})
