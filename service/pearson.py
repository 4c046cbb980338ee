"""Plain Pearson retrieval, the baseline the model is measured against: peers ranked by the
correlation of their trailing 64 daily returns with the query's, from the panel's closes.

GET /similar/{ticker}/pearson answers with it beside the model's answer, and the track record
(service/track_record.py) scores it on past dates. Both read only closes up to the query date.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from index.errors import NoDataOnDate, QueryError
from model.metrics import top_k_peers
from service.errors import prices_unavailable, to_api_error
from service.params import PeerQuery
from service.registry import Snapshot
from service.similar import _payload

# Daily returns in the window: 65 closes ending at the date, the span GET /assets/{ticker}/prices
# gives by default.
WINDOW_RETURNS = 64


def unit_rows(returns: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so that row products are Pearson correlations;
    a constant row becomes zeros (correlation 0), as in model.targets.pearson_matrix."""
    x = returns - returns.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def trailing_returns(close: np.ndarray, position: int, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(returns (len(columns), 64) float64, complete bool): the daily returns of the 65 closes ending
    at panel row `position`; complete where all 65 closes exist. Nothing after the date is read."""
    columns = np.asarray(columns, dtype=np.int64)
    if position < WINDOW_RETURNS:
        return np.full((len(columns), WINDOW_RETURNS), np.nan), np.zeros(len(columns), dtype=bool)
    path = close[position - WINDOW_RETURNS : position + 1, columns].astype(np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = path[:, 1:] / path[:, :-1] - 1.0
    complete = np.isfinite(returns).all(axis=1) & (columns >= 0)
    return returns, complete


def present_ids(snapshot: Snapshot, as_of: dt.date) -> np.ndarray:
    """Asset ids that have a vector on the indexed date `as_of`: the universe the model ranks."""
    _, ids, _ = snapshot.reader.vectors(as_of)
    return np.asarray(ids, dtype=np.int64)


def _allowed(snapshot: Snapshot, query: PeerQuery, aid: int) -> np.ndarray:
    """The mask of assets the query's filters allow, by the index's own sector and exchange labels
    (those GET /similar filters by). The values were checked by the probe in `pearson_answer`."""
    table = snapshot.reader.manifest["tickers"]
    sectors = np.asarray(table["sector"], dtype=object)
    mask = np.ones(len(sectors), dtype=bool)
    if query.sector:
        mask &= sectors == query.sector
    if query.exchange:
        mask &= np.asarray(table["exchange"], dtype=object) == query.exchange
    if query.exclude_same_sector:
        mask &= sectors != sectors[aid]
    if query.among is not None:
        universe = np.zeros(len(sectors), dtype=bool)
        universe[[snapshot.reader.asset_id(t) for t in query.among]] = True
        mask &= universe
    return mask


def pearson_answer(snapshot: Snapshot, query: PeerQuery) -> dict:
    """GET /similar's answer with Pearson's ranking: the same query, peers and errors, the score
    being the correlation of the trailing 64 daily returns with the query's."""
    reader = snapshot.reader
    try:
        # The same question with k=1 resolves the date and checks the ticker, its vector on that
        # date and every filter value exactly as GET /similar does, with its errors.
        probe = reader.similar(
            query.ticker,
            query.date,
            1,
            sector=query.sector,
            exchange=query.exchange,
            exclude_same_sector=query.exclude_same_sector,
            among=query.among,
        )
    except QueryError as exc:
        raise to_api_error(exc) from None
    aid, as_of = probe.asset_id, probe.as_of
    if snapshot.close is None or as_of not in snapshot.close_position:
        raise prices_unavailable(snapshot.index_version)
    candidates = present_ids(snapshot, as_of)
    candidates = candidates[_allowed(snapshot, query, aid)[candidates] & (candidates != aid)]
    universe = np.concatenate([[aid], candidates])
    returns, complete = trailing_returns(
        snapshot.close, snapshot.close_position[as_of], snapshot.close_column[universe]
    )
    if not complete[0]:
        first, last = snapshot.first_last[aid]
        raise to_api_error(
            NoDataOnDate(
                snapshot.meta[aid]["ticker"],
                as_of,
                dt.date.fromisoformat(first) if first else None,
                dt.date.fromisoformat(last) if last else None,
                query.date,
            )
        )
    universe, returns = universe[complete], returns[complete]
    peers: list[tuple[int, float]] = []
    if len(universe) > 1:
        units = unit_rows(returns)
        scores = np.clip(units @ units[0], -1.0, 1.0)
        top = top_k_peers(scores[None, :], query.k, queries=np.array([0]))[0]
        peers = [(int(universe[i]), float(scores[i])) for i in top]
    if query.min_score is not None:
        peers = [(p, s) for p, s in peers if s >= query.min_score]
    body = _payload(snapshot, aid, query.date, as_of, peers, query.include_realized)
    return {**body, "method": "pearson", "window_returns": WINDOW_RETURNS}
