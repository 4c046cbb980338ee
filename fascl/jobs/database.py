"""The jobs' connection to the SQL catalogue: one engine per job, disposed when it ends.

Jobs pass no statement timeout (catalogue.sessions.make_engine): an import or a migration may
legitimately run long, unlike a request of the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from catalogue.sessions import make_engine, session_factory
from fascl.settings import Settings


@contextmanager
def catalogue_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the catalogue named by the settings, for the length of a job."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
