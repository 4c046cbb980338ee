"""Route logic with FastAPI's TestClient, on a real index and a real SQLite / PostgreSQL store."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import weakref
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text, update

from catalogue.migrate import upgrade
from catalogue.models import Asset
from catalogue.repository import create_api_key, register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.settings import Settings
from index.store import IndexStore
from service.app import create_app
from service.params import SIMILAR_PARAMETERS
from tests.service.fixtures import error_of, make_deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Two published versions (env, client and panel: tests/service/conftest.py serve the first)."""
    return make_deployment(tmp_path_factory.mktemp("home"), versions=2)


def brute_force(deployment, version, date, ticker, k):
    """Top-k by numpy over the stored vectors: what the service must return. The model's last
    coordinate is its candidate prior, which a query reads as 1 (score e_i . e_j + p_j)."""
    vectors = np.load(deployment.home / "indexes" / version / "vectors" / f"{date}.npy")
    ids = np.load(deployment.home / "indexes" / version / "ids" / f"{date}.npy")
    opened = IndexStore(deployment.home / "indexes").open_version(version)
    tickers = opened.assets()["ticker"].tolist()
    q = ids.tolist().index(tickers.index(ticker))
    query = vectors[q].copy()
    assert opened.manifest["model"]["query_prior"]
    query[-1] = 1.0
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if i != q][:k]
    return [tickers[ids[i]] for i in order], scores[order]


