"""IndexReader against a numpy brute force: scores, order, filters, as-of dates, typed errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from index.errors import (
    DateOutOfRange,
    NoDataOnDate,
    QueryError,
    UnknownExchange,
    UnknownSector,
    UnknownTicker,
)
from tests.index.conftest import GAP_ASSET, GONE_ASSET, build


def brute_force(reader, ticker, date=None, k=10, allowed=None):
    """(ids, scores) of the exact top k by inner product, the query asset excluded; the model's last
    coordinate is its candidate prior, which the query reads as 1 (score e_i . e_j + p_j)."""
    assert reader.manifest["model"]["query_prior"]
    _, ids, vectors = reader.vectors(date)
    aid = reader.tickers.index(ticker)
    query = np.array(vectors[np.flatnonzero(ids == aid)[0]], dtype=np.float64)
    query[-1] = 1.0
    scores = np.asarray(vectors, dtype=np.float64) @ query
    keep = ids != aid
    if allowed is not None:
        keep &= allowed[ids]
    ids, scores = ids[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order], dict(zip(ids.tolist(), scores.tolist(), strict=True))


def assert_matches(result, expected_ids, expected_scores, all_scores):
    got_ids = [n.asset_id for n in result.neighbors]
    got = np.array([n.score for n in result.neighbors])
    assert len(got_ids) == len(expected_ids)
    assert len(set(got_ids)) == len(got_ids)
    assert np.all(np.diff(got) <= 1e-6), "best first"
    np.testing.assert_allclose(got, expected_scores, atol=1e-5)  # the same top-k scores
    for aid, score in zip(got_ids, got, strict=True):  # each reported score is that asset's real score
        assert abs(all_scores[aid] - score) < 1e-5
    distinct = np.r_[True, np.diff(expected_scores) < -1e-5] & np.r_[np.diff(expected_scores) < -1e-5, True]
    assert [a for a, d in zip(got_ids, distinct, strict=True) if d] == [
        int(a) for a, d in zip(expected_ids, distinct, strict=True) if d
    ], "same order where scores are not tied"


def test_reader_metadata(reader, built):
    _, result = built
    assert reader.version == result.version
    assert reader.dates[0] == dt.date.fromisoformat(result.first_date)
    assert reader.dates[-1] == dt.date.fromisoformat(result.last_date)
    assets = reader.assets
    assert list(assets.columns[:5]) == ["ticker", "name", "sector", "industry", "exchange"]
    assert list(assets["ticker"]) == reader.tickers
    assert reader.manifest["model"]["version"] == result.model_version
    assert len(reader.manifest_sha256) == 64
    assert reader.dim == result.dim


@pytest.mark.parametrize("date", [None, "2012-01-03", "2012-03-15", "2012-05-31"])
@pytest.mark.parametrize("k", [1, 10, 30])
def test_similar_equals_brute_force(reader, date, k):
    for ticker in reader.tickers[::7]:
        try:
            result = reader.similar(ticker, date, k=k)
        except NoDataOnDate:
            continue
        ids, scores, all_scores = brute_force(reader, ticker, date, k)
        assert_matches(result, ids, scores, all_scores)


def test_query_asset_never_returned(reader):
    n = len(reader.tickers)
    for ticker in reader.tickers[::5]:
        result = reader.similar(ticker, k=n)  # more than there are
        assert ticker not in [nb.ticker for nb in result.neighbors]
        assert len(result.neighbors) == n - 1


def test_asof_resolution(reader):
    friday = dt.date(2012, 3, 2)
    assert friday.weekday() == 4 and friday in reader.dates
    for weekend in ("2012-03-03", "2012-03-04", dt.date(2012, 3, 4), np.datetime64("2012-03-03")):
        result = reader.similar(reader.tickers[0], weekend, k=3)
        assert result.as_of == friday
        assert result.requested_date.isoformat() in ("2012-03-03", "2012-03-04")
    assert reader.similar(reader.tickers[0], k=3).as_of == reader.dates[-1]
    assert reader.similar(reader.tickers[0], "2030-01-01", k=3).as_of == reader.dates[-1]
    assert reader.resolve_date("2012-03-04") == friday
    with pytest.raises(DateOutOfRange) as err:
        reader.similar(reader.tickers[0], "2011-12-30")
    assert err.value.first == reader.dates[0] and "before the first indexed date" in str(err.value)
    with pytest.raises(QueryError, match="as a date"):
        reader.similar(reader.tickers[0], "not a date")


def test_sector_filter_matches_brute_force(reader):
    sectors = np.array(reader.assets["sector"])
    for sector in reader.sectors:
        allowed = sectors == sector
        for ticker in reader.tickers[:12]:
            result = reader.similar(ticker, k=5, sector=sector)
            assert all(sectors[n.asset_id] == sector for n in result.neighbors)
            ids, scores, all_scores = brute_force(reader, ticker, k=5, allowed=allowed)
            assert_matches(result, ids, scores, all_scores)


@pytest.mark.parametrize("exact_max", [1024, 0], ids=["product", "faiss-selector"])
def test_among_is_an_exact_search_within_the_universe(reader, monkeypatch, exact_max):
    """Small universes are one product with their vectors, wide ones a filtered faiss search: same answers."""
    monkeypatch.setattr("index.query.AMONG_EXACT_MAX", exact_max)
    rng = np.random.default_rng(0)
    sectors = np.array(reader.assets["sector"])
    older = reader.dates[len(reader.dates) // 2]
    for trial in range(8):
        universe = [reader.tickers[i] for i in rng.choice(len(reader.tickers), size=15, replace=False)]
        allowed = np.isin(np.array(reader.tickers), universe)
        ticker = reader.tickers[trial * 5]
        for date in (None, older):
            if not reader._entry(reader.dates.index(older)).present[reader.tickers.index(ticker)]:
                continue
            result = reader.similar(ticker, date, k=5, among=universe)
            assert {n.ticker for n in result.neighbors} <= set(universe) - {ticker}
            ids, scores, all_scores = brute_force(reader, ticker, date, k=5, allowed=allowed)
            assert_matches(result, ids, scores, all_scores)
        sector = sectors[reader.tickers.index(universe[0])]
        both = reader.similar(ticker, k=5, among=universe, sector=sector)
        ids, scores, all_scores = brute_force(reader, ticker, k=5, allowed=allowed & (sectors == sector))
        assert_matches(both, ids, scores, all_scores)
    # lower case is accepted; a universe of the query alone has no peers; k larger than it returns all
    assert (
        reader.similar(reader.tickers[0], k=3, among=[reader.tickers[1].lower()]).neighbors[0].ticker
        == (reader.tickers[1])
    )
    assert reader.similar(reader.tickers[0], k=3, among=[reader.tickers[0]]).neighbors == []
    assert len(reader.similar(reader.tickers[0], k=50, among=reader.tickers[:10]).neighbors) == 9


def test_among_names_the_unknown_tickers(reader):
    from index.errors import UnknownTickers

    typo = reader.tickers[2] + "X"
    assert typo not in reader.tickers
    with pytest.raises(UnknownTickers) as caught:
        reader.similar(reader.tickers[0], among=[reader.tickers[1], typo, "ZZZZZZ9"])
    assert caught.value.values == [typo, "ZZZZZZ9"]
    assert reader.tickers[2] in caught.value.suggestions[typo]
    assert "2 ticker(s) of the peer universe are not in the index" in str(caught.value)


def test_narrow_filter_still_returns_k(reader):
    sectors = np.array(reader.assets["sector"])
    counts = {s: int((sectors == s).sum()) for s in reader.sectors}
    narrow = min(counts, key=counts.get)  # 3 assets of 60
    outsider = next(t for t, s in zip(reader.tickers, sectors, strict=True) if s != narrow)
    result = reader.similar(outsider, k=counts[narrow], sector=narrow)
    assert len(result.neighbors) == counts[narrow]  # all of them, though far from the global top
    insider = next(t for t, s in zip(reader.tickers, sectors, strict=True) if s == narrow)
    assert len(reader.similar(insider, k=10, sector=narrow).neighbors) == counts[narrow] - 1


def test_exchange_and_exclusion_filters(reader):
    assets = reader.assets
    exchanges, sectors = np.array(assets["exchange"]), np.array(assets["sector"])
    ticker = reader.tickers[3]
    own = sectors[3]
    for exchange in reader.exchanges:
        result = reader.similar(ticker, k=8, exchange=exchange)
        assert len(result.neighbors) == 8
        assert all(exchanges[n.asset_id] == exchange for n in result.neighbors)
        ids, scores, all_scores = brute_force(reader, ticker, k=8, allowed=exchanges == exchange)
        assert_matches(result, ids, scores, all_scores)
    result = reader.similar(ticker, k=10, exclude_same_sector=True)
    assert len(result.neighbors) == 10 and all(sectors[n.asset_id] != own for n in result.neighbors)
    combined = reader.similar(ticker, k=10, exchange="NYSE", exclude_same_sector=True)
    assert all(sectors[n.asset_id] != own and exchanges[n.asset_id] == "NYSE" for n in combined.neighbors)


def test_min_score(reader):
    full = reader.similar(reader.tickers[0], k=20)
    floor = full.neighbors[5].score
    cut = reader.similar(reader.tickers[0], k=20, min_score=floor)
    assert cut.neighbors == [n for n in full.neighbors if n.score >= floor]


def test_typed_errors(reader):
    with pytest.raises(UnknownTicker) as err:
        reader.similar(reader.tickers[0][:-1] + "Q")
    assert reader.tickers[0] in err.value.suggestions
    assert reader.similar(reader.tickers[0].lower(), k=1).ticker == reader.tickers[0]  # case-insensitive
    gone = generated_ticker(GONE_ASSET)
    with pytest.raises(UnknownTicker):
        reader.similar(gone)
    with pytest.raises(UnknownSector) as err:
        reader.similar(reader.tickers[0], sector="Crypto")
    assert err.value.valid == reader.sectors and "Technology" in str(err.value)
    with pytest.raises(UnknownExchange) as err:
        reader.similar(reader.tickers[0], exchange="LSE")
    assert set(err.value.valid) == {"NYSE", "NASDAQ"}
    with pytest.raises(QueryError):
        reader.similar(reader.tickers[0], k=0)


def test_no_data_on_date(reader):
    ticker = generated_ticker(GAP_ASSET)
    with pytest.raises(NoDataOnDate) as err:
        reader.similar(ticker, "2012-03-01")
    exc = err.value
    assert exc.ticker == ticker and exc.date == dt.date(2012, 3, 1)
    assert exc.first == reader.dates[0] and exc.last == reader.dates[-1]
    assert "has vectors from" in str(exc)
    assert reader.similar(ticker, k=3).neighbors  # present again on the newest date
    assert ticker not in [n.ticker for n in reader.similar(reader.tickers[0], "2012-03-01", k=59).neighbors]


def generated_ticker(position: int) -> str:
    from market.synthetic import generate

    return str(generate(n_assets=60, years=2.5, seed=0).panel.tickers[position])


def test_lru_loads_history_lazily(built):
    from index.query import IndexReader

    root, result = built
    one_date = (result.vectors // result.n_dates) * result.dim * 4
    small = IndexReader(result.version, root=root, cache_bytes=3 * one_date, omp_threads=1)
    assert small.cache_info()["loads"] == 1  # only the newest date at open
    for date in small.dates[:10]:
        small.similar(small.tickers[0], date, k=2)
    info = small.cache_info()
    assert info["loads"] == 11 and len(info["cached_dates"]) <= 3 and info["evictions"] >= 7
    assert info["bytes"] <= info["limit_bytes"] or len(info["cached_dates"]) == 1
    small.similar(small.tickers[0], small.dates[9], k=2)
    assert small.cache_info()["hits"] >= 1


def test_a_file_damaged_after_it_was_served_is_refused_when_next_loaded(built, tmp_path):
    """What is served is parsed from bytes checked at that load: a date evicted from the cache and
    damaged on disk meanwhile is refused with IndexCorruptError, never answered from altered bytes,
    and the other dates keep answering."""
    import shutil

    from index.errors import IndexCorruptError
    from index.query import IndexReader

    root, result = built
    shutil.copytree(root / result.version, tmp_path / result.version)
    one = IndexReader(result.version, root=tmp_path, cache_bytes=0, omp_threads=1, verify="lazy")
    first, second = one.dates[3], one.dates[4]
    ticker = one.tickers[0]
    before = one.similar(ticker, first, k=3)
    one.similar(ticker, second, k=3)  # evicts the first date (the cache keeps one)
    assert one.cache_info()["cached_dates"] == [second.isoformat()]
    date = first.isoformat()
    for rel in one.index_version.date_files(date).values():
        with open(tmp_path / result.version / rel, "r+b") as fh:  # a float near the end, in place
            fh.seek(-6, 2)
            fh.write(b"\x00\x00\x80\x7f")
    with pytest.raises(IndexCorruptError, match="checksum mismatch"):
        one.similar(ticker, first, k=3)
    assert one.similar(ticker, second, k=3).neighbors
    assert one.similar(ticker).neighbors
    assert before.neighbors  # it was answered before the damage


def test_the_prior_changes_the_ranking_the_reader_serves(reader):
    """The fixture's model has learned a candidate prior: ranking by the stored vectors' plain inner
    products would answer otherwise, so the brute force above checks that queries read it as 1."""
    _, ids, vectors = reader.vectors()
    prior = np.asarray(vectors[:, -1], dtype=np.float64)
    assert np.ptp(prior) > 1e-3
    plain = np.asarray(vectors, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    queries = np.array(vectors, dtype=np.float64)
    queries[:, -1] = 1.0
    served = queries @ np.asarray(vectors, dtype=np.float64).T
    np.fill_diagonal(plain, -np.inf)
    np.fill_diagonal(served, -np.inf)
    assert (plain.argmax(axis=1) != served.argmax(axis=1)).any()


def test_all_pairs(reader):
    ids, labels, scores = reader.all_pairs(k=5)
    assert labels.shape == (len(ids), 5)
    assert not (labels == ids[:, None]).any()
    for row in (0, 17, len(ids) - 1):
        single = reader.similar(reader.tickers[ids[row]], k=5)
        np.testing.assert_allclose(scores[row], [n.score for n in single.neighbors], atol=1e-5)


def test_neighbor_tables_answer_as_an_exact_search(built, reader):
    """Stored per-date tables (K = 20) and the newest date's wider one answer exactly as brute force;
    wider k falls back to a search."""
    from index.query import IndexReader

    root, result = built
    older = reader.dates[len(reader.dates) // 2]
    assert reader._hot.table[0].shape[1] == 50  # computed at open: wider than the stored 20
    assert reader._entry(reader.dates.index(older)).table[0].shape[1] == 20
    narrow = IndexReader(result.version, root=root, hot_neighbors=0, omp_threads=1)
    assert narrow._hot.table[0].shape[1] == 20  # the stored one, nothing computed
    for ticker in reader.tickers[::3]:
        for date in (None, older):
            if not reader._entry(reader.dates.index(older)).present[reader.tickers.index(ticker)]:
                continue
            for k in (1, 10, 20, 50):
                ids, scores, all_scores = brute_force(reader, ticker, date, k)
                assert_matches(reader.similar(ticker, date, k=k), ids, scores, all_scores)
                assert_matches(narrow.similar(ticker, date, k=k), ids, scores, all_scores)


def test_a_version_without_tables_searches(checkpoint, panel, tmp_path, reader):
    from index.query import IndexReader

    result = build(checkpoint, panel, tmp_path, neighbors=0)
    searching = IndexReader(result.version, root=tmp_path, hot_neighbors=0, omp_threads=1)
    date = searching.dates[3]
    assert searching._hot.table is None and searching._entry(3).table is None
    assert not any(f.startswith("neighbors/") for f in searching.index_version.files)
    with_tables = IndexReader(result.version, root=tmp_path, omp_threads=1)  # newest computed at open
    for ticker in searching.tickers[:10]:
        for k in (1, 10):
            ids, scores, all_scores = brute_force(searching, ticker, date, k)
            assert_matches(searching.similar(ticker, date, k=k), ids, scores, all_scores)
            a, b = with_tables.similar(ticker, k=k), searching.similar(ticker, k=k)
            np.testing.assert_allclose(
                [n.score for n in a.neighbors], [n.score for n in b.neighbors], atol=1e-5
            )
