"""Index kinds behind one interface: flat is exact; HNSW and IVF recall against it; the GPU path."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index import ann
from index.query import IndexReader
from tests.index.conftest import build
from tests.index.test_query import assert_matches, brute_force


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(8, n // 100), d))
    x = centers[rng.integers(len(centers), size=n)] + 0.6 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_choose_kind():
    assert ann.choose_kind(5_000) == "flat"
    assert ann.choose_kind(ann.FLAT_MAX + 1) == "hnsw"
    assert ann.choose_kind(ann.FLAT_MAX + 1, gpu=True) == "ivf"
    assert ann.choose_kind(ann.HNSW_MAX + 1) == "ivf"
    assert ann.choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ValueError, match="unknown index kind"):
        ann.choose_kind(10, "lsh")


@pytest.mark.parametrize("kind", ann.INDEX_KINDS)
def test_kinds_recall_and_reconstruct(kind):
    x = clustered(4_000, 48)
    ids = np.arange(len(x), dtype=np.int64) * 3 + 1  # ids are not positions
    index = ann.build_index(x, ids, kind, params=ann.AnnParams(ivf_nlist=32, ivf_nprobe=8), use_gpu=False)
    assert index.ntotal == len(x)
    np.testing.assert_array_equal(index.reconstruct(int(ids[17])), x[17])
    queries = x[:200]
    _, exact = ann.exact_topk(x, queries, 10)
    _, labels = index.search(queries, 10, params=ann.search_params(kind, index))
    recall = ann.recall_at_k(labels, ids[exact], 10)
    assert recall == 1.0 if kind == "flat" else recall > 0.9
    blob = faiss.serialize_index(index)  # survives a write/read, search parameters included
    again = faiss.deserialize_index(blob)
    _, labels2 = again.search(queries, 10, params=ann.search_params(kind, again))
    np.testing.assert_array_equal(labels, labels2)


def test_hnsw_version_answers_like_brute_force(checkpoint, panel, tmp_path):
    result = build(checkpoint, panel, tmp_path, index_kind="hnsw")
    reader = IndexReader(result.version, root=tmp_path)
    assert set(reader.index_version.kinds) == {"hnsw"}
    sectors = np.array(reader.assets["sector"])
    for ticker in reader.tickers[:10]:
        result = reader.similar(ticker, k=10)
        ids, scores, all_scores = brute_force(reader, ticker, k=10)
        assert_matches(result, ids, scores, all_scores)  # 60 vectors: HNSW is exact here
    narrow = min(reader.sectors, key=lambda s: (sectors == s).sum())
    outsider = next(t for t, s in zip(reader.tickers, sectors, strict=True) if s != narrow)
    assert len(reader.similar(outsider, k=3, sector=narrow).neighbors) == (sectors == narrow).sum()


@pytest.mark.skipif(ann.gpu_count() == 0, reason="faiss sees no GPU (faiss-cpu build or no device)")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_build_matches_cpu(kind):
    x = clustered(6_000, 64)
    ids = np.arange(len(x), dtype=np.int64) + 100
    params = ann.AnnParams(ivf_nlist=32, ivf_nprobe=32)  # all lists probed: exact
    gpu = ann.build_index(x, ids, kind, params=params, use_gpu=True)
    cpu = ann.build_index(x, ids, kind, params=params, use_gpu=False)
    assert "Gpu" not in type(faiss.downcast_index(gpu.index)).__name__  # moved to the CPU
    blob = faiss.serialize_index(gpu)  # a GPU index cannot be written; this one can
    gpu = faiss.deserialize_index(blob)
    d_gpu, i_gpu = gpu.search(x[:50], 10, params=ann.search_params(kind, gpu))
    d_cpu, i_cpu = cpu.search(x[:50], 10, params=ann.search_params(kind, cpu))
    np.testing.assert_allclose(d_gpu, d_cpu, atol=1e-4)
    assert ann.recall_at_k(i_gpu, i_cpu, 10) > 0.99
    np.testing.assert_allclose(gpu.reconstruct(int(ids[5])), x[5], atol=1e-6)


def test_short_approximate_answer_falls_back_to_exact(checkpoint, panel, tmp_path):
    """IVF probing 1 of 8 lists misses most of a narrow sector; the reader still returns k of it, exactly."""
    params = ann.AnnParams(ivf_nlist=8, ivf_nprobe=1)
    result = build(checkpoint, panel, tmp_path, index_kind="ivf", params=params, start="2012-05-25")
    reader = IndexReader(result.version, root=tmp_path)
    sectors = np.array(reader.assets["sector"])
    entry = reader._entry(len(reader.dates) - 1)
    fell_back = 0
    for sector in reader.sectors:
        allowed = sectors == sector
        flt = reader._filter(sector, None, None)
        for aid, ticker in enumerate(reader.tickers[:20]):
            got = reader.similar(ticker, k=3, sector=sector)
            available = int((allowed & entry.present).sum() - (allowed[aid] and entry.present[aid]))
            assert len(got.neighbors) == min(3, available)
            assert all(sectors[n.asset_id] == sector for n in got.neighbors)
            query = entry.index.reconstruct(aid).reshape(1, -1)
            _, raw = entry.index.search(query, 4, params=ann.search_params("ivf", entry.index, flt.selector))
            if len([i for i in raw[0] if i >= 0 and i != aid]) < min(3, available):  # IVF alone was short
                fell_back += 1
                ids, scores, all_scores = brute_force(reader, ticker, k=3, allowed=allowed)
                assert_matches(got, ids, scores, all_scores)
    assert fell_back > 0
