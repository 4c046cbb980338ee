"""Engines and sessions of the SQL catalogue (SQLite embedded default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str, *, timeout_seconds: float | None = None) -> Engine:
    """An engine whose connections never wait forever: connecting gives up after
    CONNECT_TIMEOUT_SECONDS, and with `timeout_seconds` (the service) every statement, lock wait and
    pool checkout gives up after that long too, so a hanging database fails a call instead of holding
    a thread. Jobs (migrations, imports) pass none: their statements may legitimately run long."""
    ensure_sqlite_dir(url)
    if url.startswith("sqlite"):
        # SQLite waits for a lock up to its busy timeout; statements on a local file do not hang.
        busy = timeout_seconds if timeout_seconds is not None else 30.0
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # foreign keys are off by default in SQLite
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    connect_args: dict = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    options: dict = {}
    if timeout_seconds is not None:
        ms = max(1, int(timeout_seconds * 1000))
        connect_args["options"] = f"-c statement_timeout={ms} -c lock_timeout={ms}"
        options["pool_timeout"] = timeout_seconds
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session
