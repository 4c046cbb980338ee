"""market.calendar: sessions, missing sessions, the calendar report and stale inboxes, on hand-made
panels (US holidays listed by hand here, not taken from the library under test) and on us_nasdaq."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

from market.calendar import (
    DEFAULT_CALENDAR,
    calendar_for,
    missing_sessions,
    panel_calendar_report,
    resolve_exchange,
    sessions,
    stale_sessions,
)
from market.importers import import_dataset
from market.panel import FIELDS, Panel

# NYSE/Nasdaq full-day holidays from 2016-06-01 to 2017-01-31.
US_HOLIDAYS = [
    "2016-07-04",  # Independence Day (a Monday)
    "2016-09-05",  # Labor Day
    "2016-11-24",  # Thanksgiving
    "2016-12-26",  # Christmas Day (a Sunday) observed on Monday
    "2017-01-02",  # New Year's Day (a Sunday) observed on Monday
    "2017-01-16",  # Martin Luther King Jr. Day
]
START, END = "2016-06-01", "2017-01-31"


def us_sessions(start=START, end=END) -> np.ndarray:
    """Weekdays minus the holidays above, as datetime64[D]."""
    days = pd.bdate_range(start, end).to_numpy().astype("datetime64[D]")
    return np.setdiff1d(days, np.array(US_HOLIDAYS, dtype="datetime64[D]"))


def make_panel(bars: dict[str, list], exchanges: dict[str, str]) -> Panel:
    """A panel whose dates are the union of the given bar dates; each ticker has a close on its own."""
    days = {t: np.asarray(d, dtype="datetime64[D]") for t, d in bars.items()}
    dates = np.unique(np.concatenate(list(days.values())))
    tickers = list(bars)
    values = np.full((len(FIELDS), len(dates), len(tickers)), np.nan, dtype=np.float32)
    for j, ticker in enumerate(tickers):
        rows = np.searchsorted(dates, days[ticker])
        values[:, rows, j] = 10.0 + j
    assets = pd.DataFrame(
        {
            "ticker": tickers,
            "name": tickers,
            "sector": "",
            "industry": "",
            "exchange": [exchanges[t] for t in tickers],
        }
    )
    return Panel(dates, np.array(tickers, dtype=object), values, assets)


def dates_of(frame: pd.DataFrame, ticker: str) -> list[str]:
    rows = frame[frame["ticker"] == ticker]
    return [str(d.date()) for d in rows["date"]]


def test_sessions_skip_weekends_and_us_holidays():
    got = sessions("NASDAQ", START, END)
    assert got.dtype == np.dtype("datetime64[D]")
    np.testing.assert_array_equal(got, us_sessions())
    # Friday 2016-11-25 (half day after Thanksgiving) is a session; the 24th is not.
    week = sessions("nyse", "2016-11-21", "2016-11-28").astype(str).tolist()
    assert week == ["2016-11-21", "2016-11-22", "2016-11-23", "2016-11-25", "2016-11-28"]


def test_weekends_and_holidays_are_not_missing():
    panel = make_panel({"AAA": us_sessions(), "BBB": us_sessions()}, {"AAA": "NASDAQ", "BBB": "NYSE"})
    assert missing_sessions(panel).empty
    summary = panel_calendar_report(panel).summary.set_index("exchange")
    assert summary.loc["NASDAQ", "missing"] == 0
    assert summary.loc["NASDAQ", "non_session_dates"] == 0
    assert summary.loc["NASDAQ", "sessions"] == len(us_sessions())
    assert summary.loc["NYSE", "empty_sessions"] == 0


def test_a_removed_weekday_bar_is_reported_with_its_date():
    full = us_sessions()
    gap = np.datetime64("2016-10-12")  # a Wednesday
    panel = make_panel({"AAA": full[full != gap], "BBB": full}, {"AAA": "NASDAQ", "BBB": "NASDAQ"})
    missing = missing_sessions(panel)
    assert list(missing.columns[:4]) == ["ticker", "exchange", "calendar", "date"]
    assert dates_of(missing, "AAA") == ["2016-10-12"]
    assert dates_of(missing, "BBB") == []
    assert missing.iloc[0]["exchange"] == "NASDAQ" and missing.iloc[0]["calendar"] == "XNYS"


def test_a_session_the_panel_lacks_entirely_is_missing_for_every_listed_asset():
    full = us_sessions()
    holes = np.array(["2016-08-03", "2016-12-27"], dtype="datetime64[D]")
    kept = full[~np.isin(full, holes)]
    late = kept[kept >= np.datetime64("2016-09-01")]  # listed after the first hole
    panel = make_panel({"AAA": kept, "CCC": late}, {"AAA": "NASDAQ", "CCC": "NASDAQ"})
    missing = missing_sessions(panel)
    assert dates_of(missing, "AAA") == ["2016-08-03", "2016-12-27"]
    assert dates_of(missing, "CCC") == ["2016-12-27"]
    summary = panel_calendar_report(panel).summary.iloc[0]
    assert summary["empty_sessions"] == 2
    assert summary["missing"] == 3 and summary["assets_missing"] == 2


def test_dates_before_the_first_bar_and_after_the_last_are_not_missing():
    full = us_sessions()
    listed = full[(full >= np.datetime64("2016-09-15")) & (full <= np.datetime64("2016-11-30"))]
    panel = make_panel({"AAA": full, "IPO": listed}, {"AAA": "NASDAQ", "IPO": "NASDAQ"})
    assert missing_sessions(panel).empty
    summary = panel_calendar_report(panel).summary.iloc[0]
    assert summary["expected"] == len(full) + len(listed)


def test_start_and_end_clip_each_assets_life():
    full = us_sessions()
    gaps = np.array(["2016-06-15", "2016-10-12", "2017-01-20"], dtype="datetime64[D]")
    panel = make_panel({"AAA": full[~np.isin(full, gaps)], "BBB": full}, {"AAA": "NASDAQ", "BBB": "NASDAQ"})
    assert dates_of(missing_sessions(panel), "AAA") == ["2016-06-15", "2016-10-12", "2017-01-20"]
    clipped = missing_sessions(panel, start="2016-07-01", end="2016-12-31")
    assert dates_of(clipped, "AAA") == ["2016-10-12"]


def test_a_bar_on_a_holiday_or_a_weekend_is_reported_by_the_report():
    full = us_sessions()
    wrong = np.array(["2016-11-24", "2016-12-25"], dtype="datetime64[D]")  # Thanksgiving, a Sunday
    panel = make_panel(
        {"AAA": np.concatenate([full, wrong[:1]]), "BBB": np.concatenate([full, wrong])},
        {"AAA": "NASDAQ", "BBB": "NASDAQ"},
    )
    report = panel_calendar_report(panel)
    row = report.summary.iloc[0]
    assert row["non_session_dates"] == 2
    assert row["non_session_bars"] == 3
    assert [str(d.date()) for d in report.non_sessions["date"]] == ["2016-11-24", "2016-12-25"]
    assert report.non_sessions["bars"].tolist() == [2, 1]
    assert missing_sessions(panel).empty  # an extra bar is not a missing one


def test_each_exchange_is_checked_against_its_own_calendar():
    """A London asset is not missing on a US holiday, a US asset not on a UK bank holiday."""
    us = us_sessions()
    uk = sessions("XLON", START, END)
    assert np.datetime64("2016-08-29") in us and np.datetime64("2016-08-29") not in uk  # UK bank holiday
    assert np.datetime64("2016-07-04") in uk and np.datetime64("2016-07-04") not in us
    panel = make_panel({"US": us, "UK": uk}, {"US": "Nasdaq", "UK": "XLON"})
    assert missing_sessions(panel).empty
    summary = panel_calendar_report(panel).summary.set_index("exchange")
    assert summary.loc["XLON", "calendar"] == "XLON"
    assert summary.loc["Nasdaq", "calendar"] == "XNAS -> XNYS"
    assert (summary["non_session_dates"] == 0).all()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("NASDAQ", "XNAS"),
        ("nasdaq", "XNAS"),
        ("NasdaqGS", "XNAS"),
        ("NYSE", "XNYS"),
        ("xnys", "XNYS"),
        ("AMEX", "XASE"),
        ("NYSE American", "XASE"),
        ("NYSE MKT", "XASE"),
        ("nyse-mkt", "XASE"),
        ("ARCA", "ARCX"),
        ("NYSE Arca", "ARCX"),
        ("BATS", "BATS"),
        ("XLON", "XLON"),
    ],
)
def test_exchange_names_are_matched_case_insensitively(name, code):
    choice = resolve_exchange(name)
    assert (choice.code, choice.fallback) == (code, False)
    assert calendar_for(name).name == choice.calendar


@pytest.mark.parametrize("name", ["", None, "MOON EXCHANGE"])
def test_an_unknown_or_empty_exchange_falls_back_to_xnys(name, caplog):
    choice = resolve_exchange(name)
    assert choice.fallback and choice.code == DEFAULT_CALENDAR == "XNYS"
    assert "default" in choice.label
    assert calendar_for(name).name == "XNYS"
    panel = make_panel({"AAA": us_sessions()[1:-1]}, {"AAA": name or ""})
    assert missing_sessions(panel).empty
    row = panel_calendar_report(panel).summary.iloc[0]
    assert bool(row["fallback"]) and row["calendar"].startswith("XNYS (default")


def test_a_calendar_that_fails_to_build_falls_back_to_xnys(monkeypatch):
    import market.calendar as mc

    real = mc.xc.get_calendar

    def get_calendar(name, *args, **kwargs):
        if name == "XWBO":
            raise NotImplementedError("implemented by subclasses")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(mc.xc, "get_calendar", get_calendar)
    monkeypatch.setattr(mc, "_cache", {})
    mc.resolve_exchange.cache_clear()
    try:
        choice = resolve_exchange("xwbo")
    finally:
        mc.resolve_exchange.cache_clear()
    assert choice.fallback and choice.calendar == "XNYS"
    assert "XWBO calendar failed to build" in choice.label


def test_stale_sessions_across_a_long_weekend():
    # Friday 2024-08-30, then the Labor Day weekend: the next session is Tuesday 2024-09-03.
    last = "2024-08-30"
    assert stale_sessions(last, dt.date(2024, 8, 31), "NASDAQ") == 0
    assert stale_sessions(last, dt.date(2024, 9, 2), "NASDAQ") == 0
    assert stale_sessions(last, dt.date(2024, 9, 3), "NASDAQ") == 0  # a date: its own session not yet
    assert stale_sessions(last, "2024-09-04", "NASDAQ") == 1
    assert stale_sessions(last, np.datetime64("2024-09-06"), "NASDAQ") == 3
    # A point in time: the session counts once the 16:00 New York close (20:00 UTC in summer) is past.
    assert stale_sessions(last, pd.Timestamp("2024-09-03 15:59", tz="America/New_York"), "NASDAQ") == 0
    assert stale_sessions(last, pd.Timestamp("2024-09-03 16:00", tz="America/New_York"), "NASDAQ") == 1
    assert stale_sessions(last, dt.datetime(2024, 9, 3, 19, 59), "NASDAQ") == 0  # naive is UTC
    assert stale_sessions(last, "2024-09-03T20:00", "NASDAQ") == 1
    assert stale_sessions("2024-09-05", dt.date(2024, 9, 3), "NASDAQ") == 0  # data ahead of today


def test_stale_sessions_know_early_closes_and_holidays():
    # Thanksgiving 2016: Thursday closed, Friday 2016-11-25 closes at 13:00 New York (18:00 UTC).
    last = "2016-11-23"
    assert stale_sessions(last, pd.Timestamp("2016-11-25 12:59", tz="America/New_York"), "NYSE") == 0
    assert stale_sessions(last, pd.Timestamp("2016-11-25 13:00", tz="America/New_York"), "NYSE") == 1
    # Christmas 2016 fell on a Sunday: Monday the 26th is a holiday, so a week's calendar has 4 sessions.
    assert stale_sessions("2016-12-23", dt.date(2016, 12, 31), "NYSE") == 4


def test_us_nasdaq_missing_sessions(us_nasdaq_dir, tmp_path):
    """On the real bars (as imported, before corrections): few missing sessions, none on a weekend or
    a US holiday, no bar off the calendar, and the whole scan in well under a few seconds."""
    dest = tmp_path / "market" / "us_nasdaq"
    import_dataset(us_nasdaq_dir / "ohlcv.parquet", dest, assets=us_nasdaq_dir / "assets.csv", clean=False)
    panel = Panel.load(dest, clean=False)

    started = time.perf_counter()
    missing = missing_sessions(panel)
    elapsed = time.perf_counter() - started
    report = panel_calendar_report(panel)
    row = report.summary.set_index("exchange").loc["NASDAQ"]
    print(
        f"us_nasdaq: {panel.n_assets} assets x {panel.n_dates} dates, missing_sessions {elapsed:.2f} s, "
        f"{row['missing']:,} missing of {row['expected']:,} asset-sessions ({row['missing_share']:.2%}), "
        f"{row['assets_missing']} assets affected, {row['non_session_dates']} non-session dates, "
        f"{row['empty_sessions']} sessions without any bar"
    )
    assert elapsed < 10
    assert row["calendar"] == "XNAS -> XNYS" and not row["fallback"]
    days = missing["date"].to_numpy().astype("datetime64[D]")
    assert np.is_busday(days).all()  # no weekend
    assert not np.isin(days, np.array(US_HOLIDAYS + ["2012-10-29", "2012-10-30"], "datetime64[D]")).any()
    assert np.isin(days, sessions("NASDAQ", panel.dates[0], panel.dates[-1])).all()
    assert row["non_session_dates"] == 0
    assert 0 < row["missing_share"] < 0.1
    assert row["expected"] >= len(missing) == row["missing"]
