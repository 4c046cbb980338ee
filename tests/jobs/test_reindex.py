"""The nightly reindex job: new bars in, a new active version out, every run recorded."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pandas as pd
from rich.console import Console
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from catalogue.migrate import upgrade
from catalogue.models import Asset, ReindexRun
from catalogue.repository import active_index, register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.jobs.reindex import next_run, run_reindex
from fascl.settings import Settings
from index.build import BuildResult, build_version
from index.store import IndexStore
from market.panel import Panel
from tests.service.fixtures import Deployment, make_deployment


@dataclass
class Yesterday:
    """A deployment whose panel and active index stop some trading days before its market's end."""

    deployment: Deployment
    full: Panel  # the whole market, the days to come included
    store: IndexStore
    first: BuildResult  # the active version
    engine: Engine
    factory: sessionmaker
    settings: Settings


def deployment_behind(tmp_path, database_url, behind: int, *, clean: bool = True) -> Yesterday:
    """Yesterday's panel: everything but the last `behind` trading days (`full` loaded with or
    without its recorded corrections); the live index covers it from 2011-01-03, and the migrated
    database holds its assets with that version active."""
    deployment = make_deployment(tmp_path / "home", versions=0)
    full = Panel.load(deployment.panel_path, clean=clean)
    truth = (deployment.panel_path / "truth.npz").read_bytes()
    full.slice_dates(end=full.dates[-behind - 1]).save(
        deployment.panel_path, extra_files={"truth.npz": truth}
    )
    store = IndexStore(deployment.home / "indexes")
    first = build_version(
        deployment.checkpoint,
        Panel.load(deployment.panel_path),
        start="2011-01-03",
        store=store,
        data_source=str(deployment.panel_path),
        progress=False,
    )
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        upsert_assets(session, Panel.load(deployment.panel_path), "synthetic")
        register_index(session, store.open_version(first.version))
    settings = Settings(home=deployment.home, database_url=database_url)
    return Yesterday(deployment, full, store, first, engine, factory, settings)


def test_reindex_adds_new_dates_and_records_each_run(tmp_path, database_url):
    live = deployment_behind(tmp_path, database_url, behind=10)
    deployment, full, store, first = live.deployment, live.full, live.store, live.first
    engine, factory, settings = live.engine, live.factory, live.settings
    cut = full.dates[-11]
    quiet = Console(quiet=True)

    # Tonight's bars arrive as a long file, without metadata, with one newly listed ticker (whose
    # metadata comes in an assets file); the job imports them, indexes the new dates and flips.
    source = tmp_path / "bars.parquet"
    listed = full.to_long()
    # (listed tonight: no 64-day window yet, so the dates already indexed are unchanged)
    newcomer = listed[(listed["ticker"] == full.tickers[0]) & (listed["date"] > cut)].assign(ticker="ZNEW")
    pd.concat([listed, newcomer]).to_parquet(source)
    assets_file = tmp_path / "new_assets.csv"
    assets_file.write_text("ticker,name,sector,industry,exchange\nZNEW,Newco,Energy,Oil,NYSE\n")
    outcome = run_reindex(settings, source=source, assets=assets_file, console=quiet)
    assert outcome.status == "succeeded", outcome.message
    assert outcome.dates_added == 10
    new = store.open_version(outcome.index_version)
    assert new.manifest["dates"][0] == "2011-01-03" and new.manifest["dates"][-1] == str(full.dates[-1])
    # Incremental: only tonight's dates went through the model; the rest are the live version's files.
    assert new.manifest["build"]["embedded_dates"] == 10
    assert new.manifest["build"]["reused_dates"] == first.n_dates == len(new.manifest["dates"]) - 10
    assert "10 embedded" in outcome.message
    with factory() as session:
        assert active_index(session).version == outcome.index_version

    check_metadata_survived(deployment, full, new, factory, database_url)

    again = run_reindex(settings, console=quiet)
    assert again.status == "up_to_date" and again.index_version == outcome.index_version

    # A broken delivery fails the run and leaves the served version as it was.
    bad = tmp_path / "bad.csv"
    bad.write_text("date,ticker,close\nnot-a-date,AAA,1\n")
    failed = run_reindex(settings, source=bad, console=quiet)
    assert failed.status == "failed" and "date" in failed.message
    with factory() as session:
        assert active_index(session).version == outcome.index_version
        runs = session.scalars(select(ReindexRun).order_by(ReindexRun.id)).all()
    assert [r.status for r in runs] == ["succeeded", "up_to_date", "failed"]
    assert all(r.finished_at is not None for r in runs) and runs[0].dates_added == 10
    engine.dispose()


