"""Window features: shapes, per-window z-scores, eligibility and the fill rules for missing fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market.panel import FIELDS, Panel
from market.synthetic import generate
from model.features import CHANNEL_SETS, WINDOW, build_cube, channel_names, zscore

N_CHANNELS = {"ohlcva": 6, "close": 1, "ohlcva_ret": 7, "close_ret": 2}


@pytest.fixture(scope="module")
def panel() -> Panel:
    return generate(10, 1.0, seed=2).panel


def _with(panel: Panel, edit) -> Panel:
    values = panel.values.copy()
    edit(values)
    return Panel(panel.dates, panel.tickers, values, panel.assets)


def _np_zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    std = x.std()
    return np.zeros_like(x) if std <= 1e-8 else (x - x.mean()) / std


def test_window_is_64():
    assert WINDOW == 64


@pytest.mark.parametrize("channels", list(CHANNEL_SETS))
def test_window_shape_and_channel_names(panel, channels):
    cube = build_cube(panel, channels)
    assert channel_names(channels) == CHANNEL_SETS[channels]
    assert cube.n_channels == N_CHANNELS[channels] == len(CHANNEL_SETS[channels])
    assert cube.series.shape == (N_CHANNELS[channels], panel.n_dates, panel.n_assets)
    assert cube.series.dtype == torch.float32
    assert torch.isfinite(cube.series).all()
    x = cube.windows(100, np.array([0, 3, 7]))
    assert x.shape == (3, N_CHANNELS[channels], WINDOW)
    assert x.dtype == torch.float32
    assert cube.windows(100, np.array([5])).shape == (1, N_CHANNELS[channels], WINDOW)


@pytest.mark.parametrize("channels", list(CHANNEL_SETS))
def test_each_channel_is_z_scored_along_time(panel, channels):
    cube = build_cube(panel, channels)
    x = cube.windows(120, np.arange(panel.n_assets)).double()
    np.testing.assert_allclose(x.mean(dim=-1).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(dim=-1, unbiased=False).numpy(), 1.0, atol=1e-4)


def test_window_values_are_the_z_scored_fields(panel):
    t, a = 90, 4
    cube = build_cube(panel, "ohlcva_ret")
    x = cube.windows(t, np.array([a]))[0].double().numpy()
    span = slice(t - WINDOW + 1, t + 1)
    for k, name in enumerate(("open", "high", "low", "close")):
        np.testing.assert_allclose(x[k], _np_zscore(panel.field(name)[span, a]), atol=1e-4)
    for k, name in ((4, "volume"), (5, "amount")):
        np.testing.assert_allclose(x[k], _np_zscore(np.log1p(panel.field(name)[span, a])), atol=1e-4)
    close = panel.close[:, a].astype(np.float64)
    ret = close[t - WINDOW + 1 : t + 1] / close[t - WINDOW : t] - 1
    np.testing.assert_allclose(x[6], _np_zscore(ret), atol=1e-3)


def test_a_constant_channel_becomes_zeros(panel):
    t, a = 120, 2

    def flat_volume(values):
        values[FIELDS.index("volume"), t - WINDOW + 1 : t + 1, a] = 12345.0

    cube = build_cube(_with(panel, flat_volume), "ohlcva")
    x = cube.windows(t, np.array([a, a + 1]))
    assert torch.equal(x[0, 4], torch.zeros(WINDOW))
    assert torch.isfinite(x).all()
    assert x[0, 5].std() > 0.5  # amount still moves with the close
    assert x[1, 4].std() > 0.5  # another asset is untouched
    # the same for a flat price with close only
    cube = build_cube(_with(panel, lambda v: v.__setitem__((slice(None), slice(0, t + 1), a), 7.0)), "close")
    assert torch.equal(cube.windows(t, np.array([a])), torch.zeros(1, 1, WINDOW))


def test_zscore_helper():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]])
    z = zscore(x)
    assert torch.equal(z[0, 1], torch.zeros(4))
    assert torch.allclose(z[0, 0], (x[0, 0] - 2.5) / x[0, 0].std(unbiased=False))


# ----------------------------------------------------------------- eligibility
def test_eligibility_needs_64_present_closes(panel):
    cube = build_cube(panel)
    assert not cube.eligible[: WINDOW - 1].any()
    assert cube.eligible[WINDOW - 1 :].all()  # the synthetic panel has no gaps
    with pytest.raises(ValueError, match="starts before the data"):
        cube.windows(WINDOW - 2, np.array([0]))
    assert cube.windows(WINDOW - 1, np.array([0])).shape == (1, 6, WINDOW)


@pytest.mark.parametrize("channels", ["ohlcva", "close"])
def test_a_missing_close_blocks_the_next_64_dates_only(panel, channels):
    k, a = 140, 3

    def drop_close(values):
        values[FIELDS.index("close"), k, a] = np.nan

    cube = build_cube(_with(panel, drop_close), channels)
    ineligible = np.flatnonzero(~cube.eligible[WINDOW - 1 :, a]) + WINDOW - 1
    np.testing.assert_array_equal(ineligible, np.arange(k, k + WINDOW))
    others = np.delete(np.arange(panel.n_assets), a)
    assert cube.eligible[WINDOW - 1 :, others].all()
    assert a not in cube.eligible_assets(k + WINDOW - 1)
    assert a in cube.eligible_assets(k + WINDOW)
    assert torch.isfinite(cube.series).all()  # the gap is not NaN in the tensor


def test_missing_open_high_low_or_volume_do_not_block_eligibility(panel):
    k, a = 140, 3

    def drop(values):
        for name in ("open", "high", "low", "volume", "amount"):
            values[FIELDS.index(name), k, a] = np.nan

    cube = build_cube(_with(panel, drop))
    assert cube.eligible[WINDOW - 1 :, a].all()


def test_close_only_rows_take_the_close_for_open_high_low(panel):
    k, a = 140, 3
    close = float(panel.close[k, a])

    def close_only(values):
        for name in ("open", "high", "low"):
            values[FIELDS.index(name), k, a] = np.nan

    cube = build_cube(_with(panel, close_only), "ohlcva")
    for c in range(3):
        assert cube.series[c, k, a].item() == pytest.approx(close)
        assert cube.series[c, k, a + 1].item() == pytest.approx(float(panel.values[c, k, a + 1]))
    x = cube.windows(k + 10, np.array([a]))
    assert torch.isfinite(x).all()


def test_missing_volume_counts_as_zero_and_amount_defaults_to_close_times_volume(panel):
    k, a = 140, 3
    vol_i, amt_i = FIELDS.index("volume"), FIELDS.index("amount")

    def edit(values):
        values[vol_i, k, a] = np.nan  # volume missing (so amount cannot be derived either)
        values[amt_i, k, a] = np.nan
        values[amt_i, k + 1, a] = np.nan  # amount missing, volume present

    cube = build_cube(_with(panel, edit), "ohlcva")
    assert cube.series[4, k, a].item() == 0.0
    assert cube.series[5, k, a].item() == 0.0
    expected = np.log1p(np.float64(panel.close[k + 1, a]) * panel.field("volume")[k + 1, a])
    assert cube.series[5, k + 1, a].item() == pytest.approx(expected, rel=1e-5)


def test_cube_keeps_the_raw_closes_with_nan(panel):
    def drop(values):
        values[FIELDS.index("close"), 100, 1] = np.nan

    p = _with(panel, drop)
    cube = build_cube(p)
    assert np.isnan(cube.close[100, 1])
    np.testing.assert_array_equal(np.isnan(cube.close), np.isnan(p.close))
    np.testing.assert_array_equal(cube.dates, p.dates)
    np.testing.assert_array_equal(cube.tickers, p.tickers)


# ------------------------------------------------------------------ options
def test_unknown_channel_set_lists_the_options(panel):
    for call in (lambda: channel_names("ohlc"), lambda: build_cube(panel, "ohlc")):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "'ohlc'" in message
        for name in CHANNEL_SETS:
            assert name in message
