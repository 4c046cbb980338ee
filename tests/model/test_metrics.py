"""Metrics of the evaluation protocol against values worked out by hand on four assets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model import metrics as M
from model.targets import pearson_matrix

# Four assets, four future days, returns in sixteenths (binary fractions, so prices built from them
# are exact even in float32 and the hand values hold to the last bit):
#   r0 = [ 1, -1,  1, -1]
#   r1 = [ 2, -2,  2, -2]   = 2 r0: correlation +1 with r0
#   r2 = [-1,  1, -1,  1]   = -r0:  correlation -1 with r0 and r1
#   r3 = [ 1,  1, -1, -1]   orthogonal to the others: correlation 0
DAILY = np.array([[1, -1, 1, -1], [2, -2, 2, -2], [-1, 1, -1, 1], [1, 1, -1, -1]], dtype=float) / 16
CORR = np.array([[1, 1, -1, 0], [1, 1, -1, 0], [-1, -1, 1, 0], [0, 0, 0, 1]], dtype=float)
# Peer rankings per query (best first) and scores that produce them.
RANKING = [[3, 1, 2], [0, 2, 3], [3, 0, 1], [0, 1, 2]]
SECTORS = np.array(["A", "A", "B", ""], dtype=object)


def ranking_scores(ranking) -> np.ndarray:
    n = len(ranking)
    scores = np.zeros((n, n))
    for q, order in enumerate(ranking):
        scores[q, order] = np.arange(len(order), 0, -1)  # best gets the highest score
        scores[q, q] = 99.0  # the query itself scores highest and must still never be returned
    return scores


@pytest.fixture
def peers2():
    return M.top_k_peers(ranking_scores(RANKING), 2)


def test_future_correlations_of_the_hand_example():
    np.testing.assert_allclose(pearson_matrix(DAILY), CORR, atol=1e-12)


def test_top_k_peers_never_returns_the_query_and_follows_the_scores(peers2):
    np.testing.assert_array_equal(peers2, [[3, 1], [0, 2], [3, 0], [0, 1]])
    rows = np.array([2, 0])  # scores for a subset of queries: their own column is excluded
    sub = M.top_k_peers(ranking_scores(RANKING)[rows], 3, queries=rows)
    np.testing.assert_array_equal(sub, [[3, 0, 1], [3, 1, 2]])
    with_nan = ranking_scores(RANKING)
    with_nan[0, 3] = np.nan  # a NaN score ranks last
    assert M.top_k_peers(with_nan, 1)[0, 0] == 1


def test_frc_by_hand(peers2):
    # FRC@1: q0 -> C[0,3] = 0, q1 -> C[1,0] = 1, q2 -> C[2,3] = 0, q3 -> C[3,0] = 0
    np.testing.assert_allclose(M.frc_at_k(ranking_scores(RANKING), CORR, 1), [0, 1, 0, 0])
    # FRC@2: q0 (0 + 1)/2, q1 (1 - 1)/2, q2 (0 - 1)/2, q3 (0 + 0)/2
    np.testing.assert_allclose(M.peer_frc(peers2, CORR), [0.5, 0.0, -0.5, 0.0])
    np.testing.assert_allclose(M.frc_at_k(ranking_scores(RANKING), CORR, 2), [0.5, 0.0, -0.5, 0.0])


def test_horizon_returns_compound():
    h = M.horizon_returns(DAILY, (1, 2))
    # day 1: r; two days (1 + a)(1 + b) - 1: r0 17/16 * 15/16 - 1 = -1/256, r1 18/16 * 14/16 - 1 = -4/256,
    # r2 -1/256, r3 (17/16)^2 - 1 = 33/256
    np.testing.assert_array_equal(h[:, 0], np.array([1, 2, -1, 1]) / 16)
    np.testing.assert_array_equal(h[:, 1], np.array([-1, -4, -1, 33]) / 256)


def test_trend_consistency_by_hand(peers2):
    # signs at h = 1: [+, +, -, +]; at h = 2: [-, -, -, +]
    # q0 (+ | -) peers 3, 1: h1 both +  -> 1.0;  h2 3 is +, 1 is -  -> 0.5
    # q1 (+ | -) peers 0, 2: h1 + and - -> 0.5;  h2 both -          -> 1.0
    # q2 (- | -) peers 3, 0: h1 both +  -> 0.0;  h2 3 is +, 0 is -  -> 0.5
    # q3 (+ | +) peers 0, 1: h1 both +  -> 1.0;  h2 both -          -> 0.0
    tc = M.sign_agreement(peers2, M.horizon_returns(DAILY, (1, 2)))
    np.testing.assert_allclose(tc, [[1.0, 0.5], [0.5, 1.0], [0.0, 0.5], [1.0, 0.0]])


def test_information_coefficient_by_hand(peers2):
    # h = 1. Query returns [1, 2, -1, 1]/16 -> ranks [2.5, 4, 1, 2.5].
    # Peer means: q0 (r3 + r1)/2 = 1.5, q1 (r0 + r2)/2 = 0, q2 (r3 + r0)/2 = 1, q3 (r0 + r1)/2 = 1.5
    # -> ranks [3.5, 1, 2, 3.5]. Centred: a = [0, 1.5, -1.5, 0], b = [1, -1.5, -0.5, 1];
    # sum(ab) = -2.25 + 0.75 = -1.5, sum(a^2) = sum(b^2) = 4.5 -> IC = -1.5 / 4.5 = -1/3.
    ic = M.information_coefficient(peers2, M.horizon_returns(DAILY, (1,)))
    np.testing.assert_allclose(ic, [-1 / 3])


def test_rankdata_and_spearman():
    np.testing.assert_allclose(M.rankdata(np.array([3.0, 1.0, 2.0, 2.0])), [4, 1, 2.5, 2.5])
    np.testing.assert_allclose(M.spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])), 1.0)
    np.testing.assert_allclose(M.spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])), -1.0)
    assert np.isnan(M.spearman(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])))


def test_sector_precision_by_hand(peers2):
    # sectors A, A, B, unknown. q0 (A): peers 3 (?), 1 (A) -> 0.5; q1 (A): 0 (A), 2 (B) -> 0.5;
    # q2 (B): 3 (?), 0 (A) -> 0; q3: unknown sector -> not counted (NaN)
    sp = M.sector_precision(peers2, SECTORS)
    np.testing.assert_allclose(sp[:3], [0.5, 0.5, 0.0])
    assert np.isnan(sp[3])


def test_precision_at_1_by_hand(peers2):
    # Off-diagonal correlations per query, sorted: q0 and q1 [-1, 0, 1] -> p50 0, p75 0.5, p90 0.8;
    # q2 [-1, -1, 0] -> p50 -1, p75 -0.5, p90 -0.2; q3 [0, 0, 0] -> all 0 (numpy's linear percentiles).
    thresholds = M.future_corr_percentiles(CORR, (50, 75, 90))
    np.testing.assert_allclose(
        thresholds, [[0, 0.5, 0.8], [0, 0.5, 0.8], [-1, -0.5, -0.2], [0, 0, 0]], atol=1e-12
    )
    # Top-1 peers 3, 0, 3, 0 with correlations 0, 1, 0, 0: q0 0 > 0 no; q1 1 beats all; q2 0 beats all;
    # q3 0 > 0 no.
    p1 = M.precision_at_1(peers2[:, 0], CORR, thresholds)
    np.testing.assert_array_equal(p1, [[False] * 3, [True] * 3, [True] * 3, [False] * 3])


# Spread: query r_q = [2, -1, 3, 0]%, one peer r_p = [1, 1, 1, 1]%.
# s = [1, -2, 2, -1]%, cumulative [1, -1, 1, 0]%; position day 1 = 0 (nothing yet), day 2 = -sign(1) = -1,
# day 3 = -sign(-1) = +1, day 4 = -sign(1) = -1. P&L = [0, 2, 2, 1]%.
# |position changes| = [0, 1, 2, 2] plus closing 1 at the end of day 4 -> [0, 1, 2, 3]; both legs -> x2.
SPREAD_DAILY = 0.01 * np.array([[2, -1, 3, 0], [1, 1, 1, 1]], dtype=float)


def test_spread_positions_pnl_and_turnover_by_hand():
    spread = M.spread_returns(np.array([[1]]), SPREAD_DAILY, queries=np.array([0]))
    np.testing.assert_allclose(spread, [[0.01, -0.02, 0.02, -0.01]], atol=1e-15)
    np.testing.assert_array_equal(M.spread_positions(spread), [[0, -1, 1, -1]])
    pnl, turnover = M.spread_trades(spread)
    np.testing.assert_allclose(pnl, [[0, 0.02, 0.02, 0.01]], atol=1e-15)
    np.testing.assert_array_equal(turnover, [[0, 2, 4, 6]])


def test_tracking_error_by_hand():
    # s = [1, -2, 2, -1]%: mean 0, sum of squares 10 (%^2), ddof 1 -> sqrt(10 / 3) % = 1.8257%
    spread = np.array([[0.01, -0.02, 0.02, -0.01]])
    np.testing.assert_allclose(M.tracking_error(spread), [0.01 * math.sqrt(10 / 3)])


def test_spread_returns_clip_daily_returns_at_50_percent():
    daily = np.array([[0.9, -0.7], [0.0, 0.0], [0.1, 0.1]])
    # query 0's returns become [0.5, -0.5]; peers 1 and 2 average [0.05, 0.05]
    spread = M.spread_returns(np.array([[1, 2]]), daily, queries=np.array([0]), clip=M.CLIP)
    np.testing.assert_allclose(spread, [[0.45, -0.55]])


def test_backtest_summary_by_hand():
    # P&L [0, 2, 2, 1]%: mean 1.25%; deviations [-1.25, 0.75, 0.75, -0.25]% -> sum sq 2.75 (%^2), ddof 1
    # -> sd sqrt(2.75/3) % = 0.95743%; Sharpe = 1.25 / 0.95743 * sqrt(252) = 20.725.
    # Turnover [0, 2, 4, 6] -> mean 3 dollars a day; break-even 1.25% / 3 = 41.67 bp per dollar traded.
    # At 10 bp: P&L - 0.001 * turnover = [0, 1.8, 1.6, 0.4]% -> mean 0.95%; deviations
    # [-0.95, 0.85, 0.65, -0.55]% -> sum sq 2.35, sd sqrt(2.35/3) = 0.88506% -> Sharpe 17.039.
    pnl = np.array([0, 0.02, 0.02, 0.01])
    turnover = np.array([0, 2, 4, 6.0])
    out = M.backtest_summary(pnl, turnover, costs_bp=(5, 10))
    assert out["gross_sharpe"] == pytest.approx(0.0125 / math.sqrt(2.75e-4 / 3) * math.sqrt(252))
    assert out["gross_sharpe"] == pytest.approx(20.725, abs=1e-3)
    assert out["turnover"] == pytest.approx(3.0)
    assert out["break_even_bp"] == pytest.approx(125 / 3)
    net = np.array([0, 0.018, 0.016, 0.004])
    assert out["net_sharpe_10bp"] == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
    assert out["net_sharpe_10bp"] == pytest.approx(17.039, abs=1e-3)
    assert out["net_sharpe_5bp"] < out["gross_sharpe"]


def test_bootstrap_is_paired_and_ignores_unscored_queries():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    values = np.vstack([x, x + 1.0, np.where(np.arange(500) % 2 == 0, x, np.nan)])
    samples = M.bootstrap_means(values, n_resamples=300, seed=1, max_cells=10_000)  # several chunks
    assert samples.shape == (3, 300)
    # the same draw for every row: the difference of row 1 and row 0 is exactly 1 in every resample
    np.testing.assert_allclose(samples[1] - samples[0], 1.0)
    lo, hi = M.interval(samples[0])
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / np.sqrt(500), rel=0.25)
    # row 2 averages only its finite values
    assert abs(np.mean(samples[2]) - np.nanmean(values[2])) < 0.02
    again = M.bootstrap_means(values, n_resamples=300, seed=1)
    np.testing.assert_allclose(again, samples)  # chunking does not change the draws' results


def test_group_means_average_the_finite_values_of_each_date():
    values = np.array([[1.0, 3.0, np.nan, 5.0, 7.0], [np.nan, np.nan, 2.0, 4.0, 6.0]])
    groups = np.array([0, 0, 0, 1, 2])
    np.testing.assert_allclose(M.group_means(values, groups, 4), [[2, 5, 7, np.nan], [2, 4, 6, np.nan]])


def test_date_block_bootstrap_is_as_wide_as_the_disagreement_between_dates():
    rng = np.random.default_rng(0)
    # Two dates with very different means, many queries each: the queries of a date are not
    # independent evidence, so the interval must span what the two dates say.
    groups = np.repeat([0, 1], 2000)
    x = np.where(groups == 0, 0.2, 0.6) + 0.05 * rng.standard_normal(len(groups))
    block = M.date_block_bootstrap_means(x, groups, 1000, seed=0)[0]
    per_query = M.bootstrap_means(x, 1000, seed=0)[0]
    lo, hi = M.interval(block)
    qlo, qhi = M.interval(per_query)
    assert lo < 0.4 < hi  # the mean of the date means
    assert hi - lo > 10 * (qhi - qlo)
    assert hi - lo > 0.3  # resamples of one date alone give 0.2 or 0.6
    # Ten dates that agree: the interval is narrow and about the per-query one.
    groups = np.repeat(np.arange(10), 200)
    x = 0.3 + 0.05 * rng.standard_normal(len(groups))
    lo, hi = M.interval(M.date_block_bootstrap_means(x, groups, 1000, seed=0)[0])
    qlo, qhi = M.interval(M.bootstrap_means(x, 1000, seed=0)[0])
    assert lo < 0.3 < hi and hi - lo < 0.01 and hi - lo < 2 * (qhi - qlo)


def test_date_block_bootstrap_is_paired_keeps_whole_dates_and_weights_queries():
    groups = np.array([0, 0, 0, 1, 2, 2])
    x = np.array([1.0, 2.0, 3.0, 10.0, 4.0, np.nan])
    values = np.vstack([x, x + 1.0])
    samples = M.date_block_bootstrap_means(values, groups, 500, seed=3)
    np.testing.assert_allclose(samples[1] - samples[0], 1.0)
    # Every resample is a query-weighted mean over whole dates: date sums (6, 10, 4) over counts (3, 1, 1).
    sums, counts = np.array([6.0, 10.0, 4.0]), np.array([3.0, 1.0, 1.0])
    possible = {
        round(sums[list(c)].sum() / counts[list(c)].sum(), 12)
        for c in np.array(np.meshgrid(*[range(3)] * 3)).reshape(3, -1).T
    }
    assert {round(v, 12) for v in samples[0]} <= possible
    np.testing.assert_allclose(
        M.date_block_bootstrap_means(values, groups, 500, seed=3), samples
    )  # repeatable
    one = M.date_block_bootstrap_means(np.arange(5.0), np.zeros(5, dtype=int), 50)
    np.testing.assert_allclose(one, 2.0)  # a single date: no spread at all
