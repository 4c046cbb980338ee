"""fascl.client against real `fascl serve` processes on free ports: one serving the sample
deployment with API keys required, one with no index yet (503 `no_index`), and plain sockets that
refuse or never answer. Nothing is mocked: every call goes over HTTP to a real server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import fascl.client as fc
from catalogue.migrate import upgrade
from catalogue.repository import create_api_key, register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.client import (
    ApiError,
    AsyncClient,
    Client,
    FasclError,
    Forbidden,
    InvalidDate,
    InvalidRequest,
    NoData,
    ServiceUnavailable,
    Unauthorized,
    UnknownTicker,
    UnknownValue,
)
from index.store import IndexStore
from market.panel import Panel
from tests.service.fixtures import make_deployment

FASCL = [sys.executable, "-m", "fascl.cli.main"]
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(home: Path, database_url: str, log_file: Path, wait: str, **env: str):
    """`fascl serve` on a free port; yields its base URL once `wait` (a /health path) answers 200."""
    environ = {
        **os.environ,
        "FASCL_HOME": str(home),
        "FASCL_DATABASE_URL": database_url,
        "FASCL_DATASET": "synthetic",
        "FASCL_WORKERS": "1",
        **env,
    }
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    log = open(log_file, "w")  # noqa: SIM115 - closed in finally, after the process
    process = subprocess.Popen(
        FASCL + ["serve", "--port", str(port), "--log-level", "warning"],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + wait, timeout=1).status_code == 200:
                    break
            assert process.poll() is None, log_file.read_text()
            time.sleep(0.1)
        else:
            pytest.fail("server not up in 60 s:\n" + log_file.read_text())
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    return make_deployment(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def panel(deployment):
    return Panel.load(deployment.panel_path)


@pytest.fixture(scope="module")
def keys(deployment, panel, tmp_path_factory):
    """A migrated SQLite catalogue with the assets, the version active and API keys; (url, keys)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'fascl.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, panel, "synthetic")
        register_index(session, IndexStore(deployment.home / "indexes").open_version(deployment.versions[0]))
        made = {
            "read": create_api_key(session, "reader", ["read"]),
            "admin": create_api_key(session, "admin-only", ["admin"]),
        }
    engine.dispose()
    return url, made


@pytest.fixture(scope="module")
def server(deployment, keys, tmp_path_factory):
    """The sample deployment served with API keys required: its base URL."""
    url, _ = keys
    log = tmp_path_factory.mktemp("log") / "server.log"
    env = {"FASCL_REQUIRE_API_KEY": "true", "FASCL_INDEX_POLL_SECONDS": "3600"}
    with serving(deployment.home, url, log, "/health/ready", **env) as base:
        yield base


@pytest.fixture(scope="module")
def key(keys):
    return keys[1]["read"]


@pytest.fixture(scope="module")
def http(server, key):
    """The JSON API itself, for comparison."""
    with httpx.Client(base_url=server, headers={"X-API-Key": key}, timeout=10) as http:
        yield http