def check_metadata_survived(deployment, full, new, factory, database_url):
    """Names, sectors, industries and exchanges are those of before the re-import, in the panel, in
    SQL, in the new version and over HTTP; the synthetic ground truth is still there."""
    columns = ["ticker", "name", "sector", "industry", "exchange"]
    expected = full.assets[columns].set_index("ticker")
    assert (expected["sector"] != "").all()
    panel = Panel.load(deployment.panel_path)
    got = panel.assets[columns].set_index("ticker")
    pd.testing.assert_frame_equal(got.loc[expected.index], expected)
    assert got.loc["ZNEW"].tolist() == ["Newco", "Energy", "Oil", "NYSE"]
    assert (deployment.panel_path / "truth.npz").exists()
    with factory() as session:
        rows = {a.ticker: [a.name, a.sector, a.industry, a.exchange] for a in session.scalars(select(Asset))}
    assert {t: rows[t] for t in expected.index} == {t: list(r) for t, r in expected.iterrows()}
    assert rows["ZNEW"] == ["Newco", "Energy", "Oil", "NYSE"]
    indexed = pd.DataFrame(new.manifest["tickers"]).set_index("ticker")
    assert (indexed["sector"] != "").all()

    query, sector = expected.index[0], expected["sector"].iloc[0]
    other = sorted(set(expected["sector"]) - {sector})[0]
    with serving(deployment.home, database_url) as base:
        same = httpx.get(f"{base}/similar/{query}", params={"sector": sector, "k": 3}, timeout=10)
        assert same.status_code == 200, same.text
        assert {p["sector"] for p in same.json()["results"]} == {sector}
        apart = httpx.get(
            f"{base}/similar/{query}", params={"exclude_same_sector": "true", "k": 5}, timeout=10
        )
        assert apart.status_code == 200, apart.text
        assert sector not in {p["sector"] for p in apart.json()["results"]}
        assert httpx.get(f"{base}/similar/{query}", params={"sector": other}, timeout=10).status_code == 200


@contextlib.contextmanager
def serving(home, database_url):
    """A real `fascl serve` process on a free port, answering from the active version."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FASCL_HOME": str(home), "FASCL_DATABASE_URL": database_url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "fascl.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "fascl serve did not get ready"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_next_run_is_the_next_occurrence_of_the_time_of_day():
    now = pd.Timestamp("2024-03-05 01:30", tz="UTC").to_pydatetime()
    assert next_run("02:00", now) == pd.Timestamp("2024-03-05 02:00", tz="UTC").to_pydatetime()
    assert next_run("01:00", now) == pd.Timestamp("2024-03-06 01:00", tz="UTC").to_pydatetime()
    try:
        next_run("25:00", now)
    except ValueError as exc:
        assert "HH:MM" in str(exc)
    else:
        raise AssertionError("an impossible time of day was accepted")


def test_reindex_without_a_database_fails_cleanly(tmp_path):
    settings = Settings(
        home=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:5432/fascl_no_such_db"
    )
    outcome = run_reindex(settings, console=Console(quiet=True))
    assert outcome.status == "failed" and "database is unreachable" in outcome.message
    assert "fascl_no_such_db" in outcome.message and outcome.index_version is None


def test_runs_left_running_by_a_dead_process_are_marked_abandoned(tmp_path, database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    host = socket.gethostname()
    long_ago = pd.Timestamp.now(tz="UTC").to_pydatetime() - pd.Timedelta(days=3)
    with session_scope(factory) as session:
        session.add_all(
            [
                ReindexRun(status="running", pid=dead.pid, host=host),  # killed
                ReindexRun(status="running", pid=os.getpid(), host=host),  # still running
                ReindexRun(status="running", pid=1, host="elsewhere"),  # another host, recent
                ReindexRun(status="running", started_at=long_ago),  # no pid recorded, days old
            ]
        )
    outcome = run_reindex(Settings(home=tmp_path, database_url=database_url), console=Console(quiet=True))
    assert outcome.status == "failed" and "no panel" in outcome.message
    with factory() as session:
        runs = session.scalars(select(ReindexRun).order_by(ReindexRun.id)).all()
    assert [r.status for r in runs] == ["abandoned", "running", "running", "abandoned", "failed"]
    assert f"pid {dead.pid} on {host}" in runs[0].message and runs[0].finished_at is not None
    assert runs[-1].pid == os.getpid() and runs[-1].host == host
    engine.dispose()


def test_reindex_status_lists_recent_runs_with_the_abandoned_ones_marked(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fascl.cli.main import app
    from fascl.settings import get_settings

    url = f"sqlite:///{tmp_path / 'fascl.db'}"
    upgrade(url)
    engine = make_engine(url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with session_scope(session_factory(engine)) as session:
        session.add(ReindexRun(status="succeeded", index_version="v-1", dates_added=3, message="indexed"))
        session.add(ReindexRun(status="running", pid=dead.pid, host=socket.gethostname()))
    engine.dispose()
    monkeypatch.setenv("FASCL_HOME", str(tmp_path))
    monkeypatch.setenv("FASCL_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["reindex", "--status"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("abandoned" in line and str(dead.pid) in line for line in lines), result.output
    assert any("succeeded" in line and "v-1" in line for line in lines), result.output
