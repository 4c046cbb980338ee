"""Look-ahead leak tests: targets read only (D, D + 64]; features read only bars up to D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market.panel import Panel
from market.synthetic import generate
from model.features import CHANNEL_SETS, build_cube, historical_returns
from model.targets import HORIZON, future_complete, future_returns, pearson_matrix

H = HORIZON


@pytest.fixture(scope="module")
def panel() -> Panel:
    return generate(12, 1.2, seed=5).panel


def _closes(n_dates=220, n_assets=6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (50 * np.cumprod(1 + 0.02 * rng.standard_normal((n_dates, n_assets)), axis=0)).astype(np.float32)


def _poisoned_copy(panel: Panel, after: int, value: float) -> Panel:
    values = panel.values.copy()
    values[:, after + 1 :] = value
    return Panel(panel.dates, panel.tickers, values, panel.assets)


# -------------------------------------------------------------- future returns
def test_horizon_is_64():
    assert HORIZON == 64


@pytest.mark.parametrize("poison", [np.nan, 1e9, -1.0, 0.0])
def test_future_returns_read_only_closes_t_to_t_plus_64(poison):
    close = _closes()
    assets = np.arange(close.shape[1])
    t = 80
    returns, valid = future_returns(close, t, assets)
    assert returns.shape == (len(assets), H) and valid.all()
    poisoned = close.copy()
    poisoned[:t] = poison
    poisoned[t + H + 1 :] = poison
    returns2, valid2 = future_returns(poisoned, t, assets)
    np.testing.assert_array_equal(returns2, returns)
    np.testing.assert_array_equal(valid2, valid)
    # and they are the simple close-to-close returns over (t, t + 64]
    c = close.astype(np.float64)
    np.testing.assert_allclose(returns, (c[t + 1 : t + H + 1] / c[t : t + H] - 1).T, rtol=1e-12)


def test_future_returns_do_change_with_the_bars_they_read():
    close = _closes()
    t = 80
    base, _ = future_returns(close, t, [0, 1])
    for pos in (t, t + 1, t + H):
        changed = close.copy()
        changed[pos, 0] *= 1.1
        r, valid = future_returns(changed, t, [0, 1])
        assert valid.all()
        assert not np.array_equal(r[0], base[0])
        np.testing.assert_array_equal(r[1], base[1])


def test_future_returns_for_an_asset_subset_and_order():
    close = _closes()
    full, _ = future_returns(close, 30, np.arange(6))
    sub, _ = future_returns(close, 30, np.array([4, 1]))
    np.testing.assert_array_equal(sub, full[[4, 1]])


@pytest.mark.parametrize("offset", [0, 1, 17, H])
def test_a_single_missing_close_invalidates_the_sample(offset):
    close = _closes()
    t = 50
    close[t + offset, 2] = np.nan
    _, valid = future_returns(close, t, np.arange(6))
    assert valid.tolist() == [True, True, False, True, True, True]


def test_missing_closes_outside_the_target_window_keep_it_valid():
    close = _closes()
    t = 50
    close[t - 1, 2] = np.nan
    close[t + H + 1, 3] = np.nan
    _, valid = future_returns(close, t, np.arange(6))
    assert valid.all()


def test_no_target_past_the_end_of_the_data():
    close = _closes(n_dates=200)
    _, valid = future_returns(close, 200 - H - 1, np.arange(6))  # last close is the panel's last
    assert valid.all()
    for t in (200 - H, 199):
        returns, valid = future_returns(close, t, np.arange(6))
        assert not valid.any()
        assert returns.shape == (6, H)


def _brute_future_complete(close: np.ndarray, horizon: int) -> np.ndarray:
    n_dates, n_assets = close.shape
    out = np.zeros(close.shape, dtype=bool)
    for t in range(n_dates):
        for a in range(n_assets):
            if t + horizon < n_dates:
                out[t, a] = all(np.isfinite(close[s, a]) for s in range(t, t + horizon + 1))
    return out


@pytest.mark.parametrize("horizon", [1, 5, H])
@pytest.mark.parametrize("missing", [0.0, 0.005, 0.05])
def test_future_complete_matches_brute_force(horizon, missing):
    rng = np.random.default_rng(int(horizon * 1000 + missing * 1e4))
    close = _closes(n_dates=150, n_assets=5)
    close[rng.random(close.shape) < missing] = np.nan
    close[:10, 4] = np.nan  # late listing
    close[120:, 3] = np.nan  # delisting
    got = future_complete(close, horizon)
    np.testing.assert_array_equal(got, _brute_future_complete(close, horizon))


def test_future_complete_agrees_with_future_returns_validity():
    rng = np.random.default_rng(1)
    close = _closes(n_dates=200, n_assets=5)
    close[rng.random(close.shape) < 0.003] = np.nan
    complete = future_complete(close)
    for t in range(close.shape[0]):
        np.testing.assert_array_equal(complete[t], future_returns(close, t, np.arange(5))[1])


def test_future_complete_when_the_data_is_shorter_than_the_horizon():
    assert not future_complete(_closes(n_dates=H)).any()
    assert future_complete(_closes(n_dates=H + 1))[0].all()


# ------------------------------------------------------------- Pearson matrix
def test_pearson_matrix_matches_corrcoef():
    rng = np.random.default_rng(0)
    for n, h in [(2, 5), (7, 64), (30, 10)]:
        x = rng.standard_normal((n, h)) + rng.standard_normal(h)
        np.testing.assert_allclose(pearson_matrix(x), np.corrcoef(x), atol=1e-12)


def test_pearson_matrix_constant_rows_give_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 20))
    x[2] = 0.01
    x[4] = 0.0
    corr = pearson_matrix(x)
    assert np.isfinite(corr).all()
    for k in (2, 4):
        assert (corr[k] == 0).all() and (corr[:, k] == 0).all()
    keep = [0, 1, 3]
    np.testing.assert_allclose(corr[np.ix_(keep, keep)], np.corrcoef(x[keep]), atol=1e-12)
    assert np.all(np.abs(corr) <= 1.0)


# ------------------------------------------------------- features: past only
@pytest.mark.parametrize("channels", list(CHANNEL_SETS))
@pytest.mark.parametrize("poison", [np.nan, 1e9])
def test_windows_ignore_every_bar_after_the_query_date(panel, channels, poison):
    t = 150
    assets = np.arange(panel.n_assets)
    clean = build_cube(panel, channels)
    dirty = build_cube(_poisoned_copy(panel, t, poison), channels)
    for d in (t, t - 1, 63):
        assert torch.equal(dirty.windows(d, assets), clean.windows(d, assets))
        np.testing.assert_array_equal(
            historical_returns(dirty.close, d, assets), historical_returns(clean.close, d, assets)
        )
    np.testing.assert_array_equal(dirty.eligible[: t + 1], clean.eligible[: t + 1])
    np.testing.assert_array_equal(dirty.eligible_assets(t), clean.eligible_assets(t))
    # sanity: the poison does reach the windows that include it
    assert not torch.equal(dirty.windows(t + 1, assets), clean.windows(t + 1, assets))


@pytest.mark.parametrize("channels", list(CHANNEL_SETS))
def test_windows_depend_on_the_last_bar_of_the_window(panel, channels):
    t = 150
    values = panel.values.copy()
    values[:, t, 0] *= 1.3  # every field of asset 0 on the query date
    changed = build_cube(Panel(panel.dates, panel.tickers, values, panel.assets), channels)
    clean = build_cube(panel, channels)
    a, b = changed.windows(t, [0, 1]), clean.windows(t, [0, 1])
    assert not torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    # the bar 64 days back is outside the window
    values = panel.values.copy()
    values[:, t - 64, 0] *= 1.3
    old = build_cube(Panel(panel.dates, panel.tickers, values, panel.assets), channels)
    if "return" in CHANNEL_SETS[channels]:  # the first day's return reads the close before the window
        assert not torch.equal(old.windows(t, [0]), clean.windows(t, [0]))
    else:
        assert torch.equal(old.windows(t, [0]), clean.windows(t, [0]))


def test_historical_returns_are_the_window_returns(panel):
    t = 100
    close = panel.close.astype(np.float64)
    got = historical_returns(panel.close, t, [3, 0])
    assert got.shape == (2, 63)
    np.testing.assert_allclose(got, (close[t - 62 : t + 1] / close[t - 63 : t] - 1).T[[3, 0]], rtol=1e-12)


# ------------------------------------------------- long-history input: past only
@pytest.mark.parametrize("poison", [np.nan, 1e9])
def test_history_inputs_ignore_every_bar_after_the_query_date(panel, poison):
    """The history path's inputs (return z-scores and the market direction of the whole eligible
    cross-section) and the encoder's output on them do not change when every later bar does."""
    from model.encoder import PatchTransformer, encoder_config

    t, length = 200, 120
    assets = np.arange(panel.n_assets)
    clean = build_cube(panel, "ohlcva", history=length)
    dirty = build_cube(_poisoned_copy(panel, t, poison), "ohlcva", history=length)
    torch.manual_seed(0)
    model = PatchTransformer(encoder_config("tiny", history=length)).eval()
    with torch.no_grad():
        model.join.weight.normal_(0, 0.1)  # the Transformer's part counts too
        model.prior_join.weight.normal_(0, 0.1)  # and the candidate prior with the recent block
        model.history.prior_weight.fill_(0.2)
        model.history.recent_gain.fill_(0.3)
    for d in (t, t - 1, 150):
        for got, want in zip(dirty.model_inputs(d, assets), clean.model_inputs(d, assets), strict=True):
            assert torch.equal(got, want)
        with torch.no_grad():
            assert torch.equal(model(*dirty.model_inputs(d, assets)), model(*clean.model_inputs(d, assets)))
    # sanity: the poison does reach the inputs of the next date
    z_dirty, _ = dirty.history_inputs(t + 1, assets)
    z_clean, _ = clean.history_inputs(t + 1, assets)
    assert not torch.equal(z_dirty, z_clean)


def test_history_reads_exactly_its_length(panel):
    """A close `length` days before D (the base of the first return) counts; one more day back does not."""
    t, length = 200, 120
    clean = build_cube(panel, "close", history=length)
    for back, matters in ((length, True), (length + 1, False)):
        values = panel.values.copy()
        values[:, t - back, 2] *= 1.5
        changed = build_cube(Panel(panel.dates, panel.tickers, values, panel.assets), "close", history=length)
        z_changed, _ = changed.history_inputs(t, [2])
        z_clean, _ = clean.history_inputs(t, [2])
        assert torch.equal(z_changed, z_clean) != matters, back
