from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.panel import FIELDS, Panel, PanelError


def make_panel(n_dates=100, n_assets=5, seed=0) -> Panel:
    rng = np.random.default_rng(seed)
    dates = np.busday_offset("2020-01-01", np.arange(n_dates), roll="forward")
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_dates, n_assets)), axis=0))
    values = np.empty((len(FIELDS), n_dates, n_assets), dtype=np.float32)
    values[0] = close * 0.99
    values[1] = close * 1.01
    values[2] = close * 0.98
    values[3] = close
    values[4] = rng.integers(1_000, 5_000, (n_dates, n_assets))
    values[5] = values[3] * values[4]
    tickers = [f"T{i}" for i in range(n_assets)]
    assets = pd.DataFrame(
        {"ticker": tickers, "sector": ["Tech", "Energy"] * (n_assets // 2) + ["Tech"] * (n_assets % 2)}
    )
    return Panel(dates, tickers, values, assets)


def test_window_never_reaches_past_its_date():
    panel = make_panel()
    # Poison every bar after the query date: a window that read one would contain NaN.
    for pos in (63, 70, 99):
        poisoned = Panel(panel.dates, panel.tickers, panel.values.copy(), panel.assets)
        poisoned.values[:, pos + 1 :] = np.nan
        window = poisoned.window(panel.dates[pos], 64)
        assert window.shape == (len(FIELDS), 64, panel.n_assets)
        assert not np.isnan(window).any()
        np.testing.assert_array_equal(window[3, -1], panel.close[pos])


def test_window_on_a_non_trading_day_uses_the_last_trading_day_before_it():
    panel = make_panel()
    friday = next(pd.Timestamp(d) for d in panel.dates[64:] if pd.Timestamp(d).day_of_week == 4)
    saturday = friday + pd.Timedelta(days=1)
    np.testing.assert_array_equal(panel.window(saturday, 64), panel.window(friday, 64))


def test_window_without_enough_history_is_refused():
    panel = make_panel()
    with pytest.raises(PanelError, match="needs 2 more days"):
        panel.window(panel.dates[61], 64)
    with pytest.raises(PanelError, match="before the panel's first date"):
        panel.window("2019-01-01", 10)


def test_slice_dates_is_inclusive_and_a_view():
    panel = make_panel()
    part = panel.slice_dates(panel.dates[10], panel.dates[19])
    assert part.n_dates == 10 and part.dates[0] == panel.dates[10] and part.dates[-1] == panel.dates[19]
    assert np.shares_memory(part.values, panel.values)


def test_save_load_round_trip(tmp_path):
    panel = make_panel()
    panel.values[3, 5, 2] = np.nan  # a missing close survives the trip
    panel.values[:, 7, 1] = np.nan  # a missing bar too
    panel.save(tmp_path / "p")
    loaded = Panel.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.values, panel.values)
    assert list(loaded.tickers) == list(panel.tickers)
    assert list(loaded.assets["sector"]) == list(panel.assets["sector"])
    assert loaded.fingerprint() == panel.fingerprint()
    part = Panel.load(tmp_path / "p", start=panel.dates[20], end=panel.dates[29])
    assert part.n_dates == 10
    np.testing.assert_array_equal(part.values, panel.values[:, 20:30])


def test_fingerprint_changes_with_any_value():
    panel = make_panel()
    before = panel.fingerprint()
    panel.values[3, 50, 0] *= 1.0001
    assert panel.fingerprint() != before


def test_load_missing_panel_says_how_to_make_one(tmp_path):
    with pytest.raises(PanelError, match="fascl data synth"):
        Panel.load(tmp_path / "nothing")


def test_inconsistent_shapes_and_duplicates_are_refused():
    panel = make_panel()
    with pytest.raises(PanelError, match="does not match"):
        Panel(panel.dates[:-1], panel.tickers, panel.values)
    with pytest.raises(PanelError, match="unique"):
        Panel(panel.dates, ["A"] * panel.n_assets, panel.values)


def test_a_save_killed_between_its_two_renames_leaves_the_previous_panel_readable(tmp_path):
    """Panel.save moves the old directory aside, then renames the new one into place; a process killed
    between the two leaves no panel at the path. The next load or save puts the old one back."""
    import subprocess
    import sys

    panel = make_panel()
    panel.save(tmp_path / "p")
    script = f"""
import os, signal
from pathlib import Path
from tests.market.test_panel import make_panel
real = Path.rename
def rename(self, target):
    done = real(self, target)
    if Path(target).name == ".p.old":
        os.kill(os.getpid(), signal.SIGKILL)  # between moving the old panel aside and the new one in
    return done
Path.rename = rename
make_panel(seed=1).save({str(tmp_path / "p")!r})
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    assert killed.returncode == -9
    assert not (tmp_path / "p").exists()  # the window this test is about
    loaded = Panel.load(tmp_path / "p")
    assert loaded.fingerprint() == panel.fingerprint()
    make_panel(seed=2).save(tmp_path / "p")
    assert Panel.load(tmp_path / "p").fingerprint() == make_panel(seed=2).fingerprint()
    assert not (tmp_path / ".p.old").exists()
