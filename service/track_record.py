"""The served index's track record: realised FRC@k of the model's answers by month, against plain
Pearson and random peers, on the past dates whose 64-day future is known.

FRC@k is the project's metric (model.metrics, docs/FASCL_SPEC.md): per query, the mean Pearson
correlation of the next 64 daily returns between the query asset and its top-k peers; averaged
over queries. On each sampled date the three methods rank the same candidates: the assets with a
vector that date whose trailing 64 returns and next 64 returns are complete. The model ranks them by
the inner product of their stored embeddings (what the service's exact search answers), Pearson by
the correlation of their trailing 64 daily returns, random by a draw fixed by the date.

A sample keeps it short: every SAMPLE_STRIDE-th such date, and at most MAX_QUERIES query assets a
date (a fixed draw). Each method's top-MAX_K peers are ranked once per index version, on first
request; what is kept is, per date and method, the sum over queries of FRC@k for every k, so any k
is then a sum of a few numbers, and the record is kept until another version is served.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

import numpy as np

from index.ann import as_queries
from model.metrics import top_k_peers
from model.targets import HORIZON, future_returns
from service.pearson import WINDOW_RETURNS, trailing_returns, unit_rows
from service.registry import Snapshot
from service.schemas import MAX_K

SAMPLE_STRIDE = 16  # as `fascl evaluate --stride 16`: dates 16 apart share little of their futures
MAX_QUERIES = 300
METHODS = ("model", "pearson", "random")


@dataclass(frozen=True)
class DateRecord:
    date: dt.date
    queries: int
    # Per method, (up to MAX_K,): entry k-1 is the sum over the date's queries of FRC@k; as many
    # entries as the date had candidates besides the query, at most MAX_K.
    sums: dict[str, np.ndarray]


_lock = threading.Lock()  # one computation at a time; others wait for its result
_cache: dict[str, list[DateRecord]] = {}  # index version -> its dates' records


def track_record(snapshot: Snapshot, k: int) -> dict:
    """The track record of the served version at k (1..MAX_K), from its records computed on first use."""
    with _lock:
        records = _cache.get(snapshot.index_version)
        if records is None:
            _cache.clear()  # only the served version's records are kept
            records = _cache[snapshot.index_version] = [
                r for d in sample_dates(snapshot) if (r := _date_record(snapshot, d)) is not None
            ]
    return _summary(snapshot, records, k)


def sample_dates(snapshot: Snapshot) -> list[dt.date]:
    """Indexed dates whose next 64 closes are in the panel, every SAMPLE_STRIDE-th from the first."""
    if snapshot.close is None:
        return []
    rows = len(snapshot.close)
    known = [d for d in snapshot.reader.dates if snapshot.close_position.get(d, rows) + HORIZON < rows]
    return known[::SAMPLE_STRIDE]


def _date_record(snapshot: Snapshot, date: dt.date) -> DateRecord | None:
    """One date's FRC sums for every k and method; None with fewer than two candidates."""
    _, ids, vectors = snapshot.reader.vectors(date)  # the assets with a vector that date
    columns = snapshot.close_column[np.asarray(ids, dtype=np.int64)]
    t = snapshot.close_position[date]
    past, past_ok = trailing_returns(snapshot.close, t, columns)
    future, future_ok = future_returns(snapshot.close, t, np.maximum(columns, 0), HORIZON)
    keep = past_ok & future_ok & (columns >= 0)
    n = int(keep.sum())
    if n < 2:
        return None
    past, future = past[keep], future[keep]
    embeddings = np.asarray(vectors[keep], dtype=np.float32)
    rng = np.random.default_rng(date.toordinal())
    queries = np.sort(rng.choice(n, size=min(n, MAX_QUERIES), replace=False))
    future_units = unit_rows(future)
    future_corr = future_units[queries] @ future_units.T  # (queries, candidates)
    past_units = unit_rows(past)
    scores = {
        # a model with a candidate prior: the query reads its coordinate as 1 (index.ann.as_queries)
        "model": as_queries(embeddings[queries], snapshot.reader.index_version.query_prior) @ embeddings.T,
        "pearson": past_units[queries] @ past_units.T,
        "random": rng.random((len(queries), n)),
    }
    depth = min(MAX_K, n - 1)
    rows = np.arange(len(queries))[:, None]
    sums = {}
    for method, s in scores.items():
        peers = top_k_peers(s, depth, queries=queries)  # (queries, depth), best first
        realised = future_corr[rows, peers]
        frc = np.cumsum(realised, axis=1) / np.arange(1, depth + 1)  # column k-1: FRC@k per query
        sums[method] = frc.sum(axis=0)
    return DateRecord(date, len(queries), sums)


def _summary(snapshot: Snapshot, records: list[DateRecord], k: int) -> dict:
    """FRC@k by month and over every sampled query, from the dates with at least k candidates."""
    usable = [r for r in records if len(r.sums["model"]) >= k]

    def row(group: list[DateRecord]) -> dict:
        queries = sum(r.queries for r in group)
        means = {m: round(float(sum(r.sums[m][k - 1] for r in group) / queries), 6) for m in METHODS}
        return {"dates": len(group), "queries": queries, **means}

    months: dict[str, list[DateRecord]] = {}
    for r in usable:
        months.setdefault(r.date.isoformat()[:7], []).append(r)
    return {
        "index_version": snapshot.index_version,
        "model_version": snapshot.model_version,
        "k": k,
        "horizon": HORIZON,
        "pearson_window_returns": WINDOW_RETURNS,
        "sample": {
            "date_stride": SAMPLE_STRIDE,
            "max_queries_per_date": MAX_QUERIES,
            "description": f"every {SAMPLE_STRIDE}th indexed date whose next {HORIZON} trading days are "
            f"known, at most {MAX_QUERIES} query assets a date (a fixed draw); on each date the three "
            "methods rank the same candidates: the assets with a vector whose trailing and next "
            f"{HORIZON} daily returns are complete",
        },
        "months": [{"month": name, **row(group)} for name, group in sorted(months.items())],
        "overall": row(usable) if usable else None,
    }
