"""FAISS index construction: exact inner product (flat) up to ~100k vectors a date, HNSW or IVF above.

Every index is an `IndexIDMap2` whose ids are the version's asset ids, so a caller can `reconstruct`
an asset's vector by id and results come back as asset ids whatever the index kind. Scores are inner
products: cosine similarity for unit vectors, or, for an encoder with a history path, the inner
product of vectors in the unit ball (a shrunk correlation estimate; model/encoder.py).

faiss-gpu builds the index when `faiss.get_num_gpus() > 0` (flat and IVF; HNSW has no GPU
implementation and is built on the CPU); the GPU index is moved to the CPU with
`faiss.index_gpu_to_cpu` before anyone writes it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import faiss
import numpy as np

INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
# faiss wiki, "Guidelines to choose an index": exact search is the right call up to ~10k-100k vectors;
# at 100k, one query on a flat index scans 100k x d floats (~75 MB at d=192), ~10 ms on one core.
FLAT_MAX = 100_000
# Above this HNSW's graph (M * 2 * 4 bytes a vector on level 0, plus build time) is the wrong trade;
# IVF builds in a k-means pass and scales to millions.
HNSW_MAX = 2_000_000

_gpu_resources = None


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def gpu_resources():
    """One `StandardGpuResources` per process (it owns a scratch allocation on the device)."""
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
    return _gpu_resources


def set_threads(threads: int) -> int:
    """The one place thread counts are set: faiss's OpenMP threads and, where torch is loaded,
    torch's. Call it once per process or worker from the entry point's settings, and again on any
    other thread that searches: OpenMP's count belongs to the calling thread (the service's event
    loop, a threadpool thread of a sync route). torch is not imported here: the service never loads it."""
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    faiss.omp_set_num_threads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


@dataclass(frozen=True)
class AnnParams:
    """Approximate-index parameters; None means "chosen from the date's size".

    The defaults are set on real FASCL embeddings, which are hard for approximate search: cosine
    similarities crowd together (random pairs 0.52 +- 0.06, top-1 0.78, top-10 0.75 on us_nasdaq),
    so the faiss textbook settings (HNSW efSearch 128, IVF nprobe nlist/16) gave recall@10 of only
    0.66 / 0.74 at 200k vectors. Measured there (bench/index_speed.py --ann-version, 2 CPU cores):
    HNSW M=32 efConstruction=200 reaches 0.93 / 0.98 at efSearch 256 / 512 (1.6 / 3.7 ms a query,
    exact: 14.5 ms); IVF nlist=2048 reaches 0.94 / 0.99 at nprobe 512 / 1024 (2.9 / 6.2 ms)."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 384
    ivf_nlist: int | None = None  # default ~4 sqrt(n), a power of two, at most n / 39
    ivf_nprobe: int | None = None  # default nlist / 3, at least 16

    def to_dict(self) -> dict:
        return asdict(self)

    def nlist(self, n: int) -> int:
        if self.ivf_nlist:
            return int(max(1, min(self.ivf_nlist, n)))
        nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
        return int(max(1, min(nlist, 65_536, n // 39)))  # k-means wants >= 39 points a centroid

    def nprobe(self, nlist: int) -> int:
        return int(max(1, min(nlist, self.ivf_nprobe or max(16, nlist // 3))))


def choose_kind(n: int, requested: str = "auto", *, gpu: bool = False) -> str:
    """The index kind for a date with `n` vectors: `requested` unless it is "auto"."""
    if requested != "auto":
        if requested not in INDEX_KINDS:
            raise ValueError(
                f"unknown index kind {requested!r}; choose auto or one of {', '.join(INDEX_KINDS)}"
            )
        return requested
    if n <= FLAT_MAX:
        return "flat"
    return "ivf" if gpu or n > HNSW_MAX else "hnsw"


def empty_index(kind: str, d: int, n: int, params: AnnParams = AnnParams()) -> faiss.Index:
    """A CPU `IndexIDMap2` of `kind` for `n` vectors of dimension `d`, not yet trained or filled."""
    if kind == "flat":
        sub = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        sub = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        sub.hnsw.efConstruction = params.hnsw_ef_construction
        sub.hnsw.efSearch = params.hnsw_ef_search
    elif kind == "ivf":
        nlist = params.nlist(n)
        sub = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sub.nprobe = params.nprobe(nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    index = faiss.IndexIDMap2(sub)
    index.referenced_objects = [sub]  # the Python wrapper must not free `sub` before `index`
    return index


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    kind: str = "flat",
    *,
    params: AnnParams = AnnParams(),
    use_gpu: bool | None = None,
) -> faiss.Index:
    """A filled CPU index over `vectors` (n x d float32, at most unit length) with ids `ids` (asset ids).

    With `use_gpu` (default: when faiss sees a GPU) flat and IVF indexes are built by faiss-gpu and
    moved to the CPU; HNSW is always built on the CPU. An IVF index gets a direct map so that
    `reconstruct(id)` works on it as on the others."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.ascontiguousarray(ids, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"vectors {x.shape} and ids {labels.shape} do not match")
    n, d = x.shape
    gpu = gpu_count() > 0 if use_gpu is None else use_gpu
    index = empty_index(kind, d, n, params)
    if gpu and kind in ("flat", "ivf"):
        device_index = faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
        _fill(device_index, x, labels, params.nlist(n) if kind == "ivf" else None)
        index = faiss.index_gpu_to_cpu(device_index)
        del device_index
        if kind == "ivf":  # the GPU clone's nprobe does not always survive the trip
            faiss.extract_index_ivf(index).nprobe = params.nprobe(params.nlist(n))
    else:
        _fill(index, x, labels, params.nlist(n) if kind == "ivf" else None)
    if kind == "ivf":
        faiss.extract_index_ivf(index).make_direct_map()
    return index


def _fill(index: faiss.Index, x: np.ndarray, labels: np.ndarray, nlist: int | None) -> None:
    if nlist is not None and not index.is_trained:
        if len(x) < nlist:
            raise ValueError(f"an IVF index with {nlist} lists needs at least {nlist} vectors, not {len(x)}")
        sample = x
        if len(x) > 256 * nlist:  # k-means needs ~40-256 points a centroid, no more
            pick = np.random.default_rng(0).choice(len(x), 256 * nlist, replace=False)
            sample = x[np.sort(pick)]
        index.train(sample)
    if len(x):
        index.add_with_ids(x, labels)


def search_params(kind: str, index: faiss.Index, sel=None):
    """Per-call SearchParameters (IndexIDMap2 writes into them, so they must not be shared between threads)."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=faiss.downcast_index(index.index).hnsw.efSearch)
    if kind == "ivf":
        return faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(index).nprobe)
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product in numpy: (scores, row positions), best first."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(base, dtype=np.float32).T
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


# Every asset's top neighbors per date are precomputed (stored by the build, or computed at open for
# the newest date) up to this many assets a date: one all-pairs search is O(n^2 d).
NEIGHBOR_TABLE_MAX = 20_000
NEIGHBOR_DTYPE = np.dtype([("id", np.int32), ("score", np.float32)])


def drop_self(
    labels: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a k+1 all-pairs search without each query's own id: its match, or where it fell
    outside the k+1 (ties between duplicates), the last column."""
    keep = labels != ids[:, None]
    keep[keep.all(axis=1), -1] = False
    return labels[keep].reshape(len(ids), k), scores[keep].reshape(len(ids), k)


def as_queries(vectors: np.ndarray, query_prior: bool) -> np.ndarray:
    """Stored vectors as queries (float32, C order): where the model's last coordinate is a candidate
    prior (model/encoder.py, query_prior), a query reads it as 1, so that the inner product of query i
    with stored j is e_i . e_j + p_j. Otherwise the vectors themselves."""
    queries = np.array(vectors, dtype=np.float32, order="C", ndmin=2, copy=query_prior or None)
    if query_prior:
        queries[:, -1] = 1.0
    return queries


def neighbor_table(vectors: np.ndarray, ids: np.ndarray, k: int, query_prior: bool = False) -> np.ndarray:
    """Every asset's exact top-k by inner product among the others, best first, as a structured
    (n, k) array of (id, score); rows of a date with fewer than k+1 assets end in id -1.
    `query_prior`: the queries read the last coordinate as 1 (as_queries)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    scores, rows = flat.search(as_queries(vectors, query_prior), k + 1)
    labels = np.where(rows >= 0, np.asarray(ids, dtype=np.int64)[np.maximum(rows, 0)], -1)
    labels, scores = drop_self(labels, scores, np.asarray(ids, dtype=np.int64), k)
    table = np.empty(labels.shape, dtype=NEIGHBOR_DTYPE)
    table["id"], table["score"] = labels, scores
    return table


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k ids that the approximate search also returned in its top k."""
    a, e = np.asarray(approx)[:, :k], np.asarray(exact)[:, :k]
    hits = sum(len(np.intersect1d(a[i], e[i][e[i] >= 0])) for i in range(len(e)))
    total = int((e >= 0).sum())
    return hits / total if total else 1.0
