"""Hostile requests in process (FastAPI's TestClient, real index, real SQLite / PostgreSQL): bounded
fields, short echoes of bad values, numbers beyond 64 bits, no paths or database names in any body,
and the API keys guarding the documentation and declared in the OpenAPI document."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from catalogue.migrate import upgrade
from catalogue.repository import create_api_key, register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.settings import Settings
from index.store import IndexStore
from market.panel import Panel
from service.app import create_app
from tests.service.fixtures import make_deployment

HUGE = "9" * 30  # beyond the 64-bit range


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    return make_deployment(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def panel(deployment):
    return Panel.load(deployment.panel_path)


def deploy(deployment, panel, database_url, **settings) -> Settings:
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, panel, "synthetic")
        register_index(
            session,
            IndexStore(deployment.home / "indexes").open_version(deployment.versions[0]),
            activate=True,
        )
    engine.dispose()
    return Settings(home=deployment.home, database_url=database_url, index_poll_seconds=3600, **settings)


@pytest.fixture
def client(deployment, panel, database_url):
    with TestClient(create_app(deploy(deployment, panel, database_url))) as client:
        yield client


def error_of(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def test_bad_values_are_echoed_as_a_short_excerpt(client, panel):
    """A 10 kB ticker, sector or date comes back as at most a short excerpt, never whole (nor twice)."""
    long = "Q" * 10_000
    ticker = panel.tickers[0]
    for response in (
        client.get(f"/similar/{long}"),
        client.get(f"/assets/{long}"),
        client.get(f"/similar/{ticker}", params={"sector": long}),
        client.get(f"/similar/{ticker}", params={"exchange": long}),
        client.get(f"/similar/{ticker}", params={"date": long}),
        client.get(f"/similar/{ticker}", params={"k": long}),
        client.get(f"/similar/{ticker}", params={"min_score": long}),
        client.get(f"/similar/{ticker}", params={"include_realized": long}),
        client.get(f"/similar/{ticker}", params={"among": ",".join([long] * 5)}),
        client.post("/similar", json={"queries": [{"ticker": long}]}),
        client.post("/similar", json={"queries": [{"ticker": ticker, "date": long}]}),
        client.post("/similar", json={"queries": [{"ticker": ticker, "among": [long] * 5}]}),
    ):
        assert response.status_code == 422, response.text[:300]
        assert len(response.content) < 1_000, response.text[:300]
        assert response.json()["error"]["code"] in ("invalid_request", "invalid_date")
    # a long but well-formed universe of unknown tickers lists the first few, and how many there are
    unknown = [f"NO{i:05d}" for i in range(3_000)]
    body = client.post("/similar", json={"queries": [{"ticker": ticker, "among": unknown}]}).json()
    error = body["results"][0]["error"]
    assert error["code"] == "unknown_tickers" and len(error["detail"]["unknown"]) <= 20
    assert error["detail"]["unknown_count"] == 3_000 and len(str(body)) < 5_000


def test_numbers_beyond_64_bits_are_refused_with_the_error_shape(client, panel):
    ticker = panel.tickers[0]
    for path, params in (
        ("/assets", {"offset": HUGE}),
        ("/assets", {"limit": HUGE}),
        ("/assets", {"offset": "-" + HUGE}),
        (f"/similar/{ticker}", {"k": HUGE}),
        (f"/similar/{ticker}", {"min_score": HUGE}),
        (f"/similar/{ticker}", {"min_score": "1e400"}),
    ):
        error = error_of(client.get(path, params=params), 422, "invalid_request")
        assert error["detail"][0]["field"] in params, error
    body = f'{{"queries": [{{"ticker": "{ticker}", "k": {HUGE}}}]}}'
    error_of(
        client.post("/similar", content=body, headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )


def test_no_body_names_a_path_or_the_database(deployment, panel, postgres_url, tmp_path):
    """The store's paths, the database host and its name go to the log, never into a response."""
    settings = deploy(deployment, panel, postgres_url)
    url = make_url(postgres_url)
    secrets = [str(deployment.home), str(tmp_path), url.host, url.database]
    with TestClient(create_app(settings)) as client:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
        admin.dispose()
        bodies = [client.get("/health/ready"), client.post("/admin/reload")]
        assert [b.status_code for b in bodies] == [503, 503]
    # a store whose only version is damaged: no index, and the reason names no path
    home = tmp_path / "home"
    shutil.copytree(deployment.home / "indexes", home / "indexes")
    version = home / "indexes" / deployment.versions[0]
    (version / "manifest.json").write_text("{broken")
    sqlite = f"sqlite:///{tmp_path / 'fascl.db'}"
    upgrade(sqlite)
    with TestClient(create_app(Settings(home=home, database_url=sqlite, index_poll_seconds=3600))) as client:
        bodies += [client.get("/health/ready"), client.get(f"/similar/{panel.tickers[0]}")]
        assert [b.status_code for b in bodies[2:]] == [503, 503]
    for response in bodies:
        for secret in secrets + [str(home)]:
            assert secret not in response.text, (secret, response.text)


@pytest.fixture
def keys(deployment, panel, database_url):
    settings = deploy(deployment, panel, database_url, require_api_key=True)
    with session_scope(session_factory(make_engine(database_url))) as session:
        reader = create_api_key(session, "reader", ["read"])
        admin_only = create_api_key(session, "ops", ["admin"])
    return settings, reader, admin_only


def test_with_keys_required_the_documentation_needs_one_and_declares_it(keys):
    settings, reader, admin_only = keys
    with TestClient(create_app(settings)) as client:
        error_of(client.get("/openapi.json"), 401, "unauthorized")
        error_of(client.get("/openapi.json", headers={"X-API-Key": admin_only}), 403, "forbidden")
        schema = client.get("/openapi.json", headers={"X-API-Key": reader}).json()
        # the HTML pages cannot send a header: with keys they are off (the document is for tools)
        for page in ("/docs", "/redoc"):
            assert client.get(page, headers={"X-API-Key": reader}).status_code == 404
    scheme = schema["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/health/"):
                assert "security" not in operation and "401" not in operation["responses"]
                continue
            assert operation["security"] == [{"APIKeyHeader": []}], (path, method)
            assert {"401", "403"} <= set(operation["responses"]), (path, method)
            ref = operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse")
    with TestClient(create_app(settings.model_copy(update={"require_api_key": False}))) as client:
        open_schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    assert "securitySchemes" not in open_schema.get("components", {})
