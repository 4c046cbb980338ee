"""The evaluation driver and the baselines (`fascl evaluate` end to end: tests/cli/test_evaluate.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from market.panel import FIELDS, Panel
from market.synthetic import generate
from model.evaluate import EvalConfig, evaluate, prepare_context, query_positions, summarize
from model.retrievers import (
    BASELINES,
    CLASSICAL,
    DTWRetriever,
    EvalContext,
    OracleRetriever,
    PCARetriever,
    Retriever,
    cosine_scores,
    make_baseline,
)

# The hand example of tests/model/test_metrics.py: four assets, future returns in sixteenths with
# correlations CORR, and a fixed ranking of peers per query.
DAILY = np.array([[1, -1, 1, -1], [2, -2, 2, -2], [-1, 1, -1, 1], [1, 1, -1, -1]], dtype=float) / 16
CORR = np.array([[1, 1, -1, 0], [1, 1, -1, 0], [-1, -1, 1, 0], [0, 0, 0, 1]], dtype=float)
RANKING = [[3, 1, 2], [0, 2, 3], [3, 0, 1], [0, 1, 2]]


def ranking_scores(ranking) -> np.ndarray:
    n = len(ranking)
    scores = np.zeros((n, n))
    for q, order in enumerate(ranking):
        scores[q, order] = np.arange(len(order), 0, -1)
        scores[q, q] = 99.0
    return scores


@dataclass
class Fixed:
    """A retriever with given scores: any object with `name` and `scores` plugs in."""

    name: str
    matrix: np.ndarray

    def scores(self, ctx, t, assets):
        return self.matrix[np.ix_(assets, assets)]


# ------------------------------------------------------- hand-made panel
def hand_panel() -> Panel:
    """4 assets, 3 days of history ending at position 2 (close 64), then the 4 future days of DAILY
    (exact in float32), so the future correlations are CORR."""
    close = np.full((7, 4), 64.0)
    close[3:] = 64.0 * np.cumprod(1.0 + DAILY.T, axis=0)
    values = np.full((len(FIELDS), 7, 4), np.nan, dtype=np.float32)
    values[FIELDS.index("close")] = close
    values[FIELDS.index("volume")] = 1000.0
    assets = pd.DataFrame({"ticker": ["A0", "A1", "A2", "A3"], "sector": ["A", "A", "B", ""]})
    dates = pd.bdate_range("2020-01-01", periods=7).to_numpy().astype("datetime64[D]")
    return Panel(dates, np.array(["A0", "A1", "A2", "A3"], dtype=object), values, assets)


HAND = EvalConfig(ks=(1, 2), horizons=(1, 2), horizon=4, window=3, stride=1, bootstrap=0)


def test_hand_panel_through_the_driver():
    panel = hand_panel()
    positions = query_positions(panel.dates, panel.dates[0], horizon=HAND.horizon)
    np.testing.assert_array_equal(positions, [0, 1, 2])  # futures that end inside the data
    ctx, local = prepare_context(panel, positions, HAND)
    result = evaluate(ctx, [Fixed("fixed", ranking_scores(RANKING))], local, HAND)
    # Only position 2 has a complete 3-day window and a 4-day future: one date, four queries.
    assert list(result.dates) == [panel.dates[2]] and list(result.queries_per_date) == [4]
    # Values worked out by hand in tests/model/test_metrics.py
    np.testing.assert_allclose(result.frc[0, 0], [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(result.frc[0, 1], [0.5, 0, -0.5, 0], atol=1e-12)
    np.testing.assert_allclose(result.tc[0, 1].T, [[1, 0.5], [0.5, 1], [0, 0.5], [1, 0]])
    np.testing.assert_allclose(result.ic[0, 1, 0, 0], -1 / 3, atol=1e-12)
    np.testing.assert_allclose(result.sp[0, 1][:3], [0.5, 0.5, 0.0])
    assert np.isnan(result.sp[0, 1][3])
    np.testing.assert_array_equal(result.p1[0].T, [[0, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]])
    # Tracking error of q0 at K = 1 (peer A3): s = r0 - r3 = [0, -2, 2, 0]/16 -> sqrt(8/3)/16
    assert result.te[0, 0, 0] == pytest.approx(np.sqrt(8 / 3) / 16)
    # Spread P&L at K = 1 (in sixteenths) averaged over the four queries, day by day:
    #   q0 (peer 3): s = r0 - r3 = [0, -2, 2, 0], positions [0, 0, +1, 0]    -> P&L [0, 0, 2, 0]
    #   q1 (peer 0): s = r1 - r0 = [1, -1, 1, -1], positions [0, -1, 0, -1] -> [0, 1, 0, 1]
    #   q2 (peer 3): s = r2 - r3 = [-2, 0, 0, 2], positions [0, +1, +1, +1] -> [0, 0, 0, 2]
    #   q3 (peer 0): s = r3 - r0 = [0, 2, -2, 0], positions [0, 0, -1, 0]   -> [0, 0, 2, 0]
    np.testing.assert_allclose(result.pnl[0, 0], np.array([0, 0.25, 1, 0.75]) / 16, atol=1e-15)
    summary = summarize(result)
    fixed = summary["methods"]["fixed"]
    assert fixed["frc"]["1"]["mean"] == pytest.approx(0.25) and fixed["frc"]["2"]["mean"] == pytest.approx(
        0.0
    )
    assert fixed["sp_pct"]["2"] == pytest.approx(100 / 3, rel=1e-6)
    assert fixed["precision_at_1_pct"]["90"] == pytest.approx(50.0)
    assert summary["mean_pairwise_future_corr"] == pytest.approx((CORR.sum() - 4) / 12)


def test_query_positions_purge_the_future_window():
    dates = pd.bdate_range("2021-01-01", periods=300).to_numpy().astype("datetime64[D]")
    pos = query_positions(dates, "2021-03-01", "2021-09-30", horizon=64)
    end = int(np.searchsorted(dates, np.datetime64("2021-09-30"), side="right")) - 1
    assert dates[pos[0]] >= np.datetime64("2021-03-01") and pos[-1] + 64 == end


# ------------------------------------------------------- synthetic market
CFG = EvalConfig(stride=32, bootstrap=200)


@pytest.fixture(scope="module")
def market():
    return generate(70, 2, seed=3)


@pytest.fixture(scope="module")
def full_run(market):
    panel = market.panel
    positions = query_positions(panel.dates, panel.dates[300])[:: CFG.stride]
    ctx, local = prepare_context(panel, positions, CFG)
    retrievers = [make_baseline(n) for n in BASELINES if n != "dtw"] + [DTWRetriever(max_queries=None)]
    result = evaluate(ctx, retrievers, local, CFG)
    return ctx, local, result, summarize(result)


def test_every_baseline_is_a_retriever():
    for name in BASELINES:
        assert isinstance(make_baseline(name), Retriever)
    with pytest.raises(ValueError, match="unknown method"):
        make_baseline("ts2vec")


def test_oracle_is_at_least_as_good_as_every_method_per_query(full_run):
    _, _, result, summary = full_run
    oracle = result.index("oracle")
    assert len(result.dates) >= 4 and len(result.query_date) > 200
    for mi, name in enumerate(result.methods):
        assert (result.frc[oracle] >= result.frc[mi] - 1e-12).all(), name
        for k in ("1", "5", "10", "20"):
            assert (
                summary["methods"]["oracle"]["frc"][k]["mean"] >= summary["methods"][name]["frc"][k]["mean"]
            )
    assert summary["methods"]["oracle"]["precision_at_1_pct"] == {"50": 100.0, "75": 100.0, "90": 100.0}


def test_random_scores_the_mean_pairwise_future_correlation(full_run):
    _, _, result, summary = full_run
    random = summary["methods"]["random"]["frc"]
    expected = summary["mean_pairwise_future_corr"]
    assert abs(random["20"]["mean"] - expected) < 0.015
    assert abs(random["1"]["mean"] - expected) < 0.04
    assert abs(summary["methods"]["random"]["gap_closed"]["5"]["mean"]) < 1e-12
    assert summary["methods"]["oracle"]["gap_closed"]["5"]["mean"] == pytest.approx(1.0)
    # the informative baselines beat random on this market, with intervals that exclude it
    pearson = summary["methods"]["pearson"]["frc"]["5"]
    assert pearson["lo"] > random["5"]["hi"]
    diff = summary["methods"]["random"]["frc_minus_pearson"]["5"]
    assert diff["hi"] < 0 and diff["lo"] <= diff["mean"] <= diff["hi"]


def test_sector_baseline_stays_inside_sectors_with_enough_members(full_run):
    ctx, local, result, summary = full_run
    sector = result.index("sector")
    checked = 0
    for di in range(len(local)):
        rows = np.flatnonzero(result.query_date == di)
        tickers = result.query_ticker[rows]
        sectors = ctx.sectors[[ctx.panel.asset_index(x) for x in tickers]]
        counts = pd.Series(sectors).value_counts()
        for ki, k in enumerate(CFG.ks):
            enough = np.array([s != "" and counts[s] > k for s in sectors])
            np.testing.assert_array_equal(result.sp[sector, ki, rows[enough]], 1.0)
            checked += enough.sum()
    assert checked > 100
    assert summary["methods"]["sector"]["sp_pct"]["1"] == pytest.approx(100.0)


def test_past_bars_never_enter_future_metrics(market):
    """Scale every bar before the query date by random factors: Oracle, Random and Sector (which read
    nothing of the window) must score exactly the same; NaN after the future window changes nothing."""
    panel = market.panel
    t = 400
    config = EvalConfig(bootstrap=0)
    rng = np.random.default_rng(0)
    past = panel.values.copy()
    past[:, :t] *= np.exp(0.3 * rng.standard_normal(past[:, :t].shape)).astype(np.float32)
    far = panel.values.copy()
    far[:, t + config.horizon + 1 :] = np.nan

    def run(values, methods):
        ctx = EvalContext(Panel(panel.dates, panel.tickers, values, panel.assets))
        return evaluate(ctx, [make_baseline(m) for m in methods], np.array([t]), config)

    keys = ("frc", "tc", "sp", "p1", "te", "ic", "pnl", "turnover")
    base = run(panel.values, ["oracle", "random", "sector"])
    poisoned = run(past, ["oracle", "random", "sector"])
    for key in keys:
        np.testing.assert_array_equal(getattr(base, key), getattr(poisoned, key), err_msg=key)
    everything = [n for n in BASELINES]
    base = run(panel.values, everything)
    cut = run(far, everything)
    for key in keys:
        np.testing.assert_array_equal(getattr(base, key), getattr(cut, key), err_msg=key)


def test_oracle_reads_the_future_through_targets(market, monkeypatch):
    import model.retrievers as retrievers

    calls = []
    original = retrievers.future_returns

    def spy(close, t, assets, horizon=64):
        calls.append((t, horizon))
        return original(close, t, assets, horizon)

    monkeypatch.setattr(retrievers, "future_returns", spy)
    ctx = EvalContext(market.panel)
    OracleRetriever().scores(ctx, 300, np.arange(10))
    assert calls == [(300, 64)]


def test_pca_scores_are_the_cosine_of_svd_loadings(market):
    ctx = EvalContext(market.panel)
    t, assets = 350, np.arange(0, 70, 2)
    path = market.panel.close[t - 252 : t + 1, assets].astype(np.float64)
    r = path[1:] / path[:-1] - 1
    z = (r - r.mean(axis=0)) / r.std(axis=0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    expected = cosine_scores(vt[:10].T * s[:10])
    np.testing.assert_allclose(PCARetriever().scores(ctx, t, assets), expected, atol=1e-5)


def test_dtw_subsample_scores_the_same_rows_as_the_full_matrix(market):
    ctx = EvalContext(market.panel)
    assets = np.arange(40)
    full = DTWRetriever(max_queries=None).scores(ctx, 200, assets)
    assert np.isfinite(full).all() and np.allclose(full, full.T)
    sub = DTWRetriever(max_queries=10).scores(ctx, 200, assets)
    rows = np.flatnonzero(np.isfinite(sub).all(axis=1))
    assert len(rows) == 10 and np.isnan(np.delete(sub, rows, axis=0)).all()
    np.testing.assert_allclose(sub[rows], full[rows])


def test_random_baseline_is_repeatable_per_date(market):
    ctx = EvalContext(market.panel, seed=7)
    random = make_baseline("random")
    a = random.scores(ctx, 300, np.arange(20))
    make_baseline("sector").scores(ctx, 300, np.arange(20))  # other methods do not shift the stream
    np.testing.assert_array_equal(random.scores(ctx, 300, np.arange(20)), a)
    assert not np.array_equal(random.scores(ctx, 301, np.arange(20)), a)


def test_context_reuses_a_wider_cube_for_a_prefix_channel_set(market):
    from model.features import build_cube

    ctx = EvalContext(market.panel)
    wide = ctx.cube("ohlcva_ret")
    narrow = ctx.cube("ohlcva")
    assert narrow.series.data_ptr() == wide.series.data_ptr()  # a view, no second copy
    assert torch.equal(narrow.series, build_cube(market.panel, "ohlcva").series)
    assert narrow.windows(100, np.arange(5)).shape == (5, 6, 64)


def test_winsorized_pearson_clips_only_the_outlying_days():
    from market.synthetic import generate
    from model.history import history_window
    from model.retrievers import EvalContext, PearsonRetriever, WinsorizedPearsonRetriever

    panel = generate(n_assets=12, years=1, seed=5).panel
    ctx = EvalContext(panel)
    t, assets = 100, np.arange(12)
    # A bound no z-score reaches leaves the Pearson correlation of the same 64 returns.
    np.testing.assert_allclose(
        WinsorizedPearsonRetriever(bound=100).scores(ctx, t, assets),
        np.corrcoef(history_window(ctx.returns, t, assets, 64)),
        atol=1e-12,
    )
    plain = PearsonRetriever().scores(ctx, t, assets)
    panel.values[3, t - 10, 0] *= 1.8  # one fat-tailed day for asset 0 (and its reversal the next day)
    ctx = EvalContext(panel)  # a context caches its returns: the panel is read once
    spiked = PearsonRetriever().scores(ctx, t, assets)
    robust = WinsorizedPearsonRetriever().scores(ctx, t, assets)
    clean = WinsorizedPearsonRetriever().scores(
        EvalContext(generate(n_assets=12, years=1, seed=5).panel), t, assets
    )
    assert np.abs(robust[0] - clean[0]).sum() < np.abs(spiked[0] - plain[0]).sum()


def test_summary_names_the_best_classical_and_its_date_level_evidence(full_run):
    _, _, result, summary = full_run
    best = summary["best_classical"]
    classical = {n: e["frc"]["1"]["mean"] for n, e in summary["methods"].items() if n in CLASSICAL}
    assert best == max(classical, key=classical.get)
    weights = np.array(summary["queries_per_date"])
    n_dates = len(summary["dates"])
    assert (
        summary["intervals"]["method"] == "date-block bootstrap" and summary["intervals"]["dates"] == n_dates
    )
    for name, e in summary["methods"].items():
        if name == "dtw":
            continue  # scores every query here, but keep the check to methods without subsampling
        for k in ("1", "20"):
            per_date = np.array(e["frc_per_date"][k])
            # the query-weighted mean of the date means is the mean over queries
            assert np.average(per_date, weights=weights) == pytest.approx(e["frc"][k]["mean"])
            for key, ref in (("frc_minus_best_classical", best), ("frc_minus_pearson", "pearson")):
                d = e[key][k]
                expected = per_date - np.array(summary["methods"][ref]["frc_per_date"][k])
                np.testing.assert_allclose(d["per_date"], expected, atol=1e-12)
                assert d["dates_positive"] == int((expected > 0).sum()) and d["dates"] == n_dates
                assert d["mean"] == pytest.approx(
                    e["frc"][k]["mean"] - summary["methods"][ref]["frc"][k]["mean"]
                )
                if name != ref:
                    assert d["lo"] <= d["mean"] <= d["hi"]
                    assert d["lo_per_query"] <= d["mean"] <= d["hi_per_query"]
    zero = summary["methods"][best]["frc_minus_best_classical"]["1"]
    assert zero["mean"] == 0 and zero["lo"] == zero["hi"] == 0 and zero["dates_positive"] == 0
    # the per-date means agree with the per-query values
    mi = result.index("pearson")
    first = result.query_date == 0
    assert summary["methods"]["pearson"]["frc_per_date"]["5"][0] == pytest.approx(
        result.frc[mi, 1, first].mean()
    )


def test_what_training_added_is_the_paired_difference_to_the_models_start(market):
    """A learned model is compared with the classical retriever it starts from: an untrained one
    (its learned parts still at zero) adds exactly nothing, one whose prior has moved does not."""
    from model.encoder import PatchTransformer, encoder_config
    from model.report import render_markdown
    from model.retrievers import FasclRetriever, MarketShrinkRetriever

    panel = market.panel
    positions = query_positions(panel.dates, panel.dates[300])[:: CFG.stride]
    ctx, local = prepare_context(panel, positions, CFG)
    torch.manual_seed(0)
    untrained = PatchTransformer(encoder_config("tiny", history=126)).eval()
    moved = PatchTransformer(encoder_config("tiny", history=126)).eval()
    with torch.no_grad():
        moved.history.prior_weight.fill_(0.5)
    start = MarketShrinkRetriever(name="shrink_market126", length=126)
    retrievers = [
        make_baseline("pearson"),
        start,
        FasclRetriever(name="untrained", model=untrained, meta={}, channels="ohlcva"),
        FasclRetriever(name="moved", model=moved, meta={}, channels="ohlcva"),
    ]
    result = evaluate(ctx, retrievers, local, CFG)
    assert result.starts == {"untrained": "shrink_market126", "moved": "shrink_market126"}
    summary = summarize(result)
    methods = summary["methods"]
    assert (
        "frc_minus_start" not in methods["pearson"] and "frc_minus_start" not in methods["shrink_market126"]
    )
    zero = methods["untrained"]["frc_minus_start"]["1"]
    assert abs(zero["mean"]) < 1e-12 and zero["dates_positive"] == 0
    moved_diff = methods["moved"]["frc_minus_start"]["1"]
    assert moved_diff["mean"] == pytest.approx(
        methods["moved"]["frc"]["1"]["mean"] - methods["shrink_market126"]["frc"]["1"]["mean"]
    )
    assert moved_diff["mean"] != 0 and moved_diff["lo"] <= moved_diff["mean"] <= moved_diff["hi"]
    report = render_markdown(summary, {"data": "synthetic"})
    assert "## What training added" in report and "| moved | `shrink_market126` |" in report