def test_similar_matches_brute_force_and_never_returns_the_query(client, deployment, panel):
    ticker = panel.tickers[5]
    response = client.get(f"/similar/{ticker}", params={"date": "2011-02-15", "k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["ticker"] == ticker and body["query"]["as_of"] == "2011-02-15"
    assert body["index_version"] == deployment.versions[0]
    tickers = [r["ticker"] for r in body["results"]]
    expected, scores = brute_force(deployment, deployment.versions[0], "2011-02-15", ticker, 7)
    assert tickers == expected
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores, atol=1e-5)
    assert ticker not in tickers
    assert [r["rank"] for r in body["results"]] == list(range(1, 8))


def test_newest_date_answers_from_the_precomputed_table_equal_a_search(client, deployment, panel):
    newest = str(panel.dates[-1])
    for ticker in panel.tickers[:6]:
        for params in ({"k": 100}, {"k": 3, "date": newest}, {"k": 5, "date": "2031-01-01"}):
            body = client.get(f"/similar/{ticker}", params=params).json()
            assert body["query"]["as_of"] == newest
            expected, scores = brute_force(deployment, deployment.versions[0], newest, ticker, params["k"])
            assert [r["ticker"] for r in body["results"]] == expected[: params["k"]]
            np.testing.assert_allclose([r["score"] for r in body["results"]], scores, atol=1e-5)
    cut = client.get(f"/similar/{panel.tickers[0]}", params={"k": 50, "min_score": 0.5}).json()["results"]
    assert all(r["score"] >= 0.5 for r in cut)


def test_metadata_comes_from_the_sql_store(env, deployment, panel):
    settings, factory = env
    ticker = panel.tickers[5]
    with session_scope(factory) as session:
        session.execute(update(Asset).values(name="Renamed Holdings").where(Asset.ticker == ticker))
    with TestClient(create_app(settings)) as client:
        body = client.get(f"/similar/{ticker}").json()
        assert body["query"]["name"] == "Renamed Holdings"
        assert client.get(f"/assets/{ticker}").json()["name"] == "Renamed Holdings"


def test_date_resolves_as_of_the_last_trading_day_and_defaults_to_newest(client, panel):
    ticker = panel.tickers[0]
    saturday = client.get(f"/similar/{ticker}", params={"date": "2011-02-19"}).json()
    assert saturday["query"]["requested_date"] == "2011-02-19" and saturday["query"]["as_of"] == "2011-02-18"
    newest = client.get(f"/similar/{ticker}").json()
    assert newest["query"]["requested_date"] is None
    assert newest["query"]["as_of"] == str(panel.dates[-1])


def test_filters_keep_k_results(client, panel):
    ticker = panel.tickers[1]
    sector = panel.assets["sector"].value_counts().index[0]
    body = client.get(f"/similar/{ticker}", params={"sector": sector, "k": 3}).json()
    assert len(body["results"]) == 3 and {r["sector"] for r in body["results"]} == {sector}
    own = body["query"]["sector"]
    body = client.get(f"/similar/{ticker}", params={"exclude_same_sector": "true", "k": 10}).json()
    assert len(body["results"]) == 10 and own not in {r["sector"] for r in body["results"]}
    body = client.get(f"/similar/{ticker}", params={"exchange": "NYSE", "k": 5}).json()
    assert {r["exchange"] for r in body["results"]} == {"NYSE"}
    body = client.get(f"/similar/{ticker}", params={"min_score": 0.99, "k": 20}).json()
    assert all(r["score"] >= 0.99 for r in body["results"])


def test_among_restricts_peers_to_a_universe(client, panel):
    ticker, universe = panel.tickers[1], list(panel.tickers[10:22])
    body = client.get(f"/similar/{ticker}", params={"among": ",".join(universe), "k": 5}).json()
    assert len(body["results"]) == 5 and {r["ticker"] for r in body["results"]} <= set(universe)
    full = client.get(f"/similar/{ticker}", params={"k": 39}).json()["results"]
    assert [r["ticker"] for r in body["results"]] == [r["ticker"] for r in full if r["ticker"] in universe][
        :5
    ]
    spaced = client.get(f"/similar/{ticker}", params={"among": " , ".join(universe) + ",", "k": 5}).json()
    assert spaced["results"] == body["results"]
    typo = universe[1] + "X"
    assert typo not in panel.tickers
    error = error_of(
        client.get(f"/similar/{ticker}", params={"among": f"{universe[0]},{typo}"}), 422, "unknown_tickers"
    )
    assert error["detail"]["unknown"] == [typo] and universe[1] in error["detail"]["close_matches"][typo]
    error_of(client.get(f"/similar/{ticker}", params={"among": " , "}), 422, "invalid_request")
    batch = client.post("/similar", json={"queries": [{"ticker": ticker, "k": 5, "among": universe}]}).json()
    assert batch["results"][0]["result"]["results"] == body["results"]


def test_include_realized_reports_the_future_correlation_when_known(client, panel):
    from model.targets import future_returns, pearson_matrix

    ticker = panel.tickers[2]
    body = client.get(
        f"/similar/{ticker}", params={"date": "2011-01-14", "k": 4, "include_realized": "true"}
    ).json()
    t = panel.date_position("2011-01-14")
    ids = [panel.asset_index(ticker)] + [panel.asset_index(r["ticker"]) for r in body["results"]]
    expected = pearson_matrix(future_returns(panel.close, t, np.array(ids))[0])[0, 1:]
    np.testing.assert_allclose([r["realized_correlation"] for r in body["results"]], expected, atol=1e-5)
    newest = client.get(f"/similar/{ticker}", params={"include_realized": "true"}).json()
    assert all(r["realized_correlation"] is None for r in newest["results"])  # the future is not known yet
    plain = client.get(f"/similar/{ticker}").json()
    assert "realized_correlation" not in plain["results"][0]


def test_errors_have_one_shape_and_say_what_would_be_right(client, panel):
    ticker = panel.tickers[3]
    error = error_of(client.get(f"/similar/{ticker[:-1]}X"), 404, "unknown_ticker")
    assert ticker in error["detail"]["close_matches"] or error["detail"]["close_matches"]
    error = error_of(client.get(f"/similar/{ticker}", params={"date": "2011-02-30"}), 422, "invalid_date")
    assert "YYYY-MM-DD" in error["message"]
    error_of(client.get(f"/similar/{ticker}", params={"date": "yesterday"}), 422, "invalid_date")
    error = error_of(client.get(f"/similar/{ticker}", params={"k": 0}), 422, "invalid_request")
    assert error["detail"][0]["field"] == "k"
    error_of(client.get(f"/similar/{ticker}", params={"k": 101}), 422, "invalid_request")
    error_of(client.get(f"/similar/{ticker}", params={"k": "ten"}), 422, "invalid_request")
    error = error_of(client.get(f"/similar/{ticker}", params={"sector": "Astrology"}), 422, "unknown_sector")
    assert set(panel.assets["sector"]) <= set(error["detail"]["valid"])
    error_of(client.get(f"/similar/{ticker}", params={"exchange": "LSE"}), 422, "unknown_exchange")
    error = error_of(
        client.get(f"/similar/{ticker}", params={"date": "2001-01-01"}), 404, "date_out_of_range"
    )
    assert error["detail"]["first"] == "2010-10-01"
    for value in ("high", "2", "-1.5", "nan", "inf"):
        error = error_of(
            client.get(f"/similar/{ticker}", params={"min_score": value}), 422, "invalid_request"
        )
        assert error["detail"][0]["field"] == "min_score"
    for name in ("exclude_same_sector", "include_realized"):
        error = error_of(client.get(f"/similar/{ticker}", params={name: "maybe"}), 422, "invalid_request")
        assert error["detail"][0]["field"] == name and "true or false" in error["message"]
    error_of(client.get("/nothing-here"), 404, "not_found")
    error_of(client.post("/similar", json={"queries": []}), 422, "invalid_request")
    error_of(client.post("/similar", content=b"{not json"), 422, "invalid_request")


def test_no_input_gets_a_server_error(client, panel):
    """Random, malformed and hostile parameters: always a 2xx/4xx in the one error shape, never a 5xx."""
    rng = random.Random(0)
    junk = [
        "",
        " ",
        "0",
        "-1",
        "1e3",
        "10.5",
        "999999999999999999999",
        "nan",
        "true",
        "null",
        "%00",
        "\u00e9\u00e8",
        "2011-02-30",
        "2011-13-01",
        "20110203",
        "9999-12-31",
        "0001-01-01",
        "ABAG" * 50,
    ]
    tickers = [*panel.tickers[:5], "", "nope", "a/b", "\u2603", "x" * 300, panel.tickers[0].lower()]
    fields = [p["name"] for p in SIMILAR_PARAMETERS if p["in"] == "query"]  # every documented one
    for _ in range(300):
        params = {
            f: rng.choice(junk + ["2011-03-01", "5", "true", "0.5"])
            for f in rng.sample(fields, rng.randint(0, 4))
        }
        ticker = rng.choice(tickers)
        response = client.get(f"/similar/{quote(ticker, safe='')}", params=params)
        assert response.status_code < 500, (ticker, params, response.text)
        if response.status_code >= 400:
            assert set(response.json()) == {"error"} and response.json()["error"]["code"], response.text
    for body in (
        b"",
        b"[]",
        b'{"queries": {}}',
        b'{"queries": [{"ticker": 5}]}',
        b'{"queries": [{}]}',
        b"\xff",
    ):
        response = client.post("/similar", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), body
        assert response.json()["error"]["code"] == "invalid_request", body


def test_no_data_on_date_gives_the_available_range(client, panel):
    """The last asset misses bars in early February 2011 (see fixtures): no vector on 2011-02-15."""
    error = error_of(
        client.get(f"/similar/{panel.tickers[-1]}", params={"date": "2011-02-15"}), 404, "no_data_on_date"
    )
    assert error["detail"]["ticker"] == panel.tickers[-1]
    assert error["detail"]["available_from"] == "2010-10-01"
    assert error["detail"]["available_to"] == str(panel.dates[-1])


def test_batch_answers_each_query_or_its_error(client, panel):
    queries = [
        {"ticker": panel.tickers[0], "k": 3},
        {"ticker": "NOPE", "k": 3},
        {"ticker": panel.tickers[1], "date": "2011-02-31"},
    ]
    body = client.post("/similar", json={"queries": queries}).json()
    assert len(body["results"]) == 3
    assert len(body["results"][0]["result"]["results"]) == 3 and body["results"][0]["error"] is None
    assert body["results"][1]["error"]["code"] == "unknown_ticker"
    assert body["results"][2]["error"]["code"] == "invalid_date"
    error_of(client.post("/similar", json={"queries": [{"ticker": "A", "k": 500}]}), 422, "invalid_request")


def test_assets_search_pagination_and_dates(client, panel):
    name = panel.assets["name"].iloc[4]
    body = client.get("/assets", params={"q": name.split()[0].lower()}).json()
    assert panel.tickers[4] in [a["ticker"] for a in body["items"]]
    page = client.get("/assets", params={"offset": 10, "limit": 5}).json()
    assert page["total"] == panel.n_assets and len(page["items"]) == 5 and page["offset"] == 10
    prefix = panel.tickers[7][:2]
    hits = client.get("/assets", params={"q": prefix}).json()["items"]
    assert hits and all(a["ticker"].startswith(prefix) or prefix.lower() in a["name"].lower() for a in hits)
    one = client.get(f"/assets/{panel.tickers[7]}").json()
    assert one["ticker"] == panel.tickers[7] and one["first_date"] <= one["last_date"]
    error_of(client.get("/assets/NOPE"), 404, "unknown_ticker")
    dates = client.get("/dates").json()
    assert dates["first"] == "2010-10-01" and dates["last"] == str(panel.dates[-1])
    assert dates["count"] == len(dates["dates"])


def test_health_and_metrics(client):
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    client.get("/similar/NOPE")
    text = client.get("/metrics").text
    assert 'fascl_request_seconds_count{method="GET",route="/similar/{ticker}",status="404"}' in text
    assert "fascl_index_info{" in text and "fascl_index_newest_date_age_days" in text


def test_metrics_count_the_sessions_since_the_newest_date_and_flag_a_stale_index(env, panel):
    from market.calendar import stale_sessions

    settings, _ = env
    behind = stale_sessions(panel.dates[-1], dt.datetime.now(dt.UTC), "")  # the synthetic assets: XNYS
    assert behind > 1000  # the synthetic market ends in 2011
    for limit, stale in ((None, 0), (3, 1), (10**6, 0)):
        app = create_app(settings.model_copy(update={"stale_after_sessions": limit}))
        with TestClient(app) as client:
            text = client.get("/metrics").text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("fascl_index_s")
        }
        assert values["fascl_index_sessions_behind"] in (behind, behind + 1)  # a session may close meanwhile
        assert values["fascl_index_stale"] == stale, limit


