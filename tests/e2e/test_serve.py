"""End to end: the `fascl` commands a person runs, then a real uvicorn process queried over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from index.store import IndexStore
from service.db import make_engine, session_factory, session_scope
from service.repository import register_index
from tests.service.fixtures import make_deployment

FASCL = [sys.executable, "-m", "fascl.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], env: dict) -> str:
    done = subprocess.run(FASCL + args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"fascl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    return make_deployment(tmp_path_factory.mktemp("home"), versions=2)


@pytest.fixture
def server(deployment, database_url, tmp_path):
    env = {
        **os.environ,
        "FASCL_HOME": str(deployment.home),
        "FASCL_DATABASE_URL": database_url,
        "FASCL_INDEX_POLL_SECONDS": "0.5",
        "FASCL_DATASET": "synthetic",
    }
    run(["db", "upgrade"], env)
    assert "40 added" in run(["db", "load-assets"], env)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        register_index(session, IndexStore(deployment.home / "indexes").open_version(deployment.versions[0]))
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        FASCL + ["serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, Path(tmp_path / "server.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("server not ready in 60 s:\n" + Path(tmp_path / "server.log").read_text())
        yield base, factory
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        engine.dispose()


def test_queries_over_http_and_a_hot_swap_by_polling(server, deployment):
    base, factory = server
    with httpx.Client(base_url=base, timeout=10) as http:
        tickers = [a["ticker"] for a in http.get("/assets", params={"limit": 5}).json()["items"]]
        body = http.get(f"/similar/{tickers[0]}", params={"k": 5, "date": "2011-03-01"}).json()
        assert body["query"]["as_of"] == "2011-03-01" and len(body["results"]) == 5
        assert body["index_version"] == deployment.versions[0]
        assert http.get("/similar/NOPE").json()["error"]["code"] == "unknown_ticker"
        batch = http.post("/similar", json={"queries": [{"ticker": t, "k": 2} for t in tickers]}).json()
        assert [len(item["result"]["results"]) for item in batch["results"]] == [2] * 5

        # Publish the second version as active in SQL; the server's poll swaps it in by itself.
        with session_scope(factory) as session:
            register_index(
                session, IndexStore(deployment.home / "indexes").open_version(deployment.versions[1])
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if http.get(f"/similar/{tickers[0]}").json()["index_version"] == deployment.versions[1]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the server did not swap to the newly active index version")
        assert 'index_version="' + deployment.versions[1] in http.get("/metrics").text
