"""The synthetic market: deterministic, well-formed bars, and a ground truth that means something."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from market.panel import Panel
from market.synthetic import SECTORS, GroundTruth, generate, load_truth, save_synthetic


@pytest.fixture(scope="module")
def market():
    return generate(n_assets=120, years=4, seed=0)


def daily_returns(panel: Panel) -> np.ndarray:
    """Close-to-close returns; row j is the return of day j + 1."""
    close = panel.close.astype(np.float64)
    return close[1:] / close[:-1] - 1.0


def upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0], 1)]


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks along axis 0 (ties are measure-zero here except for volume, which is fine)."""
    return np.argsort(np.argsort(x, axis=0), axis=0).astype(np.float64)


# ----------------------------------------------------------------- determinism
def test_same_seed_is_bit_identical_and_other_seed_differs():
    a = generate(n_assets=60, years=3, seed=7)
    b = generate(n_assets=60, years=3, seed=7)
    c = generate(n_assets=60, years=3, seed=8)
    assert a.panel.values.tobytes() == b.panel.values.tobytes()
    assert list(a.panel.tickers) == list(b.panel.tickers)
    assert a.panel.assets.equals(b.panel.assets)
    assert np.array_equal(a.truth.loadings, b.truth.loadings)
    assert np.array_equal(a.truth.regime_dates, b.truth.regime_dates)
    assert a.panel.fingerprint() == b.panel.fingerprint()

    assert not np.array_equal(a.panel.values, c.panel.values)
    assert list(a.panel.tickers) != list(c.panel.tickers)


def test_rejects_degenerate_sizes():
    with pytest.raises(ValueError):
        generate(n_assets=1, years=1)


# ------------------------------------------------------------------- structure
def test_calendar_and_metadata(market):
    panel = market.panel
    assert panel.n_dates == 4 * 252 and panel.n_assets == 120
    assert str(panel.dates[0]) == "2010-01-04"
    assert np.is_busday(panel.dates).all()
    assert (np.diff(panel.dates.astype(np.int64)) >= 1).all()

    tickers = list(panel.tickers)
    assert tickers == sorted(tickers) and len(set(tickers)) == len(tickers)
    assert all(re.fullmatch(r"[A-Z]{3,4}", t) for t in tickers)

    meta = panel.assets
    assert list(meta["ticker"]) == tickers
    for _, row in meta.iterrows():
        assert row["industry"] in SECTORS[row["sector"]]
        assert row["exchange"] in ("NASDAQ", "NYSE")
        assert re.fullmatch(r"[A-Z][a-z]+ (Corp|Inc|Holdings|Group)", row["name"])
    assert meta["sector"].nunique() >= 8  # 120 assets spread over the named sectors
    assert set(meta["exchange"]) == {"NASDAQ", "NYSE"}


def test_bars_are_consistent(market):
    open_, high, low, close, volume, amount = market.panel.values.astype(np.float64)
    assert not np.isnan(market.panel.values).any()
    assert (low > 0).all()
    assert (low <= np.minimum(open_, close)).all()
    assert (high >= np.maximum(open_, close)).all()
    assert (high > low).mean() > 0.99
    assert (volume >= 0).all() and np.array_equal(volume, np.round(volume))
    np.testing.assert_allclose(amount, close * volume, rtol=1e-6)
    # The open sits near the previous close: an overnight gap, not a fresh price.
    gap = open_[1:] / close[:-1] - 1
    assert np.median(np.abs(gap)) < 0.02


def test_return_magnitudes_are_realistic(market):
    r = daily_returns(market.panel)
    stock_vol = np.median(r.std(axis=0))
    assert 0.012 < stock_vol < 0.035
    assert 0.006 < r.mean(axis=1).std() < 0.02  # equal-weight market ~1%/day
    z = (r - r.mean(axis=0)) / r.std(axis=0)
    assert (z**4).mean() > 3.5  # fat tails (a normal has kurtosis 3)
    # Volatility clusters: big days follow big days.
    m = np.abs(r.mean(axis=1))
    assert np.corrcoef(m[:-1], m[1:])[0, 1] > 0.1


def test_same_sector_pairs_are_more_correlated(market):
    corr = np.corrcoef(daily_returns(market.panel).T)
    sector = market.panel.assets["sector"].to_numpy()
    same = upper(sector[:, None] == sector[None, :])
    pairs = upper(corr)
    assert 0.1 < pairs.mean() < 0.4
    assert pairs[same].mean() > pairs[~same].mean() + 0.05


