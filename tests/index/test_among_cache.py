"""The cache of `among` universes: keyed by the set of assets, bounded in bytes."""

from __future__ import annotations

import gc
import random
import tracemalloc

from index.query import IndexReader


def test_the_universe_cache_keeps_sets_not_the_lists_sent(built):
    """A universe sent as a long list (repeats, any order) costs the cache its set of assets, not the
    list: 200 lists of 20,000 tickers each leave well under a megabyte behind."""
    root, result = built
    reader = IndexReader(result.version, root=root, cache_bytes=64 * 2**20, omp_threads=1)
    tickers = reader.tickers[10:30]
    query, rng = reader.tickers[0], random.Random(0)
    expected = reader.similar(query, k=3, among=tickers).neighbors
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(200):
        universe = rng.choices(tickers, k=20_000)
        found = reader.similar(query, k=3, among=universe).neighbors
        assert {n.ticker for n in found} <= set(universe)
        del universe, found
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert retained < 2**20, f"the cache kept {retained / 2**20:.1f} MiB"
    # the same set in another order and with repeats is the same universe
    assert reader.similar(query, k=3, among=list(reversed(tickers)) * 3).neighbors == expected


def test_the_universe_cache_is_bounded_in_bytes(built, monkeypatch):
    monkeypatch.setattr("index.query.AMONG_CACHE_BYTES", 4096)
    root, result = built
    reader = IndexReader(result.version, root=root, cache_bytes=64 * 2**20, omp_threads=1)
    tickers, query = reader.tickers, reader.tickers[0]
    for i in range(1, len(tickers)):
        reader.similar(query, k=1, among=tickers[i : i + 3])
    assert 0 < reader.cache_info()["universe_bytes"] <= 4096
