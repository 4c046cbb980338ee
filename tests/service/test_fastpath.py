"""GET /similar/{ticker} answered past the framework's layers (service/fastpath.py) is the route's
answer: the same status, headers and body for good and bad requests, counted by the same metric,
behind the same key check."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from catalogue.models import IndexVersionRecord
from catalogue.repository import create_api_key
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.settings import Settings
from market.panel import Panel
from service.app import create_app
from service.fastpath import SimilarFastPath


@pytest.fixture
def settings(env):
    return env[0]


def without_fast_path(settings: Settings):
    """The same app with GET /similar/{ticker} left to the framework's route."""
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not SimilarFastPath]
    return app


def requests(client: TestClient) -> list[str]:
    tickers = [a["ticker"] for a in client.get("/assets", params={"limit": 5}).json()["items"]]
    dates = client.get("/dates").json()["dates"]
    t = tickers[0]
    return [
        f"/similar/{t}",
        f"/similar/{t}?k=3&date={dates[2]}",
        f"/similar/{t.lower()}?k=25",  # any case; wider than the stored table: a search
        f"/similar/{t}?sector=Utilities&k=2",
        f"/similar/{t}?exclude_same_sector=true&min_score=0.1",
        f"/similar/{t}?among={','.join(tickers[1:])}",
        f"/similar/{t}?include_realized=true&date={dates[0]}",
        f"/similar/{t}?date=2011-13-45",  # invalid_date
        f"/similar/{t}?date=1999-01-04",  # before the index
        f"/similar/{t}?k=0",
        f"/similar/{t}?k=ten",
        f"/similar/{t}?sector=Nope",
        f"/similar/{t}?unknown=1",
        f"/similar/{t}?among=NOPE1,NOPE2",
        "/similar/ZZZZZ",  # unknown, with close matches
        "/similar/" + "A" * 60,  # not a ticker
        "/similar/%20",
    ]


def test_answers_equal_the_routes(settings):
    with TestClient(create_app(settings)) as fast, TestClient(without_fast_path(settings)) as framework:
        paths = requests(fast)
        statuses = set()
        for path in paths:
            a, b = fast.get(path), framework.get(path)
            assert (a.status_code, a.content) == (b.status_code, b.content), path
            assert a.headers["content-type"] == b.headers["content-type"], path
            statuses.add(a.status_code)
        assert statuses >= {200, 404, 422}  # good and bad requests both compared
        # what the fast path leaves to the router: other methods, other paths
        assert fast.post("/similar/AAA").status_code == framework.post("/similar/AAA").status_code == 405
        assert fast.get("/similar/").status_code == framework.get("/similar/").status_code


def test_fast_path_requests_are_counted_under_the_route(settings):
    with TestClient(create_app(settings)) as client:
        ticker = client.get("/assets", params={"limit": 1}).json()["items"][0]["ticker"]
        for _ in range(3):
            client.get(f"/similar/{ticker}")
        client.get("/similar/ZZZZZ")
        text = client.get("/metrics").text
    count = 'fascl_request_seconds_count{method="GET",route="/similar/{ticker}",status="%d"}'
    assert count % 200 + " 3.0" in text and count % 404 + " 1.0" in text


def test_the_key_is_still_required(settings, database_url):
    engine = make_engine(database_url)
    with session_scope(session_factory(engine)) as session:
        key = create_api_key(session, "desk", scopes=["read"])
    engine.dispose()
    keyed = settings.model_copy(update={"require_api_key": True})
    with TestClient(create_app(keyed)) as client:
        ticker = Panel.load(keyed.home / "market" / "synthetic").tickers[0]
        assert client.get(f"/similar/{ticker}").status_code == 401
        assert client.get(f"/similar/{ticker}", headers={"X-API-Key": key}).status_code == 200


def test_no_index_is_a_503_through_the_fast_path(settings, database_url):
    engine = make_engine(database_url)
    with session_scope(session_factory(engine)) as session:
        session.execute(update(IndexVersionRecord).values(active=False))
    engine.dispose()
    empty = settings.model_copy(update={"home": settings.home.parent / "nothing-here"})
    with TestClient(create_app(empty)) as client:
        response = client.get("/similar/AAA")
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_index"
