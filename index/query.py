"""The query side: `IndexReader`, opened on one published version, answers "which assets are most
similar to X as of date D". A library API (no web framework here); the service wraps it.

Latency: everything a query needs besides the search itself is precomputed at open (ticker -> id
dict, date ordinals for bisect, sector/exchange id sets, filter bitmaps cached on first use), so the
hot path is a dict lookup, a bisect, `reconstruct` of the query vector from the index, one faiss
search and a list comprehension: no pandas, no Python loop over assets.

Memory: the newest date is loaded at open and stays hot; other dates load on first use (a flat
date's exact index built from its checked vectors file, an approximate one deserialised) into an LRU
bounded in bytes (FASCL_INDEX_CACHE_MB by default).
"""

from __future__ import annotations

import bisect
import datetime as dt
import difflib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd

from index import ann
from index.errors import (
    DateOutOfRange,
    NoDataOnDate,
    QueryError,
    UnknownExchange,
    UnknownSector,
    UnknownTicker,
    UnknownTickers,
)
from index.store import IndexStore, IndexVersion

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
MAX_NEIGHBORS = 1000  # the most neighbors a query returns (the service allows fewer: service.schemas.MAX_K)
DEFAULT_CACHE_BYTES = 2**30  # the LRU of historical dates, unless the caller sizes it (FASCL_INDEX_CACHE_MB)
# Unfiltered queries for k up to a date's table width are row lookups. Builds store a top-K table
# per date (index.build.NEIGHBORS); the newest date's, if narrower than `hot_neighbors`, is computed
# at open by one all-pairs faiss search (0.2 s at 5,000 assets; O(N^2 d), hence the size cap), so
# the most common query -- "similar to X now" -- is a lookup for every k the service allows.
# Filtered and wider queries search the index.
HOT_NEIGHBORS = 50
# An `among` universe (with any sector / exchange filter) that leaves at most this many assets is
# answered by one product with their vectors; wider ones by a faiss search with an id selector.
AMONG_EXACT_MAX = 1024
# Memory bound of the cache of `among` universes (each one a mask and a bitmap over the assets).
AMONG_CACHE_BYTES = 32 * 2**20
_tuple_new = tuple.__new__


class Neighbor(NamedTuple):
    asset_id: int
    ticker: str
    score: float


@dataclass(slots=True)
class SimilarResult:
    ticker: str
    asset_id: int
    requested_date: dt.date | None  # None: "the newest date"
    as_of: dt.date  # the indexed trading date used: the latest on or before the requested one
    neighbors: list[Neighbor]  # best first; never the query asset
    k: int
    version: str

    def to_dict(self) -> dict:
        return {
            "ticker": self.ticker,
            "asset_id": self.asset_id,
            "requested_date": None if self.requested_date is None else self.requested_date.isoformat(),
            "as_of": self.as_of.isoformat(),
            "k": self.k,
            "version": self.version,
            "neighbors": [n._asdict() for n in self.neighbors],
        }


class _Entry:
    """One date's loaded index.

    `xb` is a zero-copy numpy view of a flat index's own vector storage and `row[asset id]` the
    asset's row in it (-1: no vector that date), so the query vector is read from the index by id
    without the copy `reconstruct` makes; other kinds use `reconstruct`. `table` holds every
    asset's precomputed top neighbors (ids, scores), rows in index order: the stored table of the
    date, or for the newest date one computed at open when it asks for more columns."""

    __slots__ = ("pos", "kind", "index", "present", "row", "xb", "nbytes", "table", "stored", "query_prior")

    def __init__(
        self, pos: int, kind: str, index, n_assets: int, dim: int, nbytes: int, query_prior: bool = False
    ):
        self.pos, self.kind, self.index, self.nbytes = pos, kind, index, nbytes
        self.query_prior = query_prior
        ids = faiss.vector_to_array(index.id_map)
        self.row = np.full(n_assets, -1, dtype=np.int64)
        self.row[ids] = np.arange(len(ids))
        self.present = self.row >= 0
        self.xb = None
        if kind == "flat":
            flat = faiss.downcast_index(index.index)
            self.xb = faiss.rev_swig_ptr(flat.get_xb(), len(ids) * dim).reshape(len(ids), dim)
        self.table: tuple[np.ndarray, np.ndarray] | None = None
        self.stored: tuple[np.ndarray, np.ndarray] | None = None  # (ids, vectors) of kinds without xb

    def vector(self, aid: int) -> np.ndarray:
        """The asset's vector as stored in the index, shaped (1, d)."""
        if self.xb is not None:
            r = self.row[aid]
            return self.xb[r : r + 1]
        return self.index.reconstruct(aid).reshape(1, -1)

    def query(self, aid: int) -> np.ndarray:
        """The asset's vector as a query (index.ann.as_queries), shaped (1, d)."""
        vector = self.vector(aid)
        return ann.as_queries(vector, True) if self.query_prior else vector


