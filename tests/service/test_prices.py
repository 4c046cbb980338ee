"""GET /assets/{ticker}/prices with FastAPI's TestClient, on a real index and a real SQLite /
PostgreSQL store: closes and their normalisation, the default and clipped ranges, missing bars, and
every refusal in the one error shape."""

from __future__ import annotations

import random
import shutil
from urllib.parse import quote

import numpy as np
from fastapi.testclient import TestClient

from catalogue.repository import create_api_key
from catalogue.sessions import session_scope
from fascl.settings import Settings
from service.app import create_app
from tests.service.fixtures import error_of


def closes_of(panel, ticker, first, last):
    """The panel's closes of `ticker` on [first, last] with a value, as (ISO dates, float32 closes)."""
    column = panel.close[:, panel.asset_index(ticker)]
    inside = (panel.dates >= np.datetime64(first)) & (panel.dates <= np.datetime64(last))
    keep = inside & np.isfinite(column)
    return [str(d) for d in panel.dates[keep]], column[keep]


def test_default_range_is_65_closes_up_to_the_newest_indexed_date(client, panel):
    ticker = panel.tickers[4]
    body = client.get(f"/assets/{ticker}/prices").json()
    newest = client.get("/dates").json()["last"]
    assert body["ticker"] == ticker and body["to"] == newest
    dates = [p["date"] for p in body["points"]]
    assert len(dates) == 65 and dates[-1] == newest and body["from"] == dates[0]
    t = panel.date_position(newest)
    assert dates[0] == str(panel.dates[t - 64])
    expected_dates, expected = closes_of(panel, ticker, dates[0], newest)
    assert dates == expected_dates
    # The close is the float32 value, written as its shortest decimals.
    assert np.array_equal(np.float32([p["close"] for p in body["points"]]), expected)
    normalized = [p["normalized"] for p in body["points"]]
    assert normalized[0] == 1.0
    np.testing.assert_allclose(normalized, expected / expected[0], rtol=1e-6)


def test_an_explicit_range_is_clipped_to_the_panel_and_counts_trading_days(client, panel):
    ticker = panel.tickers[0]
    body = client.get(f"/assets/{ticker}/prices", params={"from": "2011-02-19", "to": "2011-03-06"}).json()
    dates = [p["date"] for p in body["points"]]
    assert dates == closes_of(panel, ticker, "2011-02-19", "2011-03-06")[0]
    # A weekend at either end: the sessions inside.
    assert body["from"] == dates[0] >= "2011-02-21" and body["to"] == dates[-1] <= "2011-03-04"
    # Before the panel's first date and past its last: clipped, not refused.
    whole = client.get(f"/assets/{ticker}/prices", params={"from": "1990-01-01", "to": "2031-01-01"}).json()
    assert whole["from"] == str(panel.dates[0]) and whole["to"] == str(panel.dates[-1])
    assert len(whole["points"]) == int(np.isfinite(panel.close[:, 0]).sum())
    # `to` alone: the 64 trading days before it, whatever day of the week it is.
    saturday = client.get(f"/assets/{ticker}/prices", params={"to": "2011-02-19"}).json()
    assert saturday["to"] == "2011-02-18" and len(saturday["points"]) == 65
    # `from` alone: up to the newest indexed date.
    tail = client.get(f"/assets/{ticker}/prices", params={"from": "2011-05-01"}).json()
    assert tail["to"] == client.get("/dates").json()["last"]
    # One day.
    one = client.get(f"/assets/{ticker}/prices", params={"from": "2011-03-01", "to": "2011-03-01"}).json()
    assert [p["date"] for p in one["points"]] == ["2011-03-01"] and one["points"][0]["normalized"] == 1.0


def test_missing_bars_are_left_out_and_normalisation_starts_at_the_first_close(client, panel):
    """The last asset misses five sessions from 2011-02-01 (see fixtures)."""
    ticker = panel.tickers[-1]
    body = client.get(f"/assets/{ticker}/prices", params={"from": "2011-01-25", "to": "2011-02-15"}).json()
    dates = [p["date"] for p in body["points"]]
    gap = [str(d) for d in panel.dates[(panel.dates >= np.datetime64("2011-02-01"))][:5]]
    assert not set(gap) & set(dates)
    assert dates == closes_of(panel, ticker, "2011-01-25", "2011-02-15")[0]
    # A range starting inside the gap is normalised on the first date with a close.
    after = client.get(f"/assets/{ticker}/prices", params={"from": gap[0], "to": "2011-02-15"}).json()
    assert after["from"] > gap[-1] and after["points"][0]["normalized"] == 1.0