def test_volume_rises_with_absolute_return(market):
    r = daily_returns(market.panel)
    volume = market.panel.field("volume")[1:].astype(np.float64)
    ra, rv = rank(np.abs(r)), rank(volume)
    ra -= ra.mean(axis=0)
    rv -= rv.mean(axis=0)
    spearman = (ra * rv).sum(axis=0) / np.sqrt((ra**2).sum(axis=0) * (rv**2).sum(axis=0))
    assert spearman.mean() > 0.15
    assert (spearman > 0).mean() > 0.95


# ---------------------------------------------------------------- ground truth
def test_truth_shapes(market):
    truth, panel = market.truth, market.panel
    n_d, n_a = panel.n_dates, panel.n_assets
    assert truth.loadings.shape == (n_d, n_a, len(truth.loading_names)) and truth.loadings.dtype == np.float32
    assert truth.factor_vol.shape == (n_d, len(truth.factor_names))
    assert truth.idio_vol.shape == (n_d, n_a)
    assert (truth.factor_vol > 0).all() and (truth.idio_vol > 0).all()
    assert list(truth.sector) == list(panel.assets["sector"])
    names = truth.factor_names
    assert [names[k] for k in truth.sector_factor] == [f"sector:{s}" for s in truth.sector]
    assert [names[k] for k in truth.industry_factor] == [f"industry:{i}" for i in truth.industry]
    assert len(truth.regime_dates) >= 1 and np.isin(truth.regime_dates, panel.dates).all()


def test_true_correlation_is_the_averaged_factor_covariance(market):
    truth = market.truth
    t, horizon = 200, 5
    cov = np.zeros((len(truth.tickers),) * 2)
    for day in range(t + 1, t + 1 + horizon):
        b = truth.full_loadings(day) * truth.factor_vol[day].astype(np.float64)
        cov += b @ b.T + np.diag(truth.idio_vol[day].astype(np.float64) ** 2)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(truth.true_correlation(t, horizon), cov / np.outer(sd, sd), atol=1e-10)

    corr = truth.true_correlation(t)
    assert np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0)
    assert np.linalg.eigvalsh(corr).min() > -1e-9
    with pytest.raises(ValueError):
        truth.true_correlation(len(truth.dates) - 10, horizon=64)


def test_true_correlation_predicts_realised_correlation(market):
    r = daily_returns(market.panel)
    scores = []
    for t in range(100, market.panel.n_dates - 70, 150):
        realised = np.corrcoef(r[t : t + 64].T)  # returns of days t+1 .. t+64
        scores.append(np.corrcoef(upper(market.truth.true_correlation(t)), upper(realised))[0, 1])
    assert np.mean(scores) > 0.5
    assert min(scores) > 0.3


def test_regime_shifts_change_correlation_structure():
    """Across a regime date the correlation structure changes more than within a regime.

    Compared on the model-implied correlation over a year (no sampling noise),
    as 1 - Pearson between the upper triangles, pooled over several seeds."""
    year = 252
    across, within = [], []
    for seed in range(6):
        truth = generate(n_assets=100, years=4, seed=seed).truth
        n_d = len(truth.dates)

        def year_from(day, truth=truth):
            return upper(truth.true_correlation(day - 1, horizon=year))

        starts = np.searchsorted(truth.dates, truth.regime_dates)
        for s in starts:
            if s - year >= 1 and s + year <= n_d:
                across.append(1 - np.corrcoef(year_from(s - year), year_from(s))[0, 1])
        bounds = np.concatenate([[1], starts, [n_d]])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b - a >= 2 * year:
                within.append(1 - np.corrcoef(year_from(a), year_from(a + year))[0, 1])
    assert len(across) >= 4 and len(within) >= 3
    assert np.mean(across) > 1.5 * np.mean(within)


def test_save_and_load_round_trip(tmp_path, market):
    small = generate(n_assets=60, years=3, seed=3)
    target = tmp_path / "synthetic"
    save_synthetic(small, target)
    save_synthetic(small, target)  # overwriting an existing panel keeps the truth beside it
    assert (target / "truth.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["seed"] == 3

    panel = Panel.load(target)
    assert np.array_equal(panel.values, small.panel.values)
    assert panel.assets.equals(small.panel.assets)

    loaded = load_truth(target)
    assert isinstance(loaded, GroundTruth)
    arrays = ("dates", "loadings", "factor_vol", "idio_vol", "regime_dates", "sector_factor")
    arrays += ("industry_factor",)
    for name in arrays:
        assert np.array_equal(getattr(loaded, name), getattr(small.truth, name)), name
    assert loaded.factor_names == small.truth.factor_names
    assert list(loaded.tickers) == list(small.truth.tickers)
    assert list(loaded.sector) == list(small.truth.sector)
    assert list(loaded.industry) == list(small.truth.industry)
    np.testing.assert_array_equal(loaded.true_correlation(100), small.truth.true_correlation(100))
    with pytest.raises(FileNotFoundError):
        load_truth(tmp_path / "missing")
