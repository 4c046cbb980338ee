"""Answering one similarity query from a snapshot: index errors become API errors, results become JSON-ready dicts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson

from index.errors import QueryError
from model.targets import HORIZON, future_returns, pearson_matrix
from service.errors import to_api_error
from service.params import PeerQuery
from service.registry import Snapshot


def realized_correlations(snapshot: Snapshot, as_of: dt.date, query_id: int, peer_ids: list[int]) -> list:
    """Pearson correlation of the next 64 daily returns with the query's, where that future is known."""
    if snapshot.close is None or as_of not in snapshot.close_position:
        return [None] * len(peer_ids)
    columns = snapshot.close_column[[query_id, *peer_ids]]
    if columns[0] < 0:
        return [None] * len(peer_ids)
    returns, valid = future_returns(
        snapshot.close, snapshot.close_position[as_of], np.maximum(columns, 0), HORIZON
    )
    valid &= columns >= 0
    if not valid[0]:
        return [None] * len(peer_ids)
    corr = pearson_matrix(np.nan_to_num(returns))[0]
    return [round(float(corr[i + 1]), 6) if valid[i + 1] else None for i in range(len(peer_ids))]


def answer(snapshot: Snapshot, query: PeerQuery) -> dict:
    """The answer to one query, JSON-ready, or the APIError of its index error."""
    try:
        result = snapshot.reader.similar(
            query.ticker,
            query.date,
            query.k,
            sector=query.sector,
            exchange=query.exchange,
            exclude_same_sector=query.exclude_same_sector,
            min_score=query.min_score,
            among=query.among,
        )
    except QueryError as exc:
        raise to_api_error(exc) from None
    peers = [(n.asset_id, n.score) for n in result.neighbors]
    return _payload(snapshot, result.asset_id, query.date, result.as_of, peers, query.include_realized)


def _payload(snapshot, aid: int, requested, as_of: dt.date, peers: list[tuple[int, float]], include_realized):
    """The response as a dict whose result list is pre-serialised JSON (orjson.Fragment).

    Each row joins the asset's metadata JSON, serialised once per snapshot, with its rank and
    score: building and serialising a dict per peer was the largest cost left in a request."""
    fragments = snapshot.meta_json
    realized = (
        realized_correlations(snapshot, as_of, aid, [a for a, _ in peers]) if include_realized else None
    )
    rows = []
    for rank, (peer, score) in enumerate(peers, 1):
        tail = (
            b"}"
            if realized is None
            else b',"realized_correlation":' + orjson.dumps(realized[rank - 1]) + b"}"
        )
        rows.append(b'{"rank":%d,%s,"score":%.6f%s' % (rank, fragments[peer], score, tail))
    results = orjson.Fragment(b"[" + b",".join(rows) + b"]")
    query_meta = snapshot.meta[aid]
    return {
        "query": {
            "ticker": query_meta["ticker"],
            "name": query_meta["name"],
            "sector": query_meta["sector"],
            "requested_date": requested.isoformat() if requested else None,
            "as_of": as_of.isoformat(),
        },
        "model_version": snapshot.model_version,
        "index_version": snapshot.index_version,
        "results": results,
    }
