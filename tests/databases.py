"""Databases for the tests: a real SQLite file and a real, freshly created PostgreSQL database."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

POSTGRES_ADMIN_URL = os.environ.get(
    "FASCL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_database():
    """Create a uniquely named database on the test server; yield its URL; drop it after."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means the server is not there
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required in CI and unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} unreachable (set FASCL_TEST_POSTGRES_URL): {exc}")
    name = f"fascl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each kind; the test runs once against each."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fascl.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database alone, for tests that need a server they can take away."""
    yield from _postgres_database()
