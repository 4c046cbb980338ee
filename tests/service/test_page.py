"""The web page and its data routes with FastAPI's TestClient, on a real index and a real SQLite /
PostgreSQL store: the page and its own files, plain Pearson's answer against numpy, the track
record, the filter values, and every refusal in the one error shape."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from catalogue.repository import create_api_key
from catalogue.sessions import session_scope
from fascl.settings import Settings
from index.store import IndexStore
from service.app import create_app
from tests.service.fixtures import error_of

DATE = "2011-02-15"  # with a known 64-day future, after the sample's last asset lost a week of bars


def index_tickers(deployment) -> list[str]:
    """The index's ticker table: asset id i is the i-th."""
    return (
        IndexStore(deployment.home / "indexes")
        .open_version(deployment.versions[0])
        .assets()["ticker"]
        .tolist()
    )


def present(deployment, date) -> list[str]:
    """Tickers with a vector on `date`, read from the published files."""
    ids = np.load(deployment.home / "indexes" / deployment.versions[0] / "ids" / f"{date}.npy")
    tickers = index_tickers(deployment)
    return [tickers[i] for i in ids]


def pearson_by_numpy(panel, deployment, ticker, date, k):
    """Top-k by the Pearson correlation of the 64 daily returns ending at `date`, among the assets
    with a vector that date and all 65 closes: (tickers, correlations), best first."""
    t = panel.date_position(date)
    window = panel.close[t - 64 : t + 1].astype(np.float64)  # 65 closes
    returns = window[1:] / window[:-1] - 1.0
    query = returns[:, panel.asset_index(ticker)]
    scored = []
    for peer in present(deployment, date):
        if peer == ticker:
            continue
        r = returns[:, panel.asset_index(peer)]
        if np.isfinite(r).all():
            scored.append((float(np.corrcoef(query, r)[0, 1]), peer))
    scored.sort(key=lambda s: -s[0])
    return [p for _, p in scored[:k]], np.array([s for s, _ in scored[:k]])


def future_corr(panel, a, b, date):
    t = panel.date_position(date)
    closes = panel.close[t : t + 65].astype(np.float64)
    returns = closes[1:] / closes[:-1] - 1.0
    return float(np.corrcoef(returns[:, panel.asset_index(a)], returns[:, panel.asset_index(b)])[0, 1])


