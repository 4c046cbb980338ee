"""The served index's track record: realised FRC@k of the model's answers by month, against plain
Pearson and random peers, on the past dates whose 64-day future is known.

FRC@k is the project's metric (model.metrics, docs/FASCL_SPEC.md): per query, the mean Pearson
correlation of the next 64 daily returns between the query asset and its top-k peers; averaged
over queries. On each sampled date the three methods rank the same candidates: the assets with a
vector that date whose trailing 64 returns and next 64 returns are complete. The model ranks them by
the inner product of their stored embeddings (what the service's exact search answers), Pearson by
the correlation of their trailing 64 daily returns, random by a draw fixed by the date.

A sample keeps it to a second or two: every SAMPLE_STRIDE-th such date, and at most
MAX_QUERIES query assets a date (a fixed draw). It is computed once per index version and k, on
first request, and kept until another version is served.
"""

from __future__ import annotations

import threading

import numpy as np

from model.metrics import peer_frc, top_k_peers
from model.targets import HORIZON, future_returns
from service.pearson import WINDOW_RETURNS, trailing_returns, unit_rows
from service.registry import Snapshot

SAMPLE_STRIDE = 16  # as `fascl evaluate --stride 16`: dates 16 apart share little of their futures
MAX_QUERIES = 300
METHODS = ("model", "pearson", "random")

_lock = threading.Lock()  # one computation at a time; others wait for its result
_cache: dict[tuple[str, int], dict] = {}


def track_record(snapshot: Snapshot, k: int) -> dict:
    """The track record of the served version at k, computed on first use and cached."""
    key = (snapshot.index_version, k)
    with _lock:
        if key not in _cache:
            # Only the served version's records are kept: a swap lets the old ones go.
            for old in [c for c in _cache if c[0] != snapshot.index_version]:
                del _cache[old]
            _cache[key] = _compute(snapshot, k)
        return _cache[key]


def sample_dates(snapshot: Snapshot) -> list:
    """Indexed dates whose next 64 closes are in the panel, every SAMPLE_STRIDE-th from the first."""
    if snapshot.close is None:
        return []
    rows = len(snapshot.close)
    known = [d for d in snapshot.reader.dates if snapshot.close_position.get(d, rows) + HORIZON < rows]
    return known[::SAMPLE_STRIDE]


def _date_frc(snapshot: Snapshot, date, k: int) -> dict[str, np.ndarray] | None:
    """Per query of one date, FRC@k of each method; None when too few candidates."""
    _, ids, vectors = snapshot.reader.vectors(date)  # the assets with a vector that date
    ids = np.asarray(ids, dtype=np.int64)
    t = snapshot.close_position[date]
    columns = snapshot.close_column[ids]
    past, past_ok = trailing_returns(snapshot.close, t, columns)
    future, future_ok = future_returns(snapshot.close, t, np.maximum(columns, 0), HORIZON)
    keep = past_ok & future_ok & (columns >= 0)
    if keep.sum() <= k:
        return None
    past, future = past[keep], future[keep]
    embeddings = np.asarray(vectors[keep], dtype=np.float32)
    rng = np.random.default_rng(date.toordinal())
    n = len(past)
    queries = np.sort(rng.choice(n, size=min(n, MAX_QUERIES), replace=False))
    future_units = unit_rows(future)
    future_corr = future_units[queries] @ future_units.T  # (queries, candidates)
    past_units = unit_rows(past)
    scores = {
        "model": embeddings[queries] @ embeddings.T,
        "pearson": past_units[queries] @ past_units.T,
        "random": rng.random((len(queries), n)),
    }
    rows = np.arange(len(queries))
    return {
        m: peer_frc(top_k_peers(s, k, queries=queries), future_corr, queries=rows) for m, s in scores.items()
    }


def _compute(snapshot: Snapshot, k: int) -> dict:
    months: dict[str, dict] = {}
    everything = {m: [] for m in METHODS}
    for date in sample_dates(snapshot):
        frc = _date_frc(snapshot, date, k)
        if frc is None:
            continue
        month = months.setdefault(date.isoformat()[:7], {"dates": 0, **{m: [] for m in METHODS}})
        month["dates"] += 1
        for m in METHODS:
            month[m].append(frc[m])
            everything[m].append(frc[m])

    def means(values: dict) -> dict:
        return {m: round(float(np.concatenate(values[m]).mean()), 6) for m in METHODS}

    rows = [
        {"month": name, "dates": m["dates"], "queries": int(sum(len(v) for v in m["model"])), **means(m)}
        for name, m in sorted(months.items())
    ]
    overall = None
    if rows:
        overall = {
            "dates": sum(r["dates"] for r in rows),
            "queries": sum(r["queries"] for r in rows),
            **means(everything),
        }
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
        "months": rows,
        "overall": overall,
    }
