"""The nightly job fed from a drop folder, with a running service: new bars in, one file once, bad
files quarantined, one run at a time, and a run killed mid-way completed by the next. Each on real
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import select

from catalogue.models import IngestedFile, ReindexRun
from catalogue.repository import active_index
from fascl.jobs.ingest import INGESTED_DIR, QUARANTINE_DIR, REASON_SUFFIX, merge_bars
from fascl.jobs.reindex import run_reindex
from fascl.jobs.stages import STOP_ENV
from fascl.settings import Settings
from index.store import IndexStore
from market.panel import FIELDS, Panel
from tests.jobs.test_reindex import deployment_behind, serving

QUIET = Console(quiet=True)


def yesterday(tmp_path, database_url):
    """A deployment whose panel and active index stop 3 trading days before the market's end, with an
    inbox; returns (settings, the full market panel as raw bars, the session factory, the first version)."""
    live = deployment_behind(tmp_path, database_url, behind=3, clean=False)
    live.settings.inbox_dir.mkdir(parents=True)
    return live.settings, live.full, live.factory, live.first.version


def day_file(full: Panel, day, path: Path, leave_out: str | None = None) -> Path:
    """The bars of one trading day as a vendor would drop them: a long CSV (without `leave_out`'s)."""
    bars = full.to_long()
    bars[(bars["date"] == day) & (bars["ticker"] != leave_out)].to_csv(path, index=False)
    return path


def active(factory) -> str:
    with factory() as session:
        return active_index(session).version


def test_merge_counts_added_corrected_and_identical_bars():
    dates = np.array(["2024-01-02", "2024-01-03"], dtype="datetime64[D]")
    values = np.full((len(FIELDS), 2, 2), 10.0, dtype=np.float32)
    panel = Panel(dates, np.array(["A", "B"], dtype=object), values)
    new_values = np.full((len(FIELDS), 2, 2), np.nan, dtype=np.float32)
    new_values[:, 0, 0] = 10.0  # A on the 3rd: as it is
    new_values[:, 0, 1] = 10.0
    new_values[FIELDS.index("close"), 0, 1] = 11.0  # B on the 3rd: a corrected close
    new_values[:4, 1, 0] = 12.0  # A on the 4th: new, without volume and amount
    new = Panel(
        np.array(["2024-01-03", "2024-01-04"], dtype="datetime64[D]"),
        np.array(["A", "B"], dtype=object),
        new_values,
    )
    merged, added, corrected, identical = merge_bars(panel, new)
    assert (added, corrected, identical) == (1, 1, 1)
    assert merged.dates.tolist()[-1] == np.datetime64("2024-01-04")
    assert (
        merged.values[FIELDS.index("close"), 1, 1] == 11.0
        and merged.values[FIELDS.index("open"), 1, 1] == 10.0
    )
    assert merged.values[FIELDS.index("close"), 2, 0] == 12.0 and np.isnan(
        merged.values[FIELDS.index("close"), 2, 1]
    )
    assert merged.values[FIELDS.index("close"), 0, 0] == 10.0  # untouched dates keep their bars


def test_the_inbox_feeds_the_served_index(tmp_path, database_url):
    settings, full, factory, first = yesterday(tmp_path, database_url)
    inbox = settings.inbox_dir
    day = full.dates[-3]
    ticker = full.tickers[0]
    with serving(settings.home, database_url) as base:
        http = httpx.Client(base_url=base, timeout=10)
        before = http.get(f"/similar/{ticker}", params={"date": str(day)}).json()
        assert before["query"]["as_of"] == str(full.dates[-4]) and before["index_version"] == first

        # The next day's bars arrive, one listed asset's missing: indexed, served at that date, the gap reported.
        day_file(full, day, inbox / f"bars-{day}.csv", leave_out=full.tickers[-2])
        out = run_reindex(settings, console=QUIET)
        assert out.status == "succeeded" and out.dates_added == 1, out.message
        summary = out.ingest.summary()
        bars_that_day = int((~np.isnan(full.field("close")[full.date_position(day)])).sum())
        assert (summary["taken"], summary["bars_added"], summary["bars_corrected"]) == (
            1,
            bars_that_day - 1,
            0,
        )
        assert summary["missing_sessions"] == 1 and summary["missing_examples"] == [
            [full.tickers[-2], str(day)]
        ]
        assert not list(inbox.glob("*.csv")) and (inbox / INGESTED_DIR / f"bars-{day}.csv").is_file()
        assert http.post("/admin/reload").status_code == 200
        now = http.get(f"/similar/{ticker}", params={"date": str(day)}).json()
        assert now["query"]["as_of"] == str(day) and now["index_version"] == out.index_version

        # The same file again, under another name: nothing changes.
        (inbox / "resent.csv").write_bytes((inbox / INGESTED_DIR / f"bars-{day}.csv").read_bytes())
        again = run_reindex(settings, console=QUIET)
        assert again.status == "up_to_date" and again.index_version == out.index_version, again.message
        assert again.ingest.count("duplicate") == 1 and not again.ingest.changed
        assert active(factory) == out.index_version

        # A malformed file is quarantined with its reason; the served version stays.
        (inbox / "broken.csv").write_text("date,ticker,open\n2011-06-01,AAA,1\n")
        bad = run_reindex(settings, console=QUIET)
        assert bad.status == "up_to_date" and bad.ingest.count("quarantined") == 1, bad.message
        reason = (inbox / QUARANTINE_DIR / ("broken.csv" + REASON_SUFFIX)).read_text()
        assert "close" in reason
        assert active(factory) == out.index_version
        assert (
            http.get(f"/similar/{ticker}", params={"date": str(day)}).json()["index_version"]
            == out.index_version
        )

        # A corrected bar for a past date, beside the last day's bars: both taken, the past date re-embedded.
        last = full.dates[-2]
        day_file(full, last, inbox / f"bars-{last}.csv")
        bars = full.to_long()
        fix = bars[(bars["date"] == full.dates[-10]) & (bars["ticker"] == ticker)].copy()
        fix["close"] = fix["close"] * 1.01
        fix.to_csv(inbox / "correction.csv", index=False)
        both = run_reindex(settings, console=QUIET)
        assert both.status == "succeeded" and both.dates_added == 1, both.message
        assert both.ingest.summary()["bars_corrected"] == 1
        assert Panel.load(settings.panel_path()).field("close")[-9, 0] == pytest.approx(fix["close"].iloc[0])

    with factory() as session:
        ledger = {row.name: row.status for row in session.scalars(select(IngestedFile))}
        runs = [r.status for r in session.scalars(select(ReindexRun).order_by(ReindexRun.id))]
    assert ledger == {
        f"bars-{day}.csv": "ingested",
        "broken.csv": "quarantined",
        f"bars-{last}.csv": "ingested",
        "correction.csv": "ingested",
    }
    assert runs == ["succeeded", "up_to_date", "up_to_date", "succeeded"]


def fascl_env(settings: Settings) -> dict:
    env = {**os.environ, "FASCL_HOME": str(settings.home), "FASCL_DATABASE_URL": settings.database_url}
    env.pop(STOP_ENV, None)
    return env


def stopped_at(stage: str, settings: Settings) -> subprocess.Popen:
    """`fascl reindex` in a real process, stopped by itself (SIGSTOP) on reaching `stage`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fascl.cli.main", "reindex"],
        env={**fascl_env(settings), STOP_ENV: stage},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = None
        if state == "T":
            return process
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"fascl reindex did not reach {stage}"
        time.sleep(0.02)


@pytest.mark.parametrize("stage", ["ingest", "embed"])
def test_one_run_at_a_time_and_a_killed_run_is_completed_by_the_next(tmp_path, database_url, stage):
    settings, full, factory, first = yesterday(tmp_path, database_url)
    day = full.dates[-3]
    day_file(full, day, settings.inbox_dir / f"bars-{day}.csv")
    holder = stopped_at(stage, settings)  # holds the lock, stopped mid-run
    try:
        refused = run_reindex(settings, console=QUIET)
        assert refused.status == "refused", refused.message
        assert (
            "another reindex or retrain run is in progress" in refused.message
            and f"pid {holder.pid}" in refused.message
        )
        assert active(factory) == first
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)

    rerun = run_reindex(settings, console=QUIET)  # the lock died with its process
    assert rerun.status == "succeeded" and rerun.dates_added == 1, rerun.message
    version = IndexStore(settings.indexes_dir).open_version(rerun.index_version, verify="all")
    assert version.manifest["dates"][-1] == str(day)
    assert active(factory) == rerun.index_version
    with factory() as session:
        assert [r.name for r in session.scalars(select(IngestedFile))] == [f"bars-{day}.csv"]
        statuses = [r.status for r in session.scalars(select(ReindexRun).order_by(ReindexRun.id))]
    assert statuses == ["abandoned", "succeeded"]  # the killed run, marked by the next
    assert not list(settings.inbox_dir.glob("*.csv"))


def test_a_run_after_which_the_bars_are_too_old_is_recorded_stale(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fascl.db'}"
    settings, full, factory, first = yesterday(tmp_path, database_url)
    newest = Panel.load(settings.panel_path()).dates[-1]
    watched = settings.model_copy(update={"stale_after_sessions": 3})
    # The next morning the bars are one session behind: fine.
    fresh = run_reindex(
        watched, now=dt.datetime.combine((newest + np.timedelta64(1, "D")).astype(object), dt.time(9), dt.UTC)
    )
    assert fresh.status == "up_to_date", fresh.message
    # Three weeks without a delivery: the run is an error, and says so.
    late = run_reindex(
        watched,
        now=dt.datetime.combine((newest + np.timedelta64(21, "D")).astype(object), dt.time(9), dt.UTC),
    )
    assert (
        late.status == "stale"
        and "the inbox is stale" in late.message
        and "FASCL_STALE_AFTER_SESSIONS=3" in late.message
    )
    with factory() as session:
        assert [r.status for r in session.scalars(select(ReindexRun).order_by(ReindexRun.id))] == [
            "up_to_date",
            "stale",
        ]
        assert active_index(session).version == first
