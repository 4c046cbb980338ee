"""Retrieval metrics of the evaluation protocol (docs/FASCL_SPEC.md, "Evaluation protocol").

Everything works on one date's cross-section of B assets, every one of which is a query. `peers`
arrays are (Q, K) indices into that cross-section, best first, never the query itself; future
returns come from `model.targets.future_returns` (the only code that reads the future). The
evaluation driver (model/evaluate.py) calls these per date and aggregates over dates. Queries of
one date share its market, so their values are dependent: the intervals come from a bootstrap that
resamples whole dates (`date_block_bootstrap_means`); the per-query bootstrap (`bootstrap_means`),
which treats every query as independent, understates their width.
"""

from __future__ import annotations

import numpy as np

TRADING_DAYS = 252
CLIP = 0.5  # daily returns are clipped at +-50% in the spread backtest


# ------------------------------------------------------------------ retrieval
def top_k_peers(scores: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k highest-scoring peers per row, best first, never the row itself.

    scores: (B x B); or (Q x B) rows for the assets `queries`, whose own columns are excluded.
    NaN scores rank last."""
    s = np.array(scores, dtype=np.float64, copy=True)
    s[np.isnan(s)] = -np.inf
    if queries is None:
        np.fill_diagonal(s, -np.inf)
    else:
        s[np.arange(len(s)), np.asarray(queries, dtype=np.int64)] = -np.inf
    k = min(k, s.shape[1] - 1)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def frc_at_k(scores: np.ndarray, future_corr: np.ndarray, k: int) -> np.ndarray:
    """Per query: mean future return correlation between the query and its top-k peers."""
    peers = top_k_peers(scores, k)
    return np.take_along_axis(future_corr, peers, axis=1).mean(axis=1)


def _queries(peers: np.ndarray, queries: np.ndarray | None) -> np.ndarray:
    return np.arange(len(peers)) if queries is None else np.asarray(queries, dtype=np.int64)


def peer_frc(peers: np.ndarray, future_corr: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
    """FRC per query: mean of future_corr[q, peers[q]] (peers: (Q, K); queries default 0..Q-1)."""
    q = _queries(peers, queries)
    return future_corr[q[:, None], peers].mean(axis=1)


# ------------------------------------------------------------ sign and ranks
def horizon_returns(daily: np.ndarray, horizons) -> np.ndarray:
    """Compounded returns over the first h days of each row: (B, H) daily -> (B, len(horizons))."""
    growth = np.cumprod(1.0 + np.asarray(daily, dtype=np.float64), axis=1)
    return growth[:, np.asarray(horizons) - 1] - 1.0


def sign_agreement(peers: np.ndarray, returns: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
    """TC per query and horizon: share of peers whose return sign equals the query's.

    returns: (B, n_horizons) per asset. Out: (Q, n_horizons) in [0, 1]. Signs are compared with
    np.sign, so a zero return agrees only with a zero return."""
    q = _queries(peers, queries)
    signs = np.sign(returns)
    return (signs[peers] == signs[q][:, None, :]).mean(axis=1)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties getting their average rank (as scipy's 'average')."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=-1)
    flat_x, flat_order = xs.reshape(-1, n), order.reshape(-1, n)
    out = np.empty(flat_x.shape)
    for row in range(len(flat_x)):  # rows are few (one per method/horizon); n is the cross-section
        starts = np.flatnonzero(np.r_[True, flat_x[row, 1:] != flat_x[row, :-1]])
        ends = np.r_[starts[1:], n]
        out[row, flat_order[row]] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return out.reshape(x.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of a and b along the last axis (NaN where either side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=-1) * (rb**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=-1) / np.where(denom > 0, denom, 1.0), np.nan)


def information_coefficient(
    peers: np.ndarray, returns: np.ndarray, queries: np.ndarray | None = None
) -> np.ndarray:
    """IC per horizon on one date: Spearman across queries between the query's return and the mean
    return of its peers. returns: (B, n_horizons). Out: (n_horizons,)."""
    q = _queries(peers, queries)
    peer_mean = returns[peers].mean(axis=1)  # (Q, n_horizons)
    return spearman(returns[q].T, peer_mean.T)


# ------------------------------------------------------------------- sectors
def sector_precision(peers: np.ndarray, sectors: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
    """SP per query: share of peers in the query's sector; NaN where the query's sector is unknown ('')."""
    q = _queries(peers, queries)
    sectors = np.asarray(sectors, dtype=object)
    known = sectors[q] != ""
    same = (sectors[peers] == sectors[q][:, None]).mean(axis=1)
    return np.where(known, same, np.nan)


# ------------------------------------------------------------- precision@1
def future_corr_percentiles(future_corr: np.ndarray, percentiles=(50, 75, 90)) -> np.ndarray:
    """Per query, percentiles of its future correlations with every other asset: (B, len(percentiles))."""
    b = len(future_corr)
    off = future_corr[~np.eye(b, dtype=bool)].reshape(b, b - 1)
    return np.percentile(off, percentiles, axis=1).T


def precision_at_1(
    top1: np.ndarray, future_corr: np.ndarray, thresholds: np.ndarray, queries: np.ndarray | None = None
) -> np.ndarray:
    """Per query and percentile: is the top-1 peer's future correlation above the query's percentile?

    top1: (Q,) peer indices; thresholds: (B, P) from `future_corr_percentiles`. Out: (Q, P) bool."""
    q = np.arange(len(top1)) if queries is None else np.asarray(queries, dtype=np.int64)
    return future_corr[q, top1][:, None] > thresholds[q]


# ------------------------------------------------------------ spread trading
def spread_returns(
    peers: np.ndarray, daily: np.ndarray, queries: np.ndarray | None = None, clip: float | None = None
) -> np.ndarray:
    """Daily spread s = r_q - mean(r_peers) per query: (Q, H). Returns are clipped at +-clip first."""
    q = _queries(peers, queries)
    r = np.asarray(daily, dtype=np.float64)
    if clip is not None:
        r = np.clip(r, -clip, clip)
    return r[q] - r[peers].mean(axis=1)


def tracking_error(spread: np.ndarray) -> np.ndarray:
    """Per query: standard deviation (ddof=1) of its daily spread."""
    return spread.std(axis=1, ddof=1)


def spread_positions(spread: np.ndarray) -> np.ndarray:
    """Position held on day d = -sign(cumulative spread through day d-1); flat on the first day."""
    cum = np.cumsum(spread, axis=1)
    return -np.sign(np.concatenate([np.zeros((len(spread), 1)), cum[:, :-1]], axis=1))


def spread_trades(spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Daily P&L and turnover per query of the Gatev-style reversal on the spread: both (Q, H).

    P&L on day d is position_d * s_d. One unit of position is $1 long (or short) the query and $1
    the other way in the peer basket, so changing the position by dp trades 2|dp| dollars: turnover
    counts those dollars (both legs), entry on day 1 onwards and the exit at the close of day H."""
    pos = spread_positions(spread)
    change = np.abs(np.diff(pos, axis=1, prepend=0.0))
    change[:, -1] += np.abs(pos[:, -1])  # the position is closed at the end of the window
    return pos * spread, 2.0 * change


def sharpe(daily: np.ndarray, periods: int = TRADING_DAYS) -> float:
    daily = np.asarray(daily, dtype=np.float64)
    sd = daily.std(ddof=1) if len(daily) > 1 else 0.0
    return float(daily.mean() / sd * np.sqrt(periods)) if sd > 0 else float("nan")


def backtest_summary(pnl: np.ndarray, turnover: np.ndarray, costs_bp=(5, 10)) -> dict:
    """Gross Sharpe, mean daily turnover, break-even cost and net Sharpe of a daily portfolio series.

    pnl, turnover: the portfolio's daily gross return and traded dollars (queries averaged per day).
    Net return = gross - cost * turnover with the cost per dollar traded; the break-even cost is the
    cost (in bp per dollar traded) at which the mean net return is zero."""
    pnl, turnover = np.asarray(pnl, np.float64), np.asarray(turnover, np.float64)
    mean_turnover = float(turnover.mean()) if len(turnover) else float("nan")
    out = {
        "days": int(len(pnl)),
        "mean_daily_return": float(pnl.mean()) if len(pnl) else float("nan"),
        "gross_sharpe": sharpe(pnl),
        "turnover": mean_turnover,
        "break_even_bp": float(1e4 * pnl.mean() / mean_turnover) if mean_turnover > 0 else float("nan"),
    }
    for bp in costs_bp:
        out[f"net_sharpe_{bp:g}bp"] = sharpe(pnl - bp * 1e-4 * turnover)
    return out


# ----------------------------------------------------------------- bootstrap
def bootstrap_means(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, max_cells: int = 20_000_000
) -> np.ndarray:
    """Paired bootstrap over queries: the means of every row of `values` under the same resamples.
    It treats queries as independent, which queries of the same date are not (see
    `date_block_bootstrap_means`).

    values: (rows, N) per-query values, NaN where a row did not score that query (its mean is over
    the finite ones drawn). Each resample draws N queries with replacement, the same draw for all
    rows, so differences between rows keep their pairing. Out: (rows, n_resamples)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    rows, n = values.shape
    finite = np.isfinite(values)
    x, w = np.where(finite, values, 0.0).T, finite.astype(np.float64).T  # (N, rows)
    rng = np.random.default_rng(seed)
    out = np.empty((rows, n_resamples))
    chunk = max(1, min(n_resamples, max_cells // max(n, 1)))
    for lo in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - lo)
        draws = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, lo : lo + r] = ((counts @ x) / (counts @ w)).T
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap samples along the last axis."""
    alpha = (1 - level) / 2
    return np.nanpercentile(samples, 100 * alpha, axis=-1), np.nanpercentile(
        samples, 100 * (1 - alpha), axis=-1
    )


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int | None = None) -> np.ndarray:
    """Mean of the finite values of every row per group: (rows, N) values, (N,) group index ->
    (rows, n_groups), NaN where a group has no finite value."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    sums, counts = _group_sums(values, groups, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _group_sums(
    values: np.ndarray, groups: np.ndarray, n_groups: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row and group, the sum of the finite values and their count: two (rows, n_groups) arrays."""
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    sums = np.array([np.bincount(groups, weights=row, minlength=n_groups) for row in filled])
    counts = np.array([np.bincount(groups, weights=row, minlength=n_groups) for row in finite.astype(float)])
    return sums.reshape(len(values), n_groups), counts.reshape(len(values), n_groups)


def date_block_bootstrap_means(
    values: np.ndarray, groups: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """Block (cluster) bootstrap over dates: each resample draws as many dates as there are, with
    replacement, and keeps every query of a drawn date; the statistic is each row's mean over the
    finite values of the drawn queries (the same query-weighted mean as the point estimate).

    values: (rows, N) per-query values; groups: (N,) the date index of each query. The same draws
    serve every row, so differences between rows stay paired. Out: (rows, n_resamples)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    sums, counts = _group_sums(values, groups, n_groups)  # (rows, G)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    times = np.zeros((n_resamples, n_groups))
    np.add.at(times, (np.arange(n_resamples)[:, None], draws), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((times @ sums.T) / (times @ counts.T)).T