def test_a_range_without_closes_is_a_404_with_the_available_range(client, panel):
    ticker = panel.tickers[-1]
    gap = [str(d) for d in panel.dates[(panel.dates >= np.datetime64("2011-02-01"))][:5]]
    error = error_of(
        client.get(f"/assets/{ticker}/prices", params={"from": gap[0], "to": gap[-1]}),
        404,
        "no_data_in_range",
    )
    assert error["detail"] == {
        "ticker": ticker,
        "from": gap[0],
        "to": gap[-1],
        "available_from": str(panel.dates[0]),
        "available_to": str(panel.dates[-1]),
    }
    before = client.get(f"/assets/{panel.tickers[0]}/prices", params={"to": "2001-01-01"})
    assert error_of(before, 404, "no_data_in_range")["detail"]["available_from"] == str(panel.dates[0])


def test_bad_requests_are_refused_in_the_one_shape(client, panel):
    ticker = panel.tickers[3]
    error = error_of(client.get(f"/assets/{ticker[:-1]}Q/prices"), 404, "unknown_ticker")
    assert error["detail"]["close_matches"]
    for field in ("from", "to"):
        for value in ("2011-02-30", "yesterday", "2011-2-3", ""):
            error = error_of(
                client.get(f"/assets/{ticker}/prices", params={field: value}), 422, "invalid_date"
            )
            assert error["detail"]["field"] == field and error["message"].startswith(f"{field}: ")
            assert "YYYY-MM-DD" in error["message"]
    error = error_of(
        client.get(f"/assets/{ticker}/prices", params={"from": "2011-03-02", "to": "2011-03-01"}),
        422,
        "invalid_request",
    )
    assert error["detail"][0]["field"] == "from"
    error = error_of(
        client.get(f"/assets/{ticker}/prices", params={"from": "2031-01-01"}), 422, "invalid_request"
    )
    assert "to's default" in error["message"]
    error_of(client.get(f"/assets/{ticker}/prices", params={"from": "2" * 100}), 422, "invalid_request")
    error_of(client.get(f"/assets/{'Q' * 100}/prices"), 422, "invalid_request")


def test_no_input_gets_a_server_error(client, panel):
    rng = random.Random(1)
    junk = ["", " ", "0", "-1", "nan", "null", "%00", "\u00e9", "2011-02-30", "2011-13-01", "9999-12-31"]
    junk += ["0001-01-01", "2011-03-01", "2010-01-01", "2031-01-01", "A" * 40]
    tickers = [*panel.tickers[:3], "nope", "\u2603", "x" * 300, panel.tickers[0].lower()]
    for _ in range(150):
        params = {f: rng.choice(junk) for f in rng.sample(["from", "to"], rng.randint(0, 2))}
        response = client.get(f"/assets/{quote(rng.choice(tickers), safe='')}/prices", params=params)
        assert response.status_code < 500, (params, response.text)
        if response.status_code >= 400:
            assert set(response.json()) == {"error"} and response.json()["error"]["code"], response.text


def test_documented_in_openapi(client):
    schema = client.get("/openapi.json").json()
    get = schema["paths"]["/assets/{ticker}/prices"]["get"]
    assert {"200", "404", "422", "503"} <= set(get["responses"])
    assert {p["name"] for p in get["parameters"]} == {"ticker", "from", "to"}
    assert set(schema["components"]["schemas"]["PricesOut"]["properties"]) == {
        "ticker",
        "from",
        "to",
        "points",
    }


def test_needs_a_read_key_when_keys_are_required(env, panel):
    settings, factory = env
    with session_scope(factory) as session:
        reader = create_api_key(session, "reader", ["read"])
    with TestClient(create_app(settings.model_copy(update={"require_api_key": True}))) as client:
        url = f"/assets/{panel.tickers[0]}/prices"
        error_of(client.get(url), 401, "unauthorized")
        error_of(client.get(url, headers={"X-API-Key": reader + "x"}), 401, "unauthorized")
        assert client.get(url, headers={"X-API-Key": reader}).status_code == 200


def test_without_an_index_or_its_market_data(env, deployment, panel, tmp_path, database_url):
    settings, _ = env
    # The panel moved away before the service starts: the index serves, prices cannot.
    aside = tmp_path / "panel-aside"
    shutil.move(deployment.panel_path, aside)
    try:
        client = TestClient(create_app(settings))
        client.__enter__()
    finally:
        shutil.move(aside, deployment.panel_path)
    try:
        assert client.get(f"/similar/{panel.tickers[0]}").status_code == 200
        error = error_of(client.get(f"/assets/{panel.tickers[0]}/prices"), 404, "prices_unavailable")
        assert "market data" in error["message"]
        error_of(client.get("/assets/NOPE/prices"), 404, "unknown_ticker")
    finally:
        client.__exit__(None, None, None)
    empty = Settings(home=tmp_path / "empty", database_url=database_url)
    with TestClient(create_app(empty)) as bare:
        error_of(bare.get(f"/assets/{panel.tickers[0]}/prices"), 503, "no_index")