# ------------------------------------------------------------------ the page
def test_the_page_loads_its_own_files_only(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    # An empty icon inline ("data:,"): a browser would otherwise ask for /favicon.ico.
    references = [r for r in re.findall(r'(?:src|href)="([^"]*)"', html) if r != "data:,"]
    assert sorted(references) == ["static/page/page.css", "static/page/page.js"]
    types = {"page.css": "text/css", "page.js": "text/javascript"}
    total = len(response.content)
    for ref in references:
        asset = client.get("/" + ref)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(
            types[ref.split("/")[-1]]
        )
        # Nothing from another host: no absolute or protocol-relative URL but the SVG namespace.
        assert not [u for u in re.findall(r"(?:https?:)?//[\w.-]+", asset.text) if "www.w3.org" not in u]
        total += len(asset.content)
    assert total < 40_000  # a fast first paint
    # Every control has its label.
    for control in re.findall(r"<(?:input|select)[^>]*>", html):
        ident = re.search(r'id="([^"]+)"', control).group(1)
        assert f'<label for="{ident}"' in html, control
    error_of(client.get("/static/page/missing.js"), 404, "not_found")
    error_of(client.get("/static/page/..%2fpage.py"), 404, "not_found")


def test_with_keys_required_the_page_is_open_and_its_data_needs_a_read_key(env, deployment, panel):
    settings, factory = env
    with session_scope(factory) as session:
        reader = create_api_key(session, "reader", ["read"])
    secured = settings.model_copy(update={"require_api_key": True})
    ticker = panel.tickers[3]
    with TestClient(create_app(secured)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/page/page.js").status_code == 200
        for path in (f"/similar/{ticker}/pearson", "/track-record", "/filters"):
            error_of(client.get(path), 401, "unauthorized")
            assert client.get(path, headers={"X-API-Key": reader}).status_code == 200, path


# ------------------------------------------------------------------ Pearson
def test_pearson_equals_numpy_over_the_closes(client, panel, deployment):
    ticker = panel.tickers[5]
    body = client.get(
        f"/similar/{ticker}/pearson", params={"date": DATE, "k": 8, "include_realized": "true"}
    ).json()
    assert body["method"] == "pearson" and body["window_returns"] == 64
    assert body["query"]["ticker"] == ticker and body["query"]["as_of"] == DATE
    assert body["index_version"] == deployment.versions[0]
    expected, scores = pearson_by_numpy(panel, deployment, ticker, DATE, 8)
    assert [r["ticker"] for r in body["results"]] == expected
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores, atol=2e-6)
    assert [r["rank"] for r in body["results"]] == list(range(1, 9))
    for row in body["results"]:
        assert set(row) == {
            "rank",
            "ticker",
            "name",
            "sector",
            "industry",
            "exchange",
            "score",
            "realized_correlation",
        }
        assert row["realized_correlation"] == pytest.approx(
            future_corr(panel, ticker, row["ticker"], DATE), abs=2e-6
        )
    # An asset without a vector that date (the one that lost a week of bars) is never a peer.
    gap = panel.tickers[-1]
    assert gap not in present(deployment, DATE)
    wide = client.get(f"/similar/{ticker}/pearson", params={"date": DATE, "k": 100}).json()["results"]
    assert gap not in [r["ticker"] for r in wide] and len(wide) == len(present(deployment, DATE)) - 1


def test_pearson_takes_the_same_filters_as_similar(client, panel):
    ticker = panel.tickers[2]
    query = client.get(f"/similar/{ticker}", params={"date": DATE}).json()["query"]
    sector = client.get("/filters").json()["sectors"][0]
    same = client.get(f"/similar/{ticker}/pearson", params={"date": DATE, "k": 50, "sector": sector}).json()
    assert same["results"] and all(r["sector"] == sector for r in same["results"])
    other = client.get(
        f"/similar/{ticker}/pearson", params={"date": DATE, "k": 50, "exclude_same_sector": "true"}
    ).json()
    assert other["results"] and all(r["sector"] != query["sector"] for r in other["results"])
    among = ",".join(panel.tickers[10:14])
    few = client.get(f"/similar/{ticker}/pearson", params={"date": DATE, "among": among}).json()["results"]
    assert {r["ticker"] for r in few} <= set(panel.tickers[10:14])
    scored = client.get(f"/similar/{ticker}/pearson", params={"date": DATE, "k": 50, "min_score": 0.3}).json()
    assert all(r["score"] >= 0.3 for r in scored["results"])


def test_pearson_refuses_bad_input_like_similar(client, panel):
    ticker = panel.tickers[0]
    path = f"/similar/{ticker}/pearson"
    assert error_of(client.get("/similar/NOPE/pearson"), 404, "unknown_ticker")["detail"]["ticker"] == "NOPE"
    error_of(client.get(path, params={"date": "2011-02-30"}), 422, "invalid_date")
    error_of(client.get(path, params={"date": "1999-01-04"}), 404, "date_out_of_range")
    for k in ("0", "101", "ten"):
        error_of(client.get(path, params={"k": k}), 422, "invalid_request")
    error_of(client.get(path, params={"sector": "Nope"}), 422, "unknown_sector")
    error_of(client.get(path, params={"exchange": "Nope"}), 422, "unknown_exchange")
    error_of(client.get(path, params={"among": "NOPE1,NOPE2"}), 422, "unknown_tickers")
    error_of(client.get(path, params={"include_realized": "maybe"}), 422, "invalid_request")
    no_vector = error_of(
        client.get(f"/similar/{panel.tickers[-1]}/pearson", params={"date": DATE}), 404, "no_data_on_date"
    )
    assert no_vector["detail"]["available_from"]


# ------------------------------------------------------------------ the track record
def test_track_record_by_month_against_pearson_and_random(client, panel):
    response = client.get("/track-record", params={"k": 5})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["k"] == 5 and record["horizon"] == 64 and record["sample"]["date_stride"] == 16
    months = [m["month"] for m in record["months"]]
    assert months and months == sorted(months) and len(set(months)) == len(months)
    for m in record["months"] + [record["overall"]]:
        assert m["dates"] >= 1 and m["queries"] >= 1
        for method in ("model", "pearson", "random"):
            assert -1 <= m[method] <= 1
    # Only dates whose 64-day future is in the panel: the last sampled month ends 64 sessions early.
    last_known = str(panel.dates[-65])
    assert months[-1] <= last_known[:7]
    assert record["overall"]["dates"] == sum(m["dates"] for m in record["months"])
    # Both retrievers that read the market beat random peers on this market.
    assert record["overall"]["pearson"] > record["overall"]["random"]
    assert record["overall"]["model"] > record["overall"]["random"]
    assert client.get("/track-record", params={"k": 5}).json() == record  # computed once
    assert client.get("/track-record").json()["k"] == 10


def test_track_record_equals_frc_at_k_recomputed_with_numpy(client, panel, deployment):
    """Every 16th indexed date whose next 64 closes exist; on each, every asset with a vector and
    complete trailing and next 64 returns is a query (the sample has fewer than 300) and a candidate."""
    k = 3
    record = client.get("/track-record", params={"k": k}).json()
    root = deployment.home / "indexes" / deployment.versions[0]
    assert json.loads((root / "manifest.json").read_text())["model"]["query_prior"]
    tickers = index_tickers(deployment)
    indexed = client.get("/dates").json()["dates"]
    known = [d for d in indexed if panel.date_position(d) + 64 < len(panel.dates)]
    frc = {"model": [], "pearson": []}
    for date in known[::16]:
        t = panel.date_position(date)
        ids, vectors = np.load(root / "ids" / f"{date}.npy"), np.load(root / "vectors" / f"{date}.npy")
        columns = [panel.asset_index(tickers[i]) for i in ids]
        closes = panel.close[t - 64 : t + 65][:, columns].astype(np.float64)  # 64 before, 64 after
        returns = closes[1:] / closes[:-1] - 1.0
        past, future = returns[:64], returns[64:]
        keep = np.isfinite(past).all(axis=0) & np.isfinite(future).all(axis=0)
        realised = np.corrcoef(future[:, keep].T)
        queries = vectors[keep].copy()
        queries[:, -1] = 1.0  # the model's candidate prior, which a query reads as 1
        scores = {"model": queries @ vectors[keep].T, "pearson": np.corrcoef(past[:, keep].T)}
        for method, s in scores.items():
            for q in range(int(keep.sum())):
                peers = [j for j in np.argsort(-s[q], kind="stable") if j != q][:k]
                frc[method].append(realised[q, peers].mean())
    assert record["overall"]["queries"] == len(frc["model"])
    for method, values in frc.items():
        assert record["overall"][method] == pytest.approx(np.mean(values), abs=2e-6), method


def test_track_record_refuses_a_bad_k(client):
    for k in ("0", "101", "ten"):
        error = error_of(client.get("/track-record", params={"k": k}), 422, "invalid_request")
        assert error["detail"][0]["field"] == "k"


def test_without_an_index_or_its_market_data(env, deployment, panel, tmp_path, database_url):
    settings, _ = env
    # The panel moved away before the service starts: the model answers, Pearson and the record cannot.
    aside = tmp_path / "panel-aside"
    shutil.move(deployment.panel_path, aside)
    try:
        client = TestClient(create_app(settings))
        client.__enter__()
    finally:
        shutil.move(aside, deployment.panel_path)
    try:
        assert client.get(f"/similar/{panel.tickers[0]}").status_code == 200
        error_of(client.get(f"/similar/{panel.tickers[0]}/pearson"), 404, "prices_unavailable")
        error_of(client.get("/track-record"), 404, "prices_unavailable")
        error_of(client.get("/similar/NOPE/pearson"), 404, "unknown_ticker")
    finally:
        client.__exit__(None, None, None)
    empty = Settings(home=tmp_path / "empty", database_url=database_url)
    with TestClient(create_app(empty)) as bare:
        assert bare.get("/").status_code == 200  # the page still loads, and says what is wrong
        for path in (f"/similar/{panel.tickers[0]}/pearson", "/track-record", "/filters"):
            error_of(bare.get(path), 503, "no_index")


def test_filters_list_the_index_values(client, panel):
    body = client.get("/filters").json()
    assert body["sectors"] == sorted(set(panel.assets["sector"].dropna()) - {""})
    assert body["exchanges"] and body["exchanges"] == sorted(body["exchanges"])
