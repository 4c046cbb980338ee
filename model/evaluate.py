"""The evaluation protocol: queries on test dates, every retriever, every metric, paired bootstrap.

A query is (asset, date D) for every asset with a complete window ending at D and a complete
future window (D, D + horizon]; the query itself is never retrieved. Query dates are the test
period's dates spaced `stride` trading days apart (64: non-overlapping future windows; 1: every
day). For each date the future is read once, through `model.targets`, and every retriever's peers
are scored against it (model/metrics.py). `summarize` turns the per-query values into the numbers
of metrics.json and report.md: per method and K the mean over queries, the per-date means, paired
per-date differences to Pearson and to the best classical retriever, and intervals from a bootstrap
over query dates (queries of one date share its market and are not independent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from market.panel import Panel
from model import metrics as M
from model.features import WINDOW
from model.retrievers import BASELINES, CLASSICAL, EvalContext, FasclRetriever, Retriever, make_baseline
from model.targets import HORIZON, future_complete, future_returns, pearson_matrix

KS: tuple[int, ...] = (1, 5, 10, 20)
HORIZONS: tuple[int, ...] = (1, 5, 20, 60)
PERCENTILES: tuple[int, ...] = (50, 75, 90)
COSTS_BP: tuple[int, ...] = (5, 10)


@dataclass
class EvalConfig:
    ks: tuple[int, ...] = KS
    horizons: tuple[int, ...] = HORIZONS  # for TC@K and IC@K; each at most `horizon`
    percentiles: tuple[int, ...] = PERCENTILES  # for Precision@1
    costs_bp: tuple[int, ...] = COSTS_BP
    horizon: int = HORIZON  # the future window of FRC, tracking error and the spread backtest
    window: int = WINDOW
    stride: int = HORIZON
    bootstrap: int = 1000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def query_positions(dates: np.ndarray, start, end=None, horizon: int = HORIZON) -> np.ndarray:
    """Positions of the dates D in [start, end] whose future window (D, D + horizon] also ends by `end`
    (the panel's last date when None): the test split's query dates, purged like model.splits."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    lo = int(np.searchsorted(dates, np.datetime64(pd.Timestamp(start).date(), "D")))
    hi = (
        len(dates)
        if end is None
        else int(np.searchsorted(dates, np.datetime64(pd.Timestamp(end).date(), "D"), side="right"))
    )
    return np.arange(lo, max(lo, hi - horizon))


def history_needed(retrievers: Sequence[Retriever], window: int = WINDOW) -> int:
    """Past closes the longest-reaching retriever reads (its `history`; `window` where it declares none)."""
    return max([window] + [int(getattr(r, "history", window)) for r in retrievers])


def prepare_context(
    panel: Panel, positions: np.ndarray, config: EvalConfig, lookback: int | None = None
) -> tuple[EvalContext, np.ndarray]:
    """The context on the slice of the panel the evaluation needs (`lookback` past closes before the
    first date, by default what every baseline reads; the future window after the last), and
    positions inside it."""
    if lookback is None:
        lookback = history_needed([make_baseline(n) for n in BASELINES], config.window)
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) == 0:
        raise ValueError("no query dates: the test period is empty or shorter than the future window")
    lo = max(0, int(positions.min()) - max(lookback, config.window))
    hi = min(panel.n_dates, int(positions.max()) + config.horizon + 1)
    sliced = Panel(panel.dates[lo:hi], panel.tickers, panel.values[:, lo:hi], panel.assets)
    return EvalContext(sliced, window=config.window, seed=config.seed), positions - lo


