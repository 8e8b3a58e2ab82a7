"""Database engines and sessions.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: every
transaction takes the write lock up front, so two processes never interleave a
read-then-write (SQLite's equivalent of PostgreSQL's ``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from sqlmodel import Session


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (SQLite hands back naive ones)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine; for SQLite, create the file's folder and set WAL mode."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if database in (None, "", ":memory:") else None,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY_OPTION = "pipebot_read_only"


class SessionFactory:
    """Sessions for one database: ``factory()`` reads, ``transaction(factory)`` writes.

    On SQLite, reads begin a deferred transaction (WAL readers never wait) and
    writes take the write lock up front; writers of one process also queue on a
    Python lock, so they wait on each other without SQLite's sleeping busy
    handler (a hot-path latency of milliseconds per collision).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writes = sessionmaker(bind=engine, class_=Session, expire_on_commit=False)
        self._reads = sessionmaker(
            bind=engine.execution_options(**{READ_ONLY_OPTION: True}),
            class_=Session,
            expire_on_commit=False,
        )
        self.write_lock: threading.Lock | None = (
            threading.Lock() if engine.dialect.name == "sqlite" else None
        )

    def __call__(self) -> Session:
        return self._reads()

    def writer(self) -> Session:
        return self._writes()

    @property
    def writer_maker(self) -> sessionmaker[Session]:
        """The factory of write sessions (for session event listeners)."""
        return self._writes


def make_session_factory(engine: Engine) -> SessionFactory:
    return SessionFactory(engine)


@contextmanager
def transaction(factory: SessionFactory) -> Iterator[Session]:
    """One session, one write transaction: committed on success, rolled back on error."""
    lock = factory.write_lock
    if lock is None:
        with factory.writer() as session, session.begin():
            yield session
        return
    with lock, factory.writer() as session, session.begin():
        yield session
