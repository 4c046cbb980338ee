"""One run at a time: the lock the jobs that write the active index (reindex, retrain) hold for
their whole run. They share it: both publish versions and flip the active one.

PostgreSQL: a session-level advisory lock on a connection held open for the run. SQLite: an
exclusive `flock` on a file beside the database file. Both belong to the process: when it dies,
even by SIGKILL, the server (its connection closed) or the kernel (its file descriptors closed)
releases the lock, so the next run never waits for a dead one and needs no cleanup."""

from __future__ import annotations

import fcntl
import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from catalogue.sessions import ensure_sqlite_dir, make_engine
from fascl.jobs.errors import JobError


class RunLocked(JobError):
    """Another run of the same job holds the lock."""


WRITER = "index-writer"  # the one lock of the jobs that publish and activate versions


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key: fixed per lock name, the same in every process."""
    return zlib.crc32(f"fascl:{name}".encode())


def _sqlite_lock_file(url: str, name: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise JobError(f"an in-memory SQLite database cannot hold the {name} lock; use a file")
    return Path(database).with_name(f"{Path(database).name}.{name}.lock")


@contextmanager
def run_lock(database_url: str, job: str, name: str = WRITER) -> Iterator[None]:
    """Hold the `name` lock for the body of `job`, or raise RunLocked at once (no waiting): a second
    concurrent run is refused, not queued."""
    refusal = (
        f"another reindex or retrain run is in progress; this {job} run changed nothing. Wait for it "
        "to finish (`fascl reindex --status` lists the reindex runs)"
    )
    if url_is_sqlite(database_url):
        path = _sqlite_lock_file(database_url, name)
        ensure_sqlite_dir(database_url)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(refusal) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
        return
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            key = lock_key(name)
            if not conn.scalar(text("select pg_try_advisory_lock(:key)"), {"key": key}):
                raise RunLocked(refusal)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("select pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
    finally:
        engine.dispose()


def url_is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"
