"""Answering one similarity query from a snapshot: index errors become API errors, results become JSON-ready dicts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson

from index.errors import (
    DateOutOfRange,
    NoDataOnDate,
    QueryError,
    UnknownExchange,
    UnknownSector,
    UnknownTicker,
    UnknownTickers,
)
from model.targets import HORIZON, future_returns, pearson_matrix
from service.errors import APIError, excerpt
from service.registry import Snapshot

UNKNOWN_LISTED = 20


def parse_date(value: str | None) -> dt.date | None:
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise APIError(
            422, "invalid_date", f"date {excerpt(value)} is not a valid YYYY-MM-DD date", {"date": value[:40]}
        ) from None


def to_api_error(exc: QueryError) -> APIError:
    if isinstance(exc, UnknownTicker):
        return APIError(
            404, "unknown_ticker", str(exc), {"ticker": exc.ticker, "close_matches": exc.suggestions}
        )
    if isinstance(exc, NoDataOnDate):
        detail = {
            "ticker": exc.ticker,
            "date": exc.date.isoformat(),
            "available_from": exc.first.isoformat() if exc.first else None,
            "available_to": exc.last.isoformat() if exc.last else None,
        }
        return APIError(404, "no_data_on_date", str(exc), detail)
    if isinstance(exc, DateOutOfRange):
        detail = {"date": exc.date.isoformat(), "first": exc.first.isoformat(), "last": exc.last.isoformat()}
        return APIError(404, "date_out_of_range", str(exc), detail)
    if isinstance(exc, UnknownSector):
        return APIError(422, "unknown_sector", str(exc), {"sector": exc.value, "valid": exc.valid})
    if isinstance(exc, UnknownTickers):
        # A long universe of unknown tickers names the first few: the answer stays small.
        detail = {
            "unknown": exc.values[:UNKNOWN_LISTED],
            "unknown_count": len(exc.values),
            "close_matches": {t: m for t, m in exc.suggestions.items() if t in exc.values[:UNKNOWN_LISTED]},
        }
        return APIError(422, "unknown_tickers", str(exc), detail)
    if isinstance(exc, UnknownExchange):
        return APIError(422, "unknown_exchange", str(exc), {"exchange": exc.value, "valid": exc.valid})
    return APIError(422, "invalid_query", str(exc))


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


def answer(
    snapshot: Snapshot,
    ticker: str,
    date: str | None,
    k: int,
    sector: str | None = None,
    exchange: str | None = None,
    exclude_same_sector: bool = False,
    min_score: float | None = None,
    include_realized: bool = False,
    among: list[str] | None = None,
) -> dict:
    requested = parse_date(date)
    try:
        result = snapshot.reader.similar(
            ticker,
            requested,
            k,
            sector=sector,
            exchange=exchange,
            exclude_same_sector=exclude_same_sector,
            min_score=min_score,
            among=among,
        )
    except QueryError as exc:
        raise to_api_error(exc) from None
    peers = [(n.asset_id, n.score) for n in result.neighbors]
    return _payload(snapshot, result.asset_id, requested, result.as_of, peers, include_realized)


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