@pytest.fixture
def client(server, key):
    with Client(server, api_key=key, retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A service with nothing to serve yet (no version on disk, none in SQL), polling every 0.2 s:
    every query answers 503 `no_index` until a version appears in its store. (base URL, home)."""
    home = tmp_path_factory.mktemp("bare")
    url = f"sqlite:///{home / 'fascl.db'}"
    upgrade(url)
    with serving(home, url, home / "server.log", "/health/live", FASCL_INDEX_POLL_SECONDS="0.2") as base:
        yield base, home


def answered(base: str, status: int, route: str = "/similar/{ticker}", headers=None) -> int:
    """How many requests to `route` the server has answered with `status`, from its /metrics."""
    text = httpx.get(f"{base}/metrics", headers=headers, timeout=5).text
    pattern = rf'fascl_request_seconds_count\{{[^}}]*route="{re.escape(route)}"[^}}]*status="{status}"[^}}]*\}} ([0-9.e+]+)'
    return int(sum(float(v) for v in re.findall(pattern, text)))


def settled(count, expected: int) -> int:
    """`count()` once it reaches `expected` (a server records a request just after answering it)."""
    deadline = time.monotonic() + 5
    while (value := count()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# ------------------------------------------------------------------------------------ answers
def test_similar_equals_the_json_api(client, http, panel):
    ticker = panel.tickers[5]
    expected = http.get(f"/similar/{ticker}", params={"date": "2011-02-15", "k": 7}).json()
    frame = client.similar(ticker, "2011-02-15", k=7)
    assert list(frame.columns) == ["rank", "ticker", "name", "sector", "industry", "exchange", "score"]
    assert frame["ticker"].tolist() == [r["ticker"] for r in expected["results"]]
    assert frame["score"].tolist() == [r["score"] for r in expected["results"]]
    assert frame["rank"].tolist() == list(range(1, 8))
    assert frame["name"].tolist() == [r["name"] for r in expected["results"]]
    assert frame.attrs["as_of"] == dt.date(2011, 2, 15) and frame.attrs["ticker"] == ticker
    assert frame.attrs["query"] == expected["query"]
    assert frame.attrs["index_version"] == expected["index_version"]
    # A datetime.date, the raw answer, and the newest date by default.
    assert client.similar(ticker, dt.date(2011, 2, 15), k=7, raw=True) == expected
    # Values read from a DataFrame: numpy scalars and dates.
    assert client.similar(ticker, np.datetime64("2011-02-15"), k=np.int64(7), raw=True) == expected
    assert client.similar_many([(ticker, pd.Timestamp("2011-02-15"), np.int64(7))], raw=True)[0] == expected
    newest = client.similar(ticker)
    assert len(newest) == 10 and newest.attrs["requested_date"] is None
    assert newest.attrs["as_of"] == client.dates()[-1]


def test_similar_filters_and_realised_correlations(client, http, panel):
    ticker = panel.tickers[2]
    sector = panel.assets["sector"].value_counts().index[0]
    params = {"sector": sector, "k": 3, "date": "2011-01-14", "include_realized": "true"}
    expected = http.get(f"/similar/{ticker}", params=params).json()
    frame = client.similar(ticker, "2011-01-14", 3, sector=sector, include_realized=True)
    assert frame["realized_correlation"].tolist() == [r["realized_correlation"] for r in expected["results"]]
    assert set(frame["sector"]) == {sector}
    own = client.similar(ticker, exclude_same_sector=True, k=5)
    assert own.attrs["query"]["sector"] not in set(own["sector"])
    among = panel.tickers[10:20].tolist()
    assert set(client.similar(ticker, among=among, k=5)["ticker"]) <= set(among)
    # Nothing above the cut: an empty frame that still has its columns.
    empty = client.similar(ticker, min_score=1.0, k=5)
    assert empty.empty and "score" in empty.columns


def test_a_universe_too_long_for_a_url_goes_by_post(client, panel):
    ticker = panel.tickers[0]
    universe = panel.tickers[1:].tolist()
    long = universe * (fc.MAX_AMONG_GET // len(",".join(universe)) + 2)  # repeats: the same universe
    assert len(",".join(long)) > fc.MAX_AMONG_GET
    by_post = client.similar(ticker, "2011-03-01", 5, among=long)
    by_get = client.similar(ticker, "2011-03-01", 5, among=universe)
    pd.testing.assert_frame_equal(by_post, by_get)
    with pytest.raises(UnknownValue) as caught:
        client.similar(ticker, among=[*long, "NOPE"])
    assert caught.value.code == "unknown_tickers"


def test_similar_many_returns_a_frame_or_the_error_per_query(client, panel):
    t0, t1 = panel.tickers[0], panel.tickers[1]
    out = client.similar_many(
        [
            (t0, "2011-03-01", 3),
            {"ticker": "NOPE", "k": 3},
            {"ticker": t1, "date": "2011-02-31"},
            {"ticker": t1, "date": dt.date(2011, 3, 1), "sector": "Astrology"},
            t1,
        ]
    )
    assert len(out) == 5
    pd.testing.assert_frame_equal(out[0], client.similar(t0, "2011-03-01", 3))
    assert isinstance(out[1], UnknownTicker) and out[1].status == 404 and "close_matches" in out[1].detail
    assert isinstance(out[2], InvalidDate) and out[2].status == 422
    assert isinstance(out[3], UnknownValue) and out[3].code == "unknown_sector"
    assert len(out[4]) == 10
    raw = client.similar_many([{"ticker": t0, "k": 2}], raw=True)
    assert [r["rank"] for r in raw[0]["results"]] == [1, 2]
    # The batch itself malformed: raised, not per item.
    with pytest.raises(InvalidRequest):
        client.similar_many([{"ticker": t0, "k": 500}])
    with pytest.raises(InvalidRequest):
        client.similar_many([{"ticker": t0, "colour": "red"}])


def test_more_queries_than_a_batch_holds_go_in_several_calls(client, panel):
    queries = [(panel.tickers[i % 40], None, 1) for i in range(fc.MAX_BATCH + 5)]
    out = client.similar_many(queries)
    assert len(out) == fc.MAX_BATCH + 5
    assert [f.attrs["ticker"] for f in out[-5:]] == [
        panel.tickers[i % 40] for i in range(fc.MAX_BATCH, fc.MAX_BATCH + 5)
    ]


def test_assets_pages_through_the_universe(client, http, panel, monkeypatch):
    monkeypatch.setattr(fc, "ASSET_PAGE", 7)  # six pages of the 40 assets
    frame = client.assets()
    assert frame["ticker"].tolist() == panel.tickers.tolist()
    assert list(frame.columns) == [
        "ticker",
        "name",
        "sector",
        "industry",
        "exchange",
        "first_date",
        "last_date",
    ]
    assert isinstance(frame["first_date"].iloc[0], dt.date)
    sector = panel.assets["sector"].iloc[3]
    expected = http.get("/assets", params={"sector": sector, "limit": 500}).json()
    assert client.assets(sector=sector)["ticker"].tolist() == [a["ticker"] for a in expected["items"]]
    prefix = panel.tickers[7][:2]
    assert panel.tickers[7] in client.assets(q=prefix)["ticker"].tolist()
    assert client.assets(q="no such name at all").empty
    assert client.asset(panel.tickers[7])["ticker"] == panel.tickers[7]


def test_dates_and_prices(client, http, panel):
    dates = client.dates()
    assert dates == [dt.date.fromisoformat(d) for d in http.get("/dates").json()["dates"]]
    ticker = panel.tickers[4]
    frame = client.prices(ticker)
    expected = http.get(f"/assets/{ticker}/prices").json()
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "date"
    assert len(frame) == 65 and frame.index[-1].date() == dates[-1]
    assert frame["close"].tolist() == [p["close"] for p in expected["points"]]
    assert frame["normalized"].iloc[0] == 1.0
    assert frame.attrs == {"ticker": ticker, "start": frame.index[0].date(), "end": dates[-1]}
    part = client.prices(ticker, dt.date(2011, 3, 1), "2011-03-10")
    assert part.index[0] == pd.Timestamp("2011-03-01") and part.index[-1] <= pd.Timestamp("2011-03-10")
    column = panel.close[:, panel.asset_index(ticker)]
    np.testing.assert_array_equal(
        np.float32(part["close"]), column[panel.date_position("2011-03-01") :][: len(part)]
    )


# ------------------------------------------------------------------------------------- errors
def test_every_error_code_the_service_sends_has_its_class():
    """The codes in the service's source (APIError(...), error_response(...), refusals, the HTTP
    error table) are all mapped: a new one fails here until the client knows it."""
    codes = set()
    for path in (REPO / "service").rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'\b[45]\d\d,\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'\b[45]\d\d:\s*"([a-z_]+)"', text))
    assert {"unknown_ticker", "no_index", "unauthorized", "prices_unavailable", "body_timeout"} <= codes
    assert codes <= set(fc.CODES), codes - set(fc.CODES)


def test_each_error_code_raises_its_exception(client, panel):
    ticker = panel.tickers[3]
    with pytest.raises(UnknownTicker) as caught:
        client.similar(ticker[:-1] + "Q")
    error = caught.value
    assert (error.status, error.code) == (404, "unknown_ticker") and error.detail["close_matches"]
    assert isinstance(error, ApiError) and isinstance(error, FasclError) and error.message in str(error)
    with pytest.raises(InvalidDate) as caught:
        client.similar(ticker, "2011-02-30")
    assert caught.value.status == 422 and "YYYY-MM-DD" in caught.value.message
    for k in (0, 101):
        with pytest.raises(InvalidRequest) as caught:
            client.similar(ticker, k=k)
        assert caught.value.code == "invalid_request" and caught.value.detail[0]["field"] == "k"
    with pytest.raises(UnknownValue) as caught:
        client.similar(ticker, sector="Astrology")
    assert caught.value.code == "unknown_sector" and caught.value.detail["valid"]
    with pytest.raises(UnknownValue) as caught:
        client.similar(ticker, exchange="LSE")
    assert caught.value.code == "unknown_exchange"
    with pytest.raises(NoData) as caught:
        client.similar(ticker, "2001-01-01")
    assert caught.value.code == "date_out_of_range" and caught.value.detail["first"] == "2010-10-01"
    with pytest.raises(NoData) as caught:
        client.similar(panel.tickers[-1], "2011-02-15")  # the gap in the last asset's bars
    assert caught.value.code == "no_data_on_date" and caught.value.detail["available_from"]
    with pytest.raises(NoData) as caught:
        client.prices(panel.tickers[0], end="2001-01-01")
    assert caught.value.code == "no_data_in_range" and caught.value.detail["available_from"]
    with pytest.raises(InvalidDate):
        client.prices(panel.tickers[0], start="yesterday")
    with pytest.raises(InvalidRequest):
        client.prices(panel.tickers[0], start="2011-03-02", end="2011-03-01")
    with pytest.raises(UnknownTicker):
        client.prices("NOPE")


def test_keys_are_sent_and_refusals_raised(server, keys, panel):
    ticker = panel.tickers[0]
    with Client(server, retries=0) as anonymous, pytest.raises(Unauthorized) as caught:
        anonymous.similar(ticker)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    with Client(server, api_key=keys[1]["read"] + "x", retries=0) as wrong, pytest.raises(Unauthorized):
        wrong.dates()
    with Client(server, api_key=keys[1]["admin"], retries=0) as admin, pytest.raises(Forbidden) as caught:
        admin.dates()
    assert caught.value.status == 403 and caught.value.detail == {"scopes": ["admin"]}


def test_a_4xx_is_never_retried(server, key, panel):
    headers = {"X-API-Key": key}
    before = answered(server, 404, headers=headers)
    started = time.monotonic()
    with Client(server, api_key=key, retries=3, backoff=1.0) as client, pytest.raises(UnknownTicker):
        client.similar("NOPE")
    assert time.monotonic() - started < 0.9  # no backoff slept
    assert settled(lambda: answered(server, 404, headers=headers), before + 1) == before + 1


# ---------------------------------------------------------------------------------- retries
def test_a_503_is_retried_with_backoff_then_raised_and_a_recovery_is_answered(bare, deployment, panel):
    base, home = bare
    before = answered(base, 503)
    started = time.monotonic()
    with Client(base, retries=2, backoff=0.1) as client, pytest.raises(ServiceUnavailable) as caught:
        client.similar(panel.tickers[0])
    elapsed = time.monotonic() - started
    assert (caught.value.status, caught.value.code) == (503, "no_index")
    assert settled(lambda: answered(base, 503), before + 3) == before + 3  # the first try and 2 retries
    assert elapsed >= 0.1 + 0.2  # slept backoff, then twice that

    # The index appears while the client is still retrying: the retry gets the answer.
    seen = answered(base, 503)

    def publish_after_the_first_refusal() -> None:
        settled(lambda: answered(base, 503), seen + 1)
        staging = home / "indexes.tmp"
        shutil.copytree(deployment.home / "indexes", staging)
        staging.rename(home / "indexes")  # whole, at once: the poll never sees half a store

    publisher = threading.Thread(target=publish_after_the_first_refusal)
    publisher.start()
    try:
        with Client(base, retries=8, backoff=0.2) as client:
            frame = client.similar(panel.tickers[0], "2011-03-01", 4)
    finally:
        publisher.join(timeout=30)
    assert len(frame) == 4 and frame.attrs["as_of"] == dt.date(2011, 3, 1)
    assert answered(base, 503) > seen and settled(lambda: answered(base, 200), 1) >= 1


def test_connection_refused_is_retried_then_raised():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with (
        Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.1) as client,
        pytest.raises(FasclError) as caught,
    ):
        client.dates()
    assert type(caught.value) is FasclError and caught.value.code == "connection_error"
    assert caught.value.status is None and "3 attempt(s)" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert time.monotonic() - started >= 0.1 + 0.2


@contextlib.contextmanager
def silent_server():
    """A socket that accepts connections and never answers; yields (base URL, connection count)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", lambda: len(accepted)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_timeouts_are_configurable_and_retried():
    with silent_server() as (base, connections):
        for timeout in (0.3, 1.0):
            started = time.monotonic()
            with Client(base, timeout=timeout, retries=0) as client, pytest.raises(FasclError) as caught:
                client.dates()
            elapsed = time.monotonic() - started
            assert caught.value.code == "timeout" and isinstance(caught.value.__cause__, httpx.ReadTimeout)
            assert timeout <= elapsed < timeout + 1.0, (timeout, elapsed)
        before = connections()
        with (
            Client(base, timeout=0.2, retries=2, backoff=0.05) as client,
            pytest.raises(FasclError) as caught,
        ):
            client.similar("ANY")
        assert caught.value.code == "timeout" and "3 attempt(s)" in caught.value.message
        assert settled(connections, before + 3) == before + 3  # a fresh connection per attempt


