"""`fascl schedule`: cron schedules from the settings, checked before anything runs."""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from fascl.cli import schedule
from fascl.cli.main import app
from fascl.settings import Settings, get_settings

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def run_schedule(monkeypatch, tmp_path):
    """`fascl schedule ARGS` with the given FASCL_ settings (and none from a .env)."""
    monkeypatch.chdir(tmp_path)
    for name in ("REINDEX_SCHEDULE", "RETRAIN_SCHEDULE", "SCHEDULE_TIMEZONE"):
        monkeypatch.delenv(f"FASCL_{name}", raising=False)

    def run(*args: str, **env: str):
        for name, value in env.items():
            monkeypatch.setenv(f"FASCL_{name.upper()}", value)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, ["schedule", *args])
        finally:
            get_settings.cache_clear()

    return run


def test_next_runs_of_a_weekday_schedule_in_its_time_zone():
    trigger = schedule.cron_trigger("FASCL_REINDEX_SCHEDULE", "30 18 * * mon-fri", NEW_YORK)
    # Friday 2026-03-06, 19:00 in New York: past Friday's run; the clocks go forward on Sunday 03-08.
    now = dt.datetime(2026, 3, 6, 19, 0, tzinfo=NEW_YORK)
    runs = schedule.next_run_times(trigger, 5, now)
    assert [r.isoformat() for r in runs] == [
        "2026-03-09T18:30:00-04:00",
        "2026-03-10T18:30:00-04:00",
        "2026-03-11T18:30:00-04:00",
        "2026-03-12T18:30:00-04:00",
        "2026-03-13T18:30:00-04:00",
    ]
    # A "now" exactly at a run time lists that run first.
    at_run = dt.datetime(2026, 3, 6, 18, 30, tzinfo=NEW_YORK)
    assert schedule.next_run_times(trigger, 2, at_run)[0] == at_run


def test_the_command_lists_the_next_runs_and_exits(run_schedule):
    result = run_schedule(
        "--next",
        "3",
        "--after",
        "2026-12-04T18:31",
        reindex_schedule="30 18 * * mon-fri",
        schedule_timezone="Europe/London",
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "reindex (FASCL_REINDEX_SCHEDULE='30 18 * * mon-fri', Europe/London):",
        "  2026-12-07T18:30:00+00:00",
        "  2026-12-08T18:30:00+00:00",
        "  2026-12-09T18:30:00+00:00",
    ]


def test_the_default_schedule_is_weekday_evenings_in_utc(run_schedule):
    result = run_schedule("--next", "5", "--after", "2026-12-05")  # a Saturday
    assert result.exit_code == 0, result.output
    days = [line.strip()[:10] for line in result.output.splitlines()[1:]]
    assert days == ["2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10", "2026-12-11"]
    assert all(line.endswith("T18:30:00+00:00") for line in result.output.splitlines()[1:])


@pytest.mark.parametrize(
    "cron, says",
    [
        ("30 18 * *", "has 4 fields, not 5"),
        ("61 18 * * mon-fri", "is not a valid schedule"),
        ("30 18 * * fri-someday", "is not a valid schedule"),
        ("30 18 * * 1-5", "weekdays by name"),
        ("every evening", "has 2 fields, not 5"),
    ],
)
def test_a_bad_cron_string_is_refused_naming_the_setting_and_an_example(run_schedule, cron, says):
    result = run_schedule("--next", "1", reindex_schedule=cron)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"FASCL_REINDEX_SCHEDULE={cron!r}" in message and says in message
    assert "'30 18 * * mon-fri'" in message  # the example


def test_an_unknown_time_zone_is_refused(run_schedule):
    result = run_schedule("--next", "1", schedule_timezone="Mars/Olympus_Mons")
    assert result.exit_code == 2
    assert "FASCL_SCHEDULE_TIMEZONE='Mars/Olympus_Mons' is not a time zone" in " ".join(result.output.split())


def test_a_retrain_schedule_is_refused_while_no_retrain_command_exists(run_schedule, monkeypatch):
    without_retrain = schedule.registered_commands() - {"retrain"}
    monkeypatch.setattr(schedule, "registered_commands", lambda: without_retrain)
    result = run_schedule("--next", "1", retrain_schedule="0 3 * * sat")
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "FASCL_RETRAIN_SCHEDULE='0 3 * * sat' is set" in message
    assert "no `fascl retrain` command" in message
    # unset, the reindex job alone is scheduled
    assert run_schedule("--next", "1", retrain_schedule="").exit_code == 0


def test_a_retrain_schedule_runs_once_the_command_exists():
    settings = Settings(_env_file=None, retrain_schedule="0 3 * * sat")
    plan = schedule.build_plan(settings, {"reindex", "retrain"})
    assert [(job.name, job.setting) for job in plan] == [
        ("reindex", "FASCL_REINDEX_SCHEDULE"),
        ("retrain", "FASCL_RETRAIN_SCHEDULE"),
    ]
    with pytest.raises(schedule.ScheduleError, match="FASCL_RETRAIN_SCHEDULE='0 3 \\* \\* mon-fry'"):
        schedule.build_plan(Settings(_env_file=None, retrain_schedule="0 3 * * mon-fry"), {"retrain"})


def test_runs_never_overlap_and_missed_runs_coalesce():
    settings = Settings(_env_file=None, retrain_schedule="0 3 * * sat")
    plan = schedule.build_plan(settings, {"retrain"})
    scheduler = schedule.make_scheduler(plan, ZoneInfo("UTC"))
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"reindex", "retrain"}
    for job in jobs.values():
        assert job.max_instances == 1 and job.coalesce is True
    assert scheduler._lookup_executor("default")._pool._max_workers == 1  # one run at a time, of any job


def test_a_run_that_raises_is_logged_and_the_scheduler_goes_on(monkeypatch, caplog):
    import fascl.jobs.reindex as job
    from fascl.jobs.reindex import ReindexOutcome

    def explode(settings, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(job, "run_reindex", explode)
    with caplog.at_level(logging.INFO, logger="fascl.schedule"):
        assert schedule.run_reindex_once(Settings(_env_file=None)) == "raised"
    assert "reindex raised" in caplog.text and "disk full" in caplog.text

    def fail(settings, **kwargs):
        return ReindexOutcome("failed", None, 0, "no active index to take the model from")

    monkeypatch.setattr(job, "run_reindex", fail)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fascl.schedule"):
        assert schedule.run_reindex_once(Settings(_env_file=None)) == "failed"
    assert any(r.levelno == logging.ERROR and "reindex failed" in r.getMessage() for r in caplog.records)
