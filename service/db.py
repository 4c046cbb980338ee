"""Engine and sessions for the SQL store (SQLite embedded default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


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


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run the migrations up to `revision`: the only way the schema changes."""
    from alembic import command

    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
