"""End to end: the `fascl` commands a person runs, then a real uvicorn process queried over HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from catalogue.repository import register_index
from catalogue.sessions import make_engine, session_factory, session_scope
from index.store import IndexStore
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


@contextlib.contextmanager
def serving(deployment, database_url, log_file: Path, *args: str):
    """`fascl serve` in a real process on a free port, the first version active; yields (base URL, sessions)."""
    env = {
        **os.environ,
        "FASCL_HOME": str(deployment.home),
        "FASCL_DATABASE_URL": database_url,
        "FASCL_INDEX_POLL_SECONDS": "0.5",
        "FASCL_DATASET": "synthetic",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run(["db", "upgrade"], env)
    assert "40 added" in run(["db", "load-assets"], env)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        register_index(session, IndexStore(deployment.home / "indexes").open_version(deployment.versions[0]))
    port = free_port()
    log = open(log_file, "w")  # noqa: SIM115 - closed in finally, after the process
    process = subprocess.Popen(
        FASCL + ["serve", "--port", str(port), *args], env=env, stdout=log, stderr=subprocess.STDOUT
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
            assert process.poll() is None, log_file.read_text()
            time.sleep(0.2)
        else:
            pytest.fail("server not ready in 60 s:\n" + log_file.read_text())
        yield base, factory
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        engine.dispose()


@pytest.fixture
def server(deployment, database_url, tmp_path):
    with serving(deployment, database_url, tmp_path / "server.log") as running:
        yield running


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


def request_count(metrics_text: str, route: str) -> int:
    pattern = rf'fascl_request_seconds_count\{{[^}}]*route="{re.escape(route)}"[^}}]*status="200"[^}}]*\}} ([0-9.e+]+)'
    return int(sum(float(v) for v in re.findall(pattern, metrics_text)))


def test_metrics_add_up_over_several_workers(deployment, database_url, tmp_path):
    """Two workers answer the requests; every scrape, whichever worker serves it, counts all of them."""
    with serving(deployment, database_url, tmp_path / "server.log", "--workers", "2") as (base, _):
        # A fresh connection per request: the kernel spreads them over both workers' accepts.
        tickers = [a["ticker"] for a in httpx.get(f"{base}/assets", params={"limit": 10}).json()["items"]]
        for i in range(60):
            assert httpx.get(f"{base}/similar/{tickers[i % 10]}", params={"k": 3}).status_code == 200
        # A worker records a request just after sending its response: give the last one a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if request_count(httpx.get(f"{base}/metrics").text, "/similar/{ticker}") == 60:
                break
            time.sleep(0.05)
        scrapes = [httpx.get(f"{base}/metrics").text for _ in range(10)]
    assert all(request_count(text, "/similar/{ticker}") == 60 for text in scrapes), [
        request_count(text, "/similar/{ticker}") for text in scrapes
    ]
    assert all('fascl_index_info{index_version="' + deployment.versions[0] in text for text in scrapes)