class _Filter:
    """A cached id filter: the allowed-asset mask and the faiss selector over it (bitmap, O(1) a test)."""

    __slots__ = ("mask", "bits", "selector", "size")

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.bits = np.packbits(mask, bitorder="little")  # kept alive: the selector points into it
        self.selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bits))
        self.size = int(mask.sum())

    @property
    def nbytes(self) -> int:
        return self.mask.nbytes + self.bits.nbytes + 256  # + the objects around them, roughly


def _to_date(value) -> dt.date:
    if isinstance(value, dt.datetime):  # before date: datetime (and pd.Timestamp) is a date subclass
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    try:
        if isinstance(value, np.datetime64):
            return dt.date.fromordinal(int(value.astype("datetime64[D]").astype(np.int64)) + _EPOCH_ORDINAL)
        return pd.Timestamp(value).date()
    except (ValueError, TypeError):
        raise QueryError(f"cannot read {value!r} as a date (use YYYY-MM-DD)") from None


class IndexReader:
    """Similarity queries against one index version.

    `IndexReader(version=None, root=...)` opens the latest version of the store at `root` (or
    `store`); pass an `IndexVersion` to reuse one already opened. `cache_bytes` bounds the LRU of
    historical dates; `omp_threads`, when given, sets faiss's threads (index.ann.set_threads).
    Thread-safe: searches run concurrently, date loads are serialised."""

    def __init__(
        self,
        version: str | IndexVersion | None = None,
        *,
        store: IndexStore | None = None,
        root: str | Path | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        omp_threads: int | None = None,
        verify: str = "auto",
        hot_neighbors: int = HOT_NEIGHBORS,
    ):
        if omp_threads is not None:
            ann.set_threads(omp_threads)
        if isinstance(version, IndexVersion):
            self._version = version
        else:
            if store is None and root is None:
                raise TypeError("IndexReader needs the store (or its root) to open a version by name")
            store = store or IndexStore(root)
            self._version = store.open_version(version, verify=verify)
        self.cache_bytes = int(cache_bytes)
        v = self._version
        m = v.manifest
        table = m["tickers"]
        self._tickers: list[str] = list(table["ticker"])
        self._ids: dict[str, int] = {t: i for i, t in enumerate(self._tickers)}
        self._upper: dict[str, str] = {t.upper(): t for t in self._tickers}
        self._sector = np.array(table["sector"], dtype=object)
        self._exchange = np.array(table["exchange"], dtype=object)
        self._sectors = sorted({s for s in table["sector"] if s})
        self._exchanges = sorted({e for e in table["exchange"] if e})
        self._first = [dt.date.fromisoformat(d) for d in table["first_date"]]
        self._last = [dt.date.fromisoformat(d) for d in table["last_date"]]
        self._dates: list[dt.date] = [dt.date.fromisoformat(d) for d in m["dates"]]
        self._ordinals: list[int] = [d.toordinal() for d in self._dates]
        self._filters: dict[tuple, _Filter | None] = {}
        self._universes: OrderedDict[bytes, _Filter] = OrderedDict()  # least recently used first
        self._universe_bytes = 0
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._cache_used = 0
        self._lock = threading.Lock()  # cache bookkeeping
        self._load_lock = threading.Lock()  # one date load at a time
        self.stats = {"hits": 0, "loads": 0, "evictions": 0}
        self._assets_frame: pd.DataFrame | None = None
        if not self._dates:
            raise QueryError(f"index version {v.version} has no dates")
        self._hot = self._load(len(self._dates) - 1)
        hot = self._hot
        stored = 0 if hot.table is None else hot.table[0].shape[1]
        if hot_neighbors > stored and hot.kind == "flat" and 1 < hot.index.ntotal <= ann.NEIGHBOR_TABLE_MAX:
            _, labels, scores = self.all_pairs(None, k=min(hot_neighbors, hot.index.ntotal - 1))
            hot.table = (labels, scores)

    # --------------------------------------------------------------- metadata
    @property
    def version(self) -> str:
        return self._version.version

    @property
    def model_version(self) -> str:
        return self._version.model_version

    @property
    def manifest(self) -> dict:
        return self._version.manifest

    @property
    def manifest_sha256(self) -> str:
        return self._version.manifest_sha256

    @property
    def index_version(self) -> IndexVersion:
        return self._version

    @property
    def dim(self) -> int:
        return self._version.dim

    @property
    def dates(self) -> list[dt.date]:
        """Indexed trading dates, ascending."""
        return list(self._dates)

    @property
    def first_date(self) -> dt.date:
        return self._dates[0]

    @property
    def last_date(self) -> dt.date:
        return self._dates[-1]

    @property
    def tickers(self) -> list[str]:
        """The ticker table: asset id i is tickers[i]."""
        return list(self._tickers)

    @property
    def sectors(self) -> list[str]:
        return list(self._sectors)

    @property
    def exchanges(self) -> list[str]:
        return list(self._exchanges)

    @property
    def assets(self) -> pd.DataFrame:
        """ticker, name, sector, industry, exchange, first_date, last_date, n_dates; row = asset id."""
        if self._assets_frame is None:
            self._assets_frame = self._version.assets()
        return self._assets_frame.copy()

    def asset_records(self) -> list[dict]:
        return self.assets.to_dict("records")

    def asset_id(self, ticker: str) -> int:
        aid = self._lookup(ticker)
        if aid is None:
            raise UnknownTicker(ticker, self._close_matches(ticker, 5))
        return aid

    def _lookup(self, ticker: str) -> int | None:
        """The asset id of `ticker` as given, else of the indexed ticker equal to it in any case."""
        aid = self._ids.get(ticker)
        return aid if aid is not None else self._ids.get(self._upper.get(str(ticker).upper(), ""))

    def _close_matches(self, ticker: str, n: int) -> list[str]:
        return difflib.get_close_matches(str(ticker).upper(), self._tickers, n=n)

    def resolve_date(self, date=None) -> dt.date:
        """The indexed trading date a query for `date` uses (latest on or before it; None: newest)."""
        return self._dates[self._position(date)[0]]

    def _position(self, date) -> tuple[int, dt.date | None]:
        if date is None:
            return len(self._dates) - 1, None
        day = _to_date(date)
        pos = bisect.bisect_right(self._ordinals, day.toordinal()) - 1
        if pos < 0:
            raise DateOutOfRange(day, self._dates[0], self._dates[-1])
        return pos, day

    # ------------------------------------------------------------------ cache
    def _load(self, pos: int) -> _Entry:
        """One date into memory, parsed from bytes checked against the manifest at every load (also a
        reload after eviction): a file damaged on disk is refused with IndexCorruptError for its date
        alone, and nothing served is read from the file after its check."""
        date = str(np.datetime64(self._dates[pos], "D"))
        index = self._version.read_index(date)
        kind = self._version.kinds[pos]
        stored = self._version.files.get(f"faiss/{date}.faiss")  # an approximate index: graph or lists too
        vector_bytes = stored["bytes"] if stored else 4 * index.ntotal * self.dim
        nbytes = vector_bytes + 48 * index.ntotal + 9 * len(self._tickers)
        entry = _Entry(pos, kind, index, len(self._tickers), self.dim, nbytes, self._version.query_prior)
        table = self._version.read_neighbors(date)
        if table is not None:
            entry.table = (table["id"], table["score"])
            entry.nbytes += table.nbytes
        if entry.xb is None:  # exact re-ranking on approximate kinds reads the stored vectors
            entry.stored = self._version.read_vectors(date, mmap=False)
            entry.nbytes += entry.stored[1].nbytes
        self.stats["loads"] += 1
        return entry

    def _entry(self, pos: int) -> _Entry:
        hot = self._hot
        if pos == hot.pos:
            return hot
        entry = self._cache.get(pos)
        if entry is not None:
            with self._lock:
                self.stats["hits"] += 1
                if pos in self._cache:
                    self._cache.move_to_end(pos)
            return entry
        with self._load_lock:
            entry = self._cache.get(pos)
            if entry is not None:
                return entry
            entry = self._load(pos)
            with self._lock:
                self._cache[pos] = entry
                self._cache_used += entry.nbytes
                while self._cache_used > self.cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_used -= old.nbytes
                    self.stats["evictions"] += 1
        return entry

    def cache_info(self) -> dict:
        with self._lock:
            return {
                "hot_date": self._dates[self._hot.pos].isoformat(),
                "cached_dates": [self._dates[p].isoformat() for p in self._cache],
                "bytes": self._cache_used,
                "limit_bytes": self.cache_bytes,
                "universes": len(self._universes),
                "universe_bytes": self._universe_bytes,
                **self.stats,
            }

    # ---------------------------------------------------------------- filters
    def _filter(self, sector: str | None, exchange: str | None, excluded: str | None) -> _Filter | None:
        key = (sector, exchange, excluded)
        try:
            return self._filters[key]
        except KeyError:
            pass
        if sector is not None and sector not in self._sectors:
            raise UnknownSector(sector, self.sectors)
        if exchange is not None and exchange not in self._exchanges:
            raise UnknownExchange(exchange, self.exchanges)
        if sector is None and exchange is None and not excluded:
            flt = None
        else:
            mask = np.ones(len(self._tickers), dtype=bool)
            if sector is not None:
                mask &= self._sector == sector
            if exchange is not None:
                mask &= self._exchange == exchange
            if excluded:
                mask &= self._sector != excluded
            flt = _Filter(mask)
        if len(self._filters) > 4096:  # filter combinations are few; bound it anyway
            self._filters.clear()
        self._filters[key] = flt
        return flt

    # ---------------------------------------------------------------- queries
    def similar(
        self,
        ticker: str,
        date=None,
        k: int = 10,
        sector: str | None = None,
        exchange: str | None = None,
        exclude_same_sector: bool = False,
        min_score: float | None = None,
        among: Iterable[str] | None = None,
    ) -> SimilarResult:
        """The `k` assets most similar to `ticker` as of `date` (newest when None), best first.

        Raises UnknownTicker, DateOutOfRange, NoDataOnDate, UnknownSector, UnknownExchange (all
        QueryError) or ValueError for a k outside 1..1000."""
        aid = self._ids.get(ticker)
        if aid is None:
            aid = self.asset_id(ticker)
        if not 0 < k <= MAX_NEIGHBORS:
            raise QueryError(f"k must be between 1 and {MAX_NEIGHBORS}, not {k}")
        pos, requested = self._position(date) if date is not None else (len(self._dates) - 1, None)
        entry = self._entry(pos)
        if not entry.present[aid]:
            raise self._no_data(aid, pos, requested)
        excluded = self._sector[aid] if exclude_same_sector else None
        flt = self._filter(sector, exchange, excluded) if (sector or exchange or excluded) else None
        table = entry.table
        if among is not None:
            universe = self._universe(among)
            flt = universe if flt is None else _Filter(universe.mask & flt.mask)
        if among is not None and flt.size <= AMONG_EXACT_MAX:
            neighbors = self._among(entry, aid, k, flt.mask, min_score)
        elif table is not None and flt is None and k <= table[0].shape[1]:
            row = entry.row[aid]
            neighbors = self._neighbors(
                entry, None, table[0][row, :k], table[1][row, :k], aid, k, min_score, None
            )
        else:
            query = entry.query(aid)
            params = ann.search_params(entry.kind, entry.index, None if flt is None else flt.selector)
            scores, labels = entry.index.search(query, k + 1, params=params)
            neighbors = self._neighbors(entry, query, labels[0], scores[0], aid, k, min_score, flt)
        return SimilarResult(
            self._tickers[aid], aid, requested, self._dates[pos], neighbors, k, self._version.version
        )

    def _neighbors(self, entry, query, labels, scores, aid, k, min_score, flt) -> list[Neighbor]:
        tickers = self._tickers
        out = [
            _tuple_new(Neighbor, (label, tickers[label], score))
            for label, score in zip(labels.tolist(), scores.tolist(), strict=True)
            if label >= 0 and label != aid
        ][:k]
        if (
            len(out) < k and entry.kind != "flat" and query is not None
        ):  # an approximate index may come back short
            out = self._exact(entry, query, aid, k, flt, len(out)) or out
        if min_score is not None:
            out = [n for n in out if n.score >= min_score]
        return out

    def _universe(self, tickers: Iterable[str]) -> _Filter:
        """The filter of a peer universe; UnknownTickers for any ticker not indexed. Cached: a desk
        sends the same universe with every query. The key is a digest of the universe's sorted,
        distinct asset ids, so the list as sent (its order, repeats, length) is never kept, and the
        cache is bounded in bytes (AMONG_CACHE_BYTES), the least recently used going first."""
        names = [tickers] if isinstance(tickers, str) else list(tickers)
        ids = [self._lookup(t) for t in names]
        unknown = [t for t, i in zip(names, ids, strict=True) if i is None]
        if unknown:
            raise UnknownTickers(unknown, {t: self._close_matches(t, 3) for t in unknown[:20]})
        assets = np.unique(np.asarray(ids, dtype=np.int64))
        key = hashlib.blake2b(assets.tobytes(), digest_size=16).digest()
        with self._lock:
            cached = self._universes.get(key)
            if cached is not None:
                self._universes.move_to_end(key)
                return cached
        mask = np.zeros(len(self._tickers), dtype=bool)
        mask[assets] = True
        flt = _Filter(mask)
        with self._lock:
            if key not in self._universes:
                self._universes[key] = flt
                self._universe_bytes += flt.nbytes
                while self._universe_bytes > AMONG_CACHE_BYTES and len(self._universes) > 1:
                    _, old = self._universes.popitem(last=False)
                    self._universe_bytes -= old.nbytes
        return flt

    def _among(self, entry, aid: int, k: int, mask: np.ndarray, min_score: float | None) -> list[Neighbor]:
        """Exact top-k among the assets of `mask`: one product with their vectors, which for up to
        AMONG_EXACT_MAX candidates is cheaper than a filtered scan of the whole date."""
        allowed = entry.present & mask
        allowed[aid] = False
        candidates = np.flatnonzero(allowed)
        if len(candidates) == 0:
            return []
        rows = entry.row[candidates]
        base = entry.xb[rows] if entry.xb is not None else entry.stored[1][rows]
        scores = base @ entry.query(aid)[0]
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        tickers = self._tickers
        out = [
            _tuple_new(Neighbor, (a, tickers[a], sc))
            for a, sc in zip(candidates[top].tolist(), scores[top].tolist(), strict=True)
        ]
        return out if min_score is None else [n for n in out if n.score >= min_score]

    def _exact(self, entry, query, aid, k, flt, found) -> list[Neighbor] | None:
        """Exact search over the date's stored vectors, when they hold more candidates than found."""
        allowed = entry.present.copy() if flt is None else entry.present & flt.mask
        allowed[aid] = False
        if int(allowed.sum()) <= found:
            return None
        ids, vectors = entry.stored  # only approximate kinds come here, and they keep their vectors
        rows = np.flatnonzero(allowed[ids])
        scores, top = ann.exact_topk(vectors[rows], query, k)
        picked = ids[rows[top[0]]]
        return [Neighbor(int(a), self._tickers[a], float(s)) for a, s in zip(picked, scores[0], strict=True)]

    def _no_data(self, aid: int, pos: int, requested) -> NoDataOnDate:
        return NoDataOnDate(
            self._tickers[aid], self._dates[pos], self._first[aid], self._last[aid], requested
        )

    # --------------------------------------------------------------- research
    def vectors(self, date=None) -> tuple[dt.date, np.ndarray, np.ndarray]:
        """(as-of date, asset ids, vectors (memory-mapped)) of the date a query for `date` would use."""
        pos, _ = self._position(date)
        ids, vectors = self._version.read_vectors(str(np.datetime64(self._dates[pos], "D")))
        return self._dates[pos], ids, vectors

    def all_pairs(self, date=None, k: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every asset's top-k on one date in one search: (query ids (n,), neighbor ids (n, k), scores).

        The query asset is removed from its own row; rows with fewer candidates end in -1."""
        pos, _ = self._position(date)
        entry = self._entry(pos)
        ids = faiss.vector_to_array(entry.index.id_map)
        x = entry.xb if entry.xb is not None else np.vstack([entry.index.reconstruct(int(a)) for a in ids])
        queries = ann.as_queries(x, entry.query_prior)
        scores, labels = entry.index.search(queries, k + 1, params=ann.search_params(entry.kind, entry.index))
        labels, scores = ann.drop_self(labels, scores, ids, k)
        return ids, labels, scores

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cache_used = 0