@dataclass
class EvalResult:
    """Per-query values of every method; arrays are (methods, ..., queries) with NaN where a method did
    not score a query. Queries are all dates' cross-sections concatenated in date order."""

    config: EvalConfig
    methods: list[str]
    dates: np.ndarray  # query dates (datetime64[D])
    queries_per_date: np.ndarray
    query_date: np.ndarray  # (N,) index into dates
    query_ticker: np.ndarray  # (N,)
    frc: np.ndarray  # (M, nK, N)
    tc: np.ndarray  # (M, nK, nH, N) share of peers with the query's sign
    sp: np.ndarray  # (M, nK, N) share of peers in the query's sector; NaN: sector unknown
    p1: np.ndarray  # (M, nP, N) 1.0 / 0.0
    te: np.ndarray  # (M, nK, N) std of the daily spread
    ic: np.ndarray  # (M, nK, nH, n_dates)
    pnl_days: np.ndarray  # (n_days,) calendar dates of the backtest series
    pnl: np.ndarray  # (M, nK, n_days) daily P&L averaged over the queries trading that day
    turnover: np.ndarray  # (M, nK, n_days)
    mean_future_corr: np.ndarray  # (n_dates,) mean pairwise future correlation (Random's expectation)
    # learned method -> the classical retriever it started from, where that one was evaluated too
    starts: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # scoring + metric time per method
    score_seconds: dict[str, float] = field(default_factory=dict)  # the retriever's scores() alone
    example: dict = field(default_factory=dict)

    def index(self, method: str) -> int:
        return self.methods.index(method)


def evaluate(
    ctx: EvalContext,
    retrievers: Sequence[Retriever],
    positions: np.ndarray,
    config: EvalConfig | None = None,
    on_step: Callable[[str, int], None] | None = None,
    example_method: str | None = None,
) -> EvalResult:
    """Score every retriever on every query of the dates at `positions` (positions in ctx.panel)."""
    config = config or EvalConfig()
    if max(config.horizons) > config.horizon:
        raise ValueError(f"horizons {config.horizons} reach past the future window of {config.horizon} days")
    names = [r.name for r in retrievers]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    positions = np.asarray(positions, dtype=np.int64)
    close = ctx.close
    pool = ctx.cube("close").eligible & future_complete(close, config.horizon)
    pool[: config.window - 1] = False
    keep = [t for t in positions if pool[t].sum() > max(config.ks)]
    if not keep:
        raise ValueError(f"no query date has more than {max(config.ks)} eligible assets")
    positions = np.array(keep, dtype=np.int64)
    per_date = np.array([pool[t].sum() for t in positions])
    n, m, nk, nh, npc = (
        int(per_date.sum()),
        len(retrievers),
        len(config.ks),
        len(config.horizons),
        len(config.percentiles),
    )
    days = np.unique(np.concatenate([np.arange(t + 1, t + config.horizon + 1) for t in positions]))
    day_at = {int(d): i for i, d in enumerate(days)}
    ks, kmax = np.array(config.ks), max(config.ks)

    frc = np.full((m, nk, n), np.nan)
    tc = np.full((m, nk, nh, n), np.nan, dtype=np.float32)
    sp = np.full((m, nk, n), np.nan, dtype=np.float32)
    p1 = np.full((m, npc, n), np.nan, dtype=np.float32)
    te = np.full((m, nk, n), np.nan)
    ic = np.full((m, nk, nh, len(positions)), np.nan)
    pnl_sum = np.zeros((m, nk, len(days)))
    turn_sum = np.zeros((m, nk, len(days)))
    count = np.zeros((m, len(days)))
    seconds = dict.fromkeys(names, 0.0)
    score_seconds = dict.fromkeys(names, 0.0)
    mean_corr = np.zeros(len(positions))
    query_date = np.repeat(np.arange(len(positions)), per_date)
    query_ticker = np.empty(n, dtype=object)
    example: dict = {}

    offset = 0
    for di, t in enumerate(positions):
        assets = np.flatnonzero(pool[t])
        b = len(assets)
        cols = slice(offset, offset + b)
        query_ticker[cols] = ctx.panel.tickers[assets]
        daily, valid = future_returns(close, int(t), assets, config.horizon)
        assert valid.all(), "the pool admits only queries with a complete future window"
        corr = pearson_matrix(daily)
        mean_corr[di] = (corr.sum() - np.trace(corr)) / (b * (b - 1))
        hret = M.horizon_returns(daily, config.horizons)
        thresholds = M.future_corr_percentiles(corr, config.percentiles)
        sectors = ctx.sectors[assets]
        day_idx = np.array([day_at[int(d)] for d in range(t + 1, t + config.horizon + 1)])

        for mi, retriever in enumerate(retrievers):
            started = time.perf_counter()
            scores = np.asarray(retriever.scores(ctx, int(t), assets), dtype=np.float64)
            score_seconds[retriever.name] += time.perf_counter() - started
            if scores.shape != (b, b):
                raise ValueError(f"{retriever.name} returned scores of shape {scores.shape}, not {(b, b)}")
            q = np.flatnonzero(~np.isnan(scores).all(axis=1))
            peers = M.top_k_peers(scores[q], kmax, queries=q)
            at = offset + q
            p1[mi, :, at] = M.precision_at_1(peers[:, 0], corr, thresholds, q)
            for ki, k in enumerate(ks):
                pk = peers[:, :k]
                frc[mi, ki, at] = M.peer_frc(pk, corr, q)
                tc[mi, ki, :, at] = M.sign_agreement(pk, hret, q)
                ic[mi, ki, :, di] = M.information_coefficient(pk, hret, q)
                sp[mi, ki, at] = M.sector_precision(pk, sectors, q)
                te[mi, ki, at] = M.tracking_error(M.spread_returns(pk, daily, q))
                trade_pnl, trade_turn = M.spread_trades(M.spread_returns(pk, daily, q, clip=M.CLIP))
                pnl_sum[mi, ki, day_idx] += trade_pnl.sum(axis=0)
                turn_sum[mi, ki, day_idx] += trade_turn.sum(axis=0)
            count[mi, day_idx] += len(q)
            seconds[retriever.name] += time.perf_counter() - started
            if di == 0:
                full = np.full((b, kmax), -1)
                full[q] = peers
                example.setdefault("peers", {})[retriever.name] = full
            if on_step is not None:
                on_step(retriever.name, di)
        if di == 0:
            example.update(
                position=int(t), date=ctx.panel.dates[t], assets=assets, future_corr=corr, daily=daily
            )
        offset += b

    with np.errstate(invalid="ignore", divide="ignore"):
        pnl = pnl_sum / count[:, None, :]
        turnover = turn_sum / count[:, None, :]
    result = EvalResult(
        config=config,
        methods=names,
        dates=ctx.panel.dates[positions],
        queries_per_date=per_date,
        query_date=query_date,
        query_ticker=query_ticker,
        frc=frc,
        tc=tc,
        sp=sp,
        p1=p1,
        te=te,
        ic=ic,
        pnl_days=ctx.panel.dates[days],
        pnl=pnl,
        turnover=turnover,
        mean_future_corr=mean_corr,
        seconds=seconds,
        score_seconds=score_seconds,
        starts={
            r.name: r.start for r in retrievers if getattr(r, "start", None) in names and r.start != r.name
        },
    )
    result.example = _worked_example(ctx, result, example, retrievers, example_method)
    return result


