"""`fascl data info` through the real CLI app: the panel summary, its sectors and its trading calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fascl.cli.main import app
from fascl.settings import get_settings
from market.panel import FIELDS, Panel


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASCL_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_data_info_shows_the_trading_calendar(home):
    # Weekdays of November 2016 plus Saturday the 12th; Thanksgiving (the 24th) is a holiday.
    dates = np.union1d(pd.bdate_range("2016-11-01", "2016-11-30").to_numpy(), [np.datetime64("2016-11-12")])
    dates = dates.astype("datetime64[D]")
    values = np.full((len(FIELDS), len(dates), 3), 10.0, dtype=np.float32)
    values[:, dates == np.datetime64("2016-11-24"), :] = np.nan  # nobody trades on Thanksgiving
    values[:, dates == np.datetime64("2016-11-12"), 1:] = np.nan  # one bar on a Saturday (AAA's)
    values[:, dates == np.datetime64("2016-11-16"), 1] = np.nan  # BBB misses a Wednesday
    assets = pd.DataFrame(
        {
            "ticker": ["AAA", "BBB", "CCC"],
            "name": ["A", "B", "C"],
            "sector": ["Technology", "Finance", ""],
            "industry": "",
            "exchange": ["NASDAQ", "nasdaq", "MOON"],
        }
    )
    Panel(dates, np.array(["AAA", "BBB", "CCC"], dtype=object), values, assets).save(home / "market" / "tiny")

    result = CliRunner().invoke(app, ["data", "info", "--name", "tiny"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    assert "coverage" in out and "sectors" in out and "Technology" in out  # the existing summary
    assert "trading calendar" in out
    assert "XNAS -> XNYS" in out
    assert "XNYS (default: unknown exchange 'MOON')" in out
    assert "bars on days that are not sessions: 2016-11-12 NASDAQ (1 bars)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["nasdaq"], ["MOON"])}
    assert "1 (4.8%)" in lines["nasdaq"]  # BBB misses one of 21 sessions
    assert "0 (0.0%)" in lines["MOON"]