def test_not_ready_without_an_index(tmp_path, database_url):
    upgrade(database_url)
    settings = Settings(home=tmp_path, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        error_of(client.get("/health/ready"), 503, "not_ready")
        error_of(client.get("/similar/ANY"), 503, "no_index")


def test_api_keys_guard_every_route_but_health(env):
    settings, factory = env
    with session_scope(factory) as session:
        reader = create_api_key(session, "reader", ["read"])
        admin = create_api_key(session, "admin", ["read", "admin"])
    secured = settings.model_copy(update={"require_api_key": True})
    with TestClient(create_app(secured)) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        error_of(client.get("/dates"), 401, "unauthorized")
        error_of(client.get("/dates", headers={"X-API-Key": reader + "x"}), 401, "unauthorized")
        assert client.get("/dates", headers={"X-API-Key": reader}).status_code == 200
        error_of(client.post("/admin/reload", headers={"X-API-Key": reader}), 403, "forbidden")
        assert client.post("/admin/reload", headers={"X-API-Key": admin}).status_code == 200


def test_reload_swaps_to_the_new_active_version(env, deployment, panel):
    settings, factory = env
    with TestClient(create_app(settings)) as client:
        before = client.get(f"/similar/{panel.tickers[0]}").json()
        assert before["index_version"] == deployment.versions[0]
        assert client.post("/admin/reload").json()["swapped"] is False
        old = weakref.ref(client.app.state.registry.current)
        with session_scope(factory) as session:
            store = IndexStore(deployment.home / "indexes")
            register_index(session, store.open_version(deployment.versions[1]), activate=True)
        reload = client.post("/admin/reload").json()
        assert reload == {"swapped": True, "index_version": deployment.versions[1], "error": None}
        after = client.get(f"/similar/{panel.tickers[0]}").json()
        assert after["index_version"] == deployment.versions[1]
        # nothing holds the old snapshot once the swap's collection ran: its memory is back
        assert old() is None
        served = {
            line.split('index_version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("fascl_index_info{")
        }
        assert served == {deployment.versions[0]: 0.0, deployment.versions[1]: 1.0}
        # the second version starts later: its first date is the new lower bound
        error_of(
            client.get(f"/similar/{panel.tickers[0]}", params={"date": "2010-10-15"}),
            404,
            "date_out_of_range",
        )


def test_openapi_documents_the_routes_with_examples(client):
    schema = client.get("/openapi.json").json()
    assert {"/similar/{ticker}", "/similar", "/assets", "/assets/{ticker}", "/dates", "/health/ready"} <= set(
        schema["paths"]
    )
    get = schema["paths"]["/similar/{ticker}"]["get"]
    assert {"200", "404", "422"} <= set(get["responses"])
    assert schema["components"]["schemas"]["SimilarResponse"]["examples"]
    names = [p["name"] for p in get["parameters"]]
    assert sorted(names) == sorted(set(names)), f"a parameter is documented twice: {names}"
    assert set(names) == {
        "ticker",
        "date",
        "k",
        "sector",
        "exchange",
        "exclude_same_sector",
        "min_score",
        "include_realized",
        "among",
    }


def test_queries_run_with_the_configured_openmp_threads(env):
    """OpenMP's thread count is per thread: the event loop's thread, where queries run, gets the setting."""
    import threading

    import faiss

    settings, _ = env
    default = []
    probe = threading.Thread(target=lambda: default.append(faiss.omp_get_max_threads()))
    probe.start()
    probe.join()
    wanted = default[0] + 1  # what a new thread gets, plus one: differs whatever the machine
    with TestClient(create_app(settings.model_copy(update={"omp_threads": wanted}))) as client:
        assert client.get("/similar/AAAA").status_code in (200, 404)
        assert client.portal.call(faiss.omp_get_max_threads) == wanted


def test_queries_go_on_while_the_database_is_down(deployment, postgres_url, panel):
    """The request path runs no SQL: with the database gone, queries answer as before, readiness says
    why it is not ready, and a reload is refused with 503 rather than failing."""
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, panel, "synthetic")
        register_index(session, IndexStore(deployment.home / "indexes").open_version(deployment.versions[0]))
    engine.dispose()
    settings = Settings(home=deployment.home, database_url=postgres_url, index_poll_seconds=3600)
    with TestClient(create_app(settings)) as client:
        before = client.get(f"/similar/{panel.tickers[0]}", params={"k": 5}).json()
        admin = create_engine(make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{make_url(postgres_url).database}" WITH (FORCE)'))
        admin.dispose()
        assert client.get(f"/similar/{panel.tickers[0]}", params={"k": 5}).json() == before
        assert client.get("/assets/" + panel.tickers[1]).status_code == 200
        ready = error_of(client.get("/health/ready"), 503, "not_ready")
        assert ready["detail"]["database"].startswith("unreachable")
        error_of(client.post("/admin/reload"), 503, "database_unavailable")


def test_a_damaged_file_found_at_start_fails_its_date_only(deployment, tmp_path, panel):
    """A service (re)started on a version with one damaged file serves every other date, the newest
    included; the damaged date answers index_corrupt."""
    home = tmp_path / "home"
    shutil.copytree(deployment.home / "indexes", home / "indexes")
    version = IndexStore(home / "indexes").open_version(deployment.versions[0], verify="lazy")
    dates = version.manifest["dates"]
    bad = version.path / "vectors" / f"{dates[3]}.npy"
    with open(bad, "r+b") as fh:
        fh.seek(-16, 2)
        fh.write(bytes(16))
    url = f"sqlite:///{tmp_path / 'fascl.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, panel, "synthetic")
        register_index(session, version, activate=True)
    engine.dispose()
    settings = Settings(home=home, database_url=url, index_poll_seconds=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get(f"/similar/{panel.tickers[0]}").status_code == 200
        assert client.get(f"/similar/{panel.tickers[0]}", params={"date": dates[4]}).status_code == 200
        error_of(client.get(f"/similar/{panel.tickers[0]}", params={"date": dates[3]}), 500, "index_corrupt")


def test_a_corrupt_date_fails_its_queries_only_and_names_the_file(deployment, tmp_path, monkeypatch, panel):
    """Large versions check each date when first loaded: the bad date answers index_corrupt (500, the
    file named), every other date keeps serving."""
    monkeypatch.setattr("index.store.EAGER_VERIFY_BYTES", 0)  # verify lazily, as a large version does
    home = tmp_path / "home"
    shutil.copytree(deployment.home / "indexes", home / "indexes")
    url = f"sqlite:///{tmp_path / 'fascl.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, panel, "synthetic")
        register_index(
            session, IndexStore(home / "indexes").open_version(deployment.versions[0]), activate=True
        )
    engine.dispose()
    settings = Settings(home=home, database_url=url, index_poll_seconds=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        dates = client.get("/dates").json()["dates"]
        bad = home / "indexes" / deployment.versions[0] / "vectors" / f"{dates[3]}.npy"
        data = bytearray(bad.read_bytes())
        data[-16:] = bytes(16)
        bad.write_bytes(bytes(data))
        response = client.get(f"/similar/{panel.tickers[0]}", params={"date": dates[3]})
        error = error_of(response, 500, "index_corrupt")
        assert (  # named within the store: no absolute path in the answer
            error["detail"]["file"] == f"{deployment.versions[0]}/vectors/{dates[3]}.npy"
            and error["detail"]["problem"] == "checksum mismatch"
        )
        assert str(home) not in response.text and str(tmp_path) not in response.text
        assert "fascl index verify" in error["message"]
        assert client.get(f"/similar/{panel.tickers[0]}", params={"date": dates[4]}).status_code == 200
        assert client.get(f"/similar/{panel.tickers[0]}").status_code == 200
