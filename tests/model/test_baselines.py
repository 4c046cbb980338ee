"""The long-history classical baselines against independent computations on a small hand-made panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market.panel import FIELDS, Panel
from model.evaluate import EvalConfig, evaluate, history_needed, prepare_context
from model.history import BOUND, SHRINK
from model.retrievers import (
    CLASSICAL,
    EvalContext,
    EwmaPearsonRetriever,
    MarketShrinkRetriever,
    PCAShrinkRetriever,
    WinsorizedPearsonRetriever,
    make_baseline,
)

N_DATES, N_ASSETS, T = 700, 9, 650
YOUNG = 8  # the asset listed 300 days before T: longer histories see gaps before it
GAPPY = 7  # an asset with missing closes long before T (and a complete last window)


def small_panel(seed: int = 0) -> Panel:
    """Returns driven by one common factor and fat-tailed noise, a young asset and some gaps."""
    rng = np.random.default_rng(seed)
    market = 0.01 * rng.standard_normal(N_DATES)
    beta = rng.uniform(0.3, 1.5, N_ASSETS)
    noise = 0.015 * rng.standard_t(3, size=(N_DATES, N_ASSETS))
    close = 50.0 * np.cumprod(1.0 + np.clip(market[:, None] * beta + noise, -0.4, 0.4), axis=0)
    close[: T - 300, YOUNG] = np.nan
    close[[100, 300, 301, 500], GAPPY] = np.nan
    values = np.full((len(FIELDS), N_DATES, N_ASSETS), np.nan, dtype=np.float32)
    values[FIELDS.index("close")] = close
    values[FIELDS.index("volume")] = 1000.0
    tickers = np.array([f"A{i}" for i in range(N_ASSETS)], dtype=object)
    assets = pd.DataFrame({"ticker": tickers, "sector": ["X"] * N_ASSETS})
    dates = pd.bdate_range("2010-01-01", periods=N_DATES).to_numpy().astype("datetime64[D]")
    return Panel(dates, tickers, values, assets)


def clipped_zscores(panel: Panel, t: int, assets, length: int) -> np.ndarray:
    """Each asset's returns over the `length` days ending at t, z-scored over its present days,
    clipped at the bound, gaps as 0: computed here without model.history."""
    close = panel.close.astype(np.float64)
    out = []
    for a in assets:
        c = close[t - length : t + 1, a]
        r = c[1:] / c[:-1] - 1.0
        present = np.isfinite(r)
        z = np.zeros(length)
        z[present] = (r[present] - r[present].mean()) / r[present].std()
        out.append(np.clip(z, -BOUND, BOUND))
    return np.array(out)


@pytest.fixture(scope="module")
def panel():
    return small_panel()


ALL = np.arange(N_ASSETS)


@pytest.mark.parametrize(
    "name,length", [("pearson_w", 64), ("pearson_w126", 126), ("pearson_w252", 252), ("pearson_w504", 504)]
)
def test_winsorized_pearson_is_the_correlation_of_clipped_zscores(panel, name, length):
    retriever = make_baseline(name)
    assert retriever.length == length and retriever.history == length + 1
    expected = np.corrcoef(clipped_zscores(panel, T, ALL, length))
    np.testing.assert_allclose(retriever.scores(EvalContext(panel), T, ALL), expected, atol=1e-12)


def test_longer_histories_read_the_earlier_days(panel):
    ctx = EvalContext(panel)
    short, long = (
        make_baseline("pearson_w").scores(ctx, T, ALL),
        make_baseline("pearson_w504").scores(ctx, T, ALL),
    )
    assert np.abs(short - long).max() > 0.05


def test_ewma_is_the_weighted_correlation_of_weighted_zscores(panel):
    length, half_life = 504, 126
    close = panel.close.astype(np.float64)
    weight = 0.5 ** ((length - 1 - np.arange(length)) / half_life)  # age 0 on the query date
    rows = []
    for a in ALL:
        c = close[T - length : T + 1, a]
        r = c[1:] / c[:-1] - 1.0
        present = np.isfinite(r)
        mean = np.average(r[present], weights=weight[present])
        sd = np.sqrt(np.average((r[present] - mean) ** 2, weights=weight[present]))
        z = np.zeros(length)
        z[present] = (r[present] - mean) / sd
        rows.append(np.clip(z, -BOUND, BOUND))
    cov = np.cov(np.array(rows), aweights=weight)
    expected = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    got = EwmaPearsonRetriever(length=length, half_life=half_life).scores(EvalContext(panel), T, ALL)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_ewma_with_a_huge_half_life_is_the_unweighted_correlation(panel):
    ctx = EvalContext(panel)
    flat = EwmaPearsonRetriever(half_life=1e15).scores(ctx, T, ALL)
    np.testing.assert_allclose(flat, make_baseline("pearson_w504").scores(ctx, T, ALL), atol=1e-10)
    assert np.abs(make_baseline("ewma504").scores(ctx, T, ALL) - flat).max() > 0.01


def eligible(panel: Panel, t: int, window: int = 64) -> np.ndarray:
    return np.flatnonzero(np.isfinite(panel.close[t - window + 1 : t + 1]).all(axis=0))


def test_market_shrinkage_is_its_closed_form(panel):
    ctx = EvalContext(panel)
    universe = eligible(panel, T)
    assert len(universe) == N_ASSETS
    z = clipped_zscores(panel, T, universe, 504)
    h = z - z.mean(axis=1, keepdims=True)
    h /= np.linalg.norm(h, axis=1, keepdims=True)  # unit rows: h_i . h_j is the correlation
    m = h.mean(axis=0) / np.linalg.norm(h.mean(axis=0))
    corr, loading = h @ h.T, h @ m
    np.testing.assert_allclose(corr, np.corrcoef(z), atol=1e-12)
    expected = (1 - SHRINK) * corr + SHRINK * np.outer(loading, loading)
    got = MarketShrinkRetriever().scores(ctx, T, universe)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # Not renormalised: the self-score is below 1 for assets off the market direction.
    assert (np.diag(got) < 1 - 1e-6).all()
    # The market is that of every eligible asset, whichever subset is scored.
    subset = np.array([0, 3, 5])
    np.testing.assert_allclose(
        MarketShrinkRetriever().scores(ctx, T, subset), expected[np.ix_(subset, subset)], atol=1e-12
    )


def test_market_shrinkage_with_no_weight_is_the_winsorized_pearson(panel):
    ctx = EvalContext(panel)
    np.testing.assert_allclose(
        MarketShrinkRetriever(shrink=0.0).scores(ctx, T, ALL),
        make_baseline("pearson_w504").scores(ctx, T, ALL),
        atol=1e-12,
    )


def test_pca_shrinkage_is_its_closed_form(panel):
    z = clipped_zscores(panel, T, ALL, 504)
    corr = np.corrcoef(z)
    # The top-5 part of the correlation matrix, from its eigendecomposition.
    eigval, eigvec = np.linalg.eigh(corr)
    top = eigvec[:, -5:] * eigval[-5:]
    expected = (1 - 0.2) * corr + 0.2 * top @ eigvec[:, -5:].T
    got = PCAShrinkRetriever().scores(EvalContext(panel), T, ALL)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # With as many factors as assets the factor model is the correlation matrix itself.
    full = PCAShrinkRetriever(factors=N_ASSETS).scores(EvalContext(panel), T, ALL)
    np.testing.assert_allclose(full, corr, atol=1e-10)


def test_pca_factors_come_from_every_asset_eligible_on_the_date(panel):
    """Scoring a subset of the assets uses the factors of the whole eligible cross-section."""
    z = clipped_zscores(panel, T, ALL, 504)
    rows = z - z.mean(axis=1, keepdims=True)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    loadings = rows @ vt[:2].T
    subset = ALL[:5]
    expected = 0.8 * rows[:5] @ rows[:5].T + 0.2 * loadings[:5] @ loadings[:5].T
    got = PCAShrinkRetriever(factors=2).scores(EvalContext(panel), T, subset)
    np.testing.assert_allclose(got, expected, atol=1e-10)


LONG = [
    "pearson_w",
    "pearson_w126",
    "pearson_w252",
    "pearson_w504",
    "ewma504",
    "shrink_market504",
    "shrink_pca504",
    "pca",
]


@pytest.mark.parametrize("name", LONG)
def test_scores_read_exactly_their_history(panel, name):
    """Closes after D and before D - history + 1 change nothing; the oldest close read does."""
    retriever = make_baseline(name)
    h = retriever.history
    base = retriever.scores(EvalContext(panel), T, ALL)

    def changed(position):
        values = panel.values.copy()
        values[FIELDS.index("close"), position, :YOUNG] *= 1.3
        return retriever.scores(EvalContext(Panel(panel.dates, panel.tickers, values, panel.assets)), T, ALL)

    values = panel.values.copy()
    values[:, T + 1 :] = np.nan
    np.testing.assert_array_equal(
        retriever.scores(EvalContext(Panel(panel.dates, panel.tickers, values, panel.assets)), T, ALL), base
    )
    np.testing.assert_array_equal(changed(T - h), base)
    assert np.abs(changed(T - h + 1) - base).max() > 1e-6


def test_the_evaluation_slices_enough_history_for_every_method(panel):
    config = EvalConfig(ks=(1, 2), horizons=(1,), bootstrap=0)
    retrievers = [make_baseline(n) for n in LONG]
    assert history_needed(retrievers) == 505
    ctx, local = prepare_context(panel, np.array([T - 64]), config, lookback=history_needed(retrievers))
    assert local[0] < T - 64  # the slice starts after the panel's first date
    sliced = evaluate(ctx, retrievers, local, config)
    full = evaluate(EvalContext(panel), retrievers, np.array([T - 64]), config)
    np.testing.assert_array_equal(sliced.frc, full.frc)


def test_classical_methods_are_every_baseline_but_random_and_oracle():
    assert "random" not in CLASSICAL and "oracle" not in CLASSICAL
    for name in (
        "pearson",
        "pearson_w504",
        "ewma504",
        "shrink_market504",
        "shrink_pca504",
        "sector",
        "pca",
        "window",
        "dtw",
    ):
        assert name in CLASSICAL
    assert isinstance(make_baseline("pearson_w252"), WinsorizedPearsonRetriever)
    assert make_baseline("pearson_w252", length=10).length == 10  # options still override


def test_an_untrained_small_style_encoder_scores_exactly_as_its_classical_start(panel):
    """Through the evaluation's own path (FasclRetriever on an EvalContext), an encoder whose history
    path has not been trained ranks peers exactly as `shrink_market` over the same history."""
    import torch

    from model.encoder import PatchTransformer, encoder_config
    from model.retrievers import FasclRetriever

    torch.manual_seed(0)
    encoder = PatchTransformer(encoder_config("tiny", history=504)).eval()
    fascl = FasclRetriever(name="fascl", model=encoder, meta={}, channels="ohlcva")
    assert fascl.history == 505
    ctx = EvalContext(panel)
    got = fascl.scores(ctx, T, ALL)
    want = MarketShrinkRetriever().scores(ctx, T, ALL)
    np.testing.assert_allclose(got, want, atol=1e-6)
    off = ~np.eye(len(ALL), dtype=bool)
    np.testing.assert_array_equal(
        np.argsort(-np.where(off, got, -np.inf), axis=1)[:, :3],
        np.argsort(-np.where(off, want, -np.inf), axis=1)[:, :3],
    )
