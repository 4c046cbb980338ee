"""The service and a database that hangs or is down: queries keep answering from memory, every SQL
call gives up in bounded time, readiness says why, and the service starts and catches up without one.

Real PostgreSQL (a lock held by another session, connections refused by ALLOW_CONNECTIONS false)
and a real index; the app runs in-process with its lifespan and poll."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from catalogue.migrate import upgrade
from catalogue.repository import register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.settings import Settings
from index.store import IndexStore
from market.panel import Panel
from service.app import create_app
from tests.databases import POSTGRES_ADMIN_URL
from tests.service.fixtures import make_deployment

TIMEOUT = 1.0  # the service's database_timeout_seconds in these tests


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    return make_deployment(tmp_path_factory.mktemp("home"), versions=2)


@pytest.fixture
def home(deployment, tmp_path):
    """A private copy of the deployment's store: these tests record what the service served in it."""
    shutil.copytree(deployment.home / "indexes", tmp_path / "indexes")
    return tmp_path


def prepare(url: str, deployment, home, version: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, Panel.load(deployment.panel_path), "synthetic")
        register_index(session, IndexStore(home / "indexes").open_version(version), activate=True)
    engine.dispose()


def settings_for(home, url: str, poll: float = 3600) -> Settings:
    return Settings(home=home, database_url=url, index_poll_seconds=poll, database_timeout_seconds=TIMEOUT)


def set_connections(url: str, allowed: bool) -> None:
    """Refuse (or allow again) every new connection to the database, and end the open ones."""
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
    admin.dispose()


def timed(call, limit: float):
    """Run `call` in a thread; fail if it has not returned within `limit` seconds (a wedged service)."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"no answer within {limit} s: the call is wedged on the database"
    return out["value"], time.monotonic() - started


def wait_for(predicate, limit: float = 20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not reached within {limit} s")


@pytest.mark.postgres
def test_a_lock_held_on_the_table_the_poll_reads_never_wedges_the_service(deployment, home, postgres_url):
    prepare(postgres_url, deployment, home, deployment.versions[0])
    ticker = Panel.load(deployment.panel_path).tickers[0]
    locker = create_engine(postgres_url)
    with TestClient(create_app(settings_for(home, postgres_url))) as client:
        assert client.get("/health/ready").status_code == 200
        with locker.connect() as conn:
            conn.execute(text("LOCK TABLE index_versions IN ACCESS EXCLUSIVE MODE"))  # held until rollback
            reloads = [threading.Thread(target=client.post, args=("/admin/reload",)) for _ in range(4)]
            for thread in reloads:
                thread.start()
            reload, seconds = timed(lambda: client.post("/admin/reload"), 10 * TIMEOUT)
            assert reload.status_code == 503 and seconds < 6 * TIMEOUT, reload.text
            assert reload.json()["error"]["code"] in ("database_unavailable", "refresh_in_progress")
            for path in ("/similar/" + ticker, "/assets", "/dates", "/metrics"):
                response, _ = timed(lambda p=path: client.get(p), 5 * TIMEOUT)
                assert response.status_code == 200, (path, response.text)
            batch, _ = timed(
                lambda: client.post("/similar", json={"queries": [{"ticker": ticker}]}), 5 * TIMEOUT
            )
            assert batch.status_code == 200
            for thread in reloads:
                thread.join(10 * TIMEOUT)
                assert not thread.is_alive()
            ready, _ = timed(lambda: client.get("/health/ready"), 5 * TIMEOUT)
            assert ready.status_code == 503
            assert "the database cannot be read (" in ready.json()["error"]["message"]
            conn.rollback()
        assert client.post("/admin/reload").status_code == 200
        assert client.get("/health/ready").status_code == 200
    locker.dispose()


@pytest.mark.postgres
def test_the_service_starts_without_its_database_and_catches_up(deployment, home, postgres_url):
    """Started during an outage, it serves the version it last served (not the newer, never activated
    one), is not ready and says why; when the database returns a poll makes it ready, no restart."""
    old, newer = deployment.versions
    prepare(postgres_url, deployment, home, old)
    ticker = Panel.load(deployment.panel_path).tickers[0]
    with TestClient(create_app(settings_for(home, postgres_url))) as client:  # serves `old`, remembers it
        assert client.get("/health/ready").json()["index_version"] == old
    assert IndexStore(home / "indexes").latest_version() == newer

    set_connections(postgres_url, allowed=False)
    try:
        with TestClient(create_app(settings_for(home, postgres_url, poll=0.3))) as client:
            answer = client.get(f"/similar/{ticker}")
            assert answer.status_code == 200 and answer.json()["index_version"] == old, answer.text
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            error = ready.json()["error"]
            assert error["detail"]["index_source"] == "disk" and error["detail"]["index_version"] == old
            assert "the database cannot be read" in error["message"]
            assert "serving the last known version from disk" in error["message"]
            assert "127.0.0.1" not in ready.text and make_url(postgres_url).database not in ready.text

            set_connections(postgres_url, allowed=True)
            body = wait_for(lambda: (r := client.get("/health/ready")).status_code == 200 and r.json())
            assert body["index_version"] == old and body["index_source"] == "database"
            assert client.get(f"/similar/{ticker}").status_code == 200
    finally:
        set_connections(postgres_url, allowed=True)


def test_without_any_database_the_newest_version_on_disk_serves(deployment, home):
    """Nothing ever served from this store and no database: the newest version, not ready."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    ticker = Panel.load(deployment.panel_path).tickers[0]
    started = time.monotonic()
    with TestClient(create_app(settings_for(home, url))) as client:
        assert time.monotonic() - started < 30
        answer = client.get(f"/similar/{ticker}")
        assert answer.status_code == 200 and answer.json()["index_version"] == deployment.versions[-1]
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "cannot connect" in ready.json()["error"]["message"]