# ------------------------------------------------------------------------------------- async
def test_async_client_answers_raises_and_retries_the_same(server, key, http, panel):
    ticker = panel.tickers[5]
    expected = http.get(f"/similar/{ticker}", params={"date": "2011-02-15", "k": 7}).json()

    async def main():
        async with AsyncClient(server, api_key=key, retries=0) as client:
            frame = await client.similar(ticker, "2011-02-15", k=7)
            with pytest.raises(UnknownTicker) as caught:
                await client.similar("NOPE")
            many = await client.similar_many([(ticker, "2011-02-15", 7), "NOPE"])
            prices = await client.prices(ticker)
            dates = await client.dates()
            assets = await client.assets()
        return frame, caught.value, many, prices, dates, assets

    frame, error, many, prices, dates, assets = asyncio.run(main())
    assert frame["ticker"].tolist() == [r["ticker"] for r in expected["results"]]
    assert frame["score"].tolist() == [r["score"] for r in expected["results"]]
    assert frame.attrs["as_of"] == dt.date(2011, 2, 15)
    assert error.status == 404 and "close_matches" in error.detail
    pd.testing.assert_frame_equal(many[0], frame)
    assert isinstance(many[1], UnknownTicker)
    assert len(prices) == 65 and dates[-1] == prices.index[-1].date() and len(assets) == 40

    async def refused():
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.05) as client:
            await client.dates()

    with pytest.raises(FasclError) as caught:
        asyncio.run(refused())
    assert caught.value.code == "connection_error" and "2 attempt(s)" in caught.value.message


def test_the_client_loads_none_of_the_service():
    """A notebook installs httpx and pandas: importing the client must not need the rest."""
    probe = (
        "import sys, fascl.client\n"
        "heavy = {'service', 'index', 'model', 'market', 'catalogue', 'torch', 'faiss', 'sqlalchemy'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