def _worked_example(ctx, result: EvalResult, raw: dict, retrievers, method: str | None) -> dict:
    """One query of the first date for the report's figure: the primary method's median query by
    FRC@5 (a typical case, not a picked success), with its top 5 peers' price paths."""
    if method is None:
        fascl = [r.name for r in retrievers if isinstance(r, FasclRetriever)]
        method = fascl[0] if fascl else ("pearson" if "pearson" in result.methods else result.methods[0])
    peers = raw["peers"][method]
    k = min(5, peers.shape[1])
    mi, ki = (
        result.index(method),
        min(range(len(result.config.ks)), key=lambda i: abs(result.config.ks[i] - k)),
    )
    b = len(raw["assets"])
    values = result.frc[mi, ki, :b]
    scored = np.flatnonzero(np.isfinite(values))
    if len(scored) == 0:
        return {}
    query = int(scored[np.argsort(values[scored], kind="stable")[len(scored) // 2]])
    chosen = peers[query, :k]
    members = np.concatenate([[query], chosen])
    t, w = raw["position"], result.config.window
    past = ctx.close[t - w + 1 : t + 1, raw["assets"][members]].astype(np.float64)
    past = past / past[-1]  # normalised to 1 at the query date
    future = np.cumprod(1.0 + raw["daily"][members], axis=1).T  # the future only via model.targets
    return {
        "method": method,
        "date": str(raw["date"]),
        "query": str(ctx.panel.tickers[raw["assets"][query]]),
        "peers": [str(x) for x in ctx.panel.tickers[raw["assets"][chosen]]],
        "peer_future_corr": [float(raw["future_corr"][query, j]) for j in chosen],
        "frc": float(raw["future_corr"][query, chosen].mean()),
        "window_dates": [str(d) for d in ctx.panel.dates[t - w + 1 : t + 1]],
        "future_dates": [str(d) for d in ctx.panel.dates[t + 1 : t + result.config.horizon + 1]],
        "past": past.T.tolist(),  # (1 + k, window) query first
        "future": future.T.tolist(),  # (1 + k, horizon)
    }


# ------------------------------------------------------------------ summary
def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _mean(x) -> float:
    """nanmean without the empty-slice warning: NaN when nothing is finite (e.g. a constant IC input)."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    return float(x[finite].mean()) if finite.any() else float("nan")


def _median(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    return float(np.median(x[finite])) if finite.any() else float("nan")


def best_classical(result: EvalResult) -> str | None:
    """The classical retriever (model.retrievers.CLASSICAL, or a learned model's classical start) with the
    highest mean FRC at the smallest K."""
    classical = set(CLASSICAL) | set(result.starts.values())
    scored = {n: _mean(result.frc[mi, 0]) for mi, n in enumerate(result.methods) if n in classical}
    scored = {n: v for n, v in scored.items() if np.isfinite(v)}
    return max(scored, key=scored.get) if scored else None


def summarize(result: EvalResult, bootstrap: int | None = None, seed: int | None = None) -> dict:
    """Everything metrics.json holds: per method, FRC@K (mean over queries and per date) with 95%
    intervals, the paired differences to Pearson and to the best classical retriever (with their
    per-date values and the number of dates on which they are positive), for a learned model also to
    the classical retriever it started from (what training added, "frc_minus_start"), the share of the
    Random-to-Oracle gap closed, and TC@K, IC@K, SP@K, Precision@1, tracking error and the spread
    backtest.

    Intervals ("lo", "hi") come from a bootstrap over query dates (all queries of a drawn date are
    kept), the same draws for every method so differences keep their pairing. "lo_per_query" and
    "hi_per_query" are the per-query bootstrap, which ignores within-date dependence and is narrower
    than the evidence warrants; they are there for comparison."""
    cfg = result.config
    bootstrap = cfg.bootstrap if bootstrap is None else bootstrap
    seed = cfg.seed if seed is None else seed
    names, ks = result.methods, cfg.ks
    n_dates = len(result.dates)
    best = best_classical(result)
    refs = [
        (ref, key)
        for ref, key in (("pearson", "frc_minus_pearson"), (best, "frc_minus_best_classical"))
        if ref in names
    ]
    rnd = names.index("random") if "random" in names else None
    ora = names.index("oracle") if "oracle" in names else None

    # Bootstrap rows: per method and K the FRC, its paired differences to the references and (for the
    # gap closed) the method's and the oracle's excess over random on the method's queries.
    rows, keys = [], []
    for mi, name in enumerate(names):
        start = [(result.starts[name], "frc_minus_start")] if name in result.starts else []
        for ki in range(len(ks)):
            x = result.frc[mi, ki]
            rows.append(x)
            keys.append((name, ki, "frc"))
            for ref, key in refs + start:
                rows.append(x - result.frc[names.index(ref), ki])
                keys.append((name, ki, key))
            if rnd is not None and ora is not None:
                rows.append(x - result.frc[rnd, ki])
                rows.append(np.where(np.isfinite(x), result.frc[ora, ki] - result.frc[rnd, ki], np.nan))
                keys += [(name, ki, "excess"), (name, ki, "ceiling")]
    rows = np.array(rows)
    at = {key: i for i, key in enumerate(keys)}
    point = np.array([_mean(r) for r in rows])
    per_date = M.group_means(rows, result.query_date, n_dates)  # (rows, dates)
    samples = per_query = None
    if bootstrap > 0:
        samples = M.date_block_bootstrap_means(rows, result.query_date, bootstrap, seed)
        # The per-query bootstrap only for FRC and the differences, where it is shown for comparison.
        shown = [i for i, key in enumerate(keys) if key[2] not in ("excess", "ceiling")]
        per_query = dict(zip(shown, M.bootstrap_means(rows[shown], bootstrap, seed), strict=True))

    def stat(name, ki, kind):
        i = at[(name, ki, kind)]
        out = {"mean": _f(point[i]), "lo": None, "hi": None, "lo_per_query": None, "hi_per_query": None}
        if samples is not None:
            lo, hi = M.interval(samples[i])
            qlo, qhi = M.interval(per_query[i])
            out.update(lo=_f(lo), hi=_f(hi), lo_per_query=_f(qlo), hi_per_query=_f(qhi))
        return out

    def diff(name, ki, kind):
        out = stat(name, ki, kind)
        days = per_date[at[(name, ki, kind)]]
        out["per_date"] = [_f(v) for v in days]
        out["dates_positive"] = int((days > 0).sum())
        out["dates"] = int(np.isfinite(days).sum())
        return out

    def gap(name, ki):
        if (name, ki, "excess") not in at:
            return None
        e, c = at[(name, ki, "excess")], at[(name, ki, "ceiling")]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"mean": _f(point[e] / point[c]), "lo": None, "hi": None}
            if samples is not None:
                lo, hi = M.interval(samples[e] / samples[c])
                out.update(lo=_f(lo), hi=_f(hi))
        return out

    methods = {}
    for mi, name in enumerate(names):
        entry: dict = {
            "queries": int(np.isfinite(result.frc[mi, 0]).sum()),
            "seconds": result.seconds.get(name),
            "score_seconds": result.score_seconds.get(name),
        }
        entry["frc"] = {str(k): stat(name, ki, "frc") for ki, k in enumerate(ks)}
        entry["frc_per_date"] = {
            str(k): [_f(v) for v in per_date[at[(name, ki, "frc")]]] for ki, k in enumerate(ks)
        }
        for _, key in refs:
            entry[key] = {str(k): diff(name, ki, key) for ki, k in enumerate(ks)}
        if name in result.starts:
            entry["start"] = result.starts[name]
            entry["frc_minus_start"] = {str(k): diff(name, ki, "frc_minus_start") for ki, k in enumerate(ks)}
        if rnd is not None and ora is not None:
            entry["gap_closed"] = {str(k): gap(name, ki) for ki, k in enumerate(ks)}
        entry["tc_pct"] = {
            str(k): {str(h): _f(100 * _mean(result.tc[mi, ki, hi])) for hi, h in enumerate(cfg.horizons)}
            for ki, k in enumerate(ks)
        }
        entry["ic"] = {
            str(k): {str(h): _f(_mean(result.ic[mi, ki, hi])) for hi, h in enumerate(cfg.horizons)}
            for ki, k in enumerate(ks)
        }
        entry["sp_pct"] = {str(k): _f(100 * _mean(result.sp[mi, ki])) for ki, k in enumerate(ks)}
        entry["sp_queries"] = int(np.isfinite(result.sp[mi, 0]).sum())
        entry["precision_at_1_pct"] = {
            str(p): _f(100 * _mean(result.p1[mi, pi])) for pi, p in enumerate(cfg.percentiles)
        }
        entry["tracking_error"] = {str(k): _f(_median(result.te[mi, ki])) for ki, k in enumerate(ks)}
        entry["spread"] = {}
        for ki, k in enumerate(ks):
            live = np.isfinite(result.pnl[mi, ki])
            summary = M.backtest_summary(
                result.pnl[mi, ki, live], result.turnover[mi, ki, live], cfg.costs_bp
            )
            entry["spread"][str(k)] = {
                key: (_f(v) if isinstance(v, float) else v) for key, v in summary.items()
            }
        methods[name] = entry
    with np.errstate(invalid="ignore"):
        with_future = (
            np.nansum(result.mean_future_corr * result.queries_per_date) / result.queries_per_date.sum()
        )
    return {
        "config": cfg.to_dict(),
        "dates": [str(d) for d in result.dates],
        "queries": int(len(result.query_date)),
        "queries_per_date": [int(x) for x in result.queries_per_date],
        "mean_pairwise_future_corr": _f(with_future),
        "best_classical": best,
        "intervals": {
            "method": "date-block bootstrap" if bootstrap > 0 else None,
            "resamples": int(bootstrap),
            "dates": n_dates,
            "level": 0.95,
            "note": "lo/hi: bootstrap over query dates, all queries of a drawn date kept, the same draws for "
            "every method; lo_per_query/hi_per_query: per-query bootstrap (ignores within-date dependence)",
        },
        "methods": methods,
        "example": {k: v for k, v in result.example.items() if k not in ("past", "future")},
    }
