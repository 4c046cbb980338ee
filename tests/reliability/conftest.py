"""Fixtures of the reliability suite: the shared deployment, the databases, and the report row of each test.

See tests/reliability/harness.py for the level (fast under `make test`, full under `make reliability`)
and the tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.databases import POSTGRES_ADMIN_URL, _postgres_database
from tests.reliability.harness import FULL, RESULTS_ENV, Scenario, build_deployment, level, write_result

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"reliability_{report.when}", report)


@pytest.fixture(scope="session")
def reliability_deployment(tmp_path_factory):
    """One real deployment per session: fast, 40 assets over 1.5 years with the last 184 dates
    indexed; full, 500 assets over 3 years with the last 400 dates indexed (200,000 vectors)."""
    home = tmp_path_factory.mktemp("reliability-deployment")
    return build_deployment(
        home,
        assets=level(40, 500),
        years=level(1.5, 3.0),
        index_dates=level(184, 400),
    )


def _require_postgres() -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure: the full run needs the server
        pytest.fail(
            f"the full reliability run needs PostgreSQL at {POSTGRES_ADMIN_URL} (FASCL_TEST_POSTGRES_URL): {exc}"
        )
    finally:
        engine.dispose()


def database_for(kind: str, tmp_path: Path):
    """Yield the URL of an empty database of `kind` (as tests/databases.py): a SQLite file under
    `tmp_path`, or a fresh PostgreSQL database dropped after; PostgreSQL is required at the full level.

    A module whose fast level runs on one backend overrides `database_url` with its own params:

        @pytest.fixture(params=level(["sqlite"], ["sqlite", "postgresql"]))
        def database_url(request, tmp_path):
            yield from database_for(request.param, tmp_path)
    """
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fascl.db'}"
    else:
        if FULL:
            _require_postgres()
        yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each kind, at both levels."""
    yield from database_for(request.param, tmp_path)


@pytest.fixture(scope="session")
def results_path(tmp_path_factory) -> Path:
    """Where report rows go: FASCL_RELIABILITY_RESULTS (make reliability), else a session temp file."""
    given = os.environ.get(RESULTS_ENV)
    return Path(given) if given else tmp_path_factory.getbasetemp() / "reliability-results.jsonl"


@pytest.fixture
def scenario(request, results_path):
    """The test's Scenario; its report row is written at teardown with pytest's outcome."""
    scen = Scenario(nodeid=request.node.nodeid)
    yield scen
    call = getattr(request.node, "reliability_call", None)
    setup = getattr(request.node, "reliability_setup", None)
    report = call if call is not None else setup
    if report is None:
        return
    if hasattr(report, "wasxfail"):
        outcome, message = "xfail", report.wasxfail
    elif report.skipped:
        outcome = "skipped"
        message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    elif report.failed:
        outcome = "failed"
        message = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message)
        if scen.failed:
            message = "; ".join(c.what for c in scen.failed)
    else:
        outcome, message = "passed", ""
    write_result(results_path, scen.row(outcome, message[:2000]))
