"""`fascl schedule`: run the reindex job (and `fascl retrain`, once it exists) on cron schedules.

The schedules are settings (FASCL_REINDEX_SCHEDULE, FASCL_RETRAIN_SCHEDULE, in
FASCL_SCHEDULE_TIMEZONE). Jobs run one at a time, in one worker thread: a run never overlaps another
run, of the same job or of the other; runs that fell due meanwhile are coalesced into one. A run that
fails or raises is logged and the scheduler goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from rich.console import Console

from fascl.settings import Settings, get_settings

log = logging.getLogger("fascl.schedule")
console = Console()

EXAMPLE = "30 18 * * mon-fri"
# A run that could not start on time (another run still going) starts late within this window.
MISFIRE_GRACE = dt.timedelta(hours=6)


class ScheduleError(ValueError):
    """A schedule the scheduler cannot run: the message says which setting and what would be right."""


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    setting: str  # the environment variable it comes from
    cron: str
    trigger: CronTrigger
    run: Callable[[], None]


def time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"FASCL_SCHEDULE_TIMEZONE={name!r} is not a time zone name; "
            "e.g. UTC, Europe/London, America/New_York"
        ) from None


def cron_trigger(setting: str, text: str, zone: ZoneInfo) -> CronTrigger:
    """The trigger of a crontab line (minute hour day month weekday), or a ScheduleError naming `setting`."""
    hint = f"five crontab fields, minute hour day month weekday, e.g. {EXAMPLE!r} (18:30 every weekday)"
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"{setting}={text!r} has {len(fields)} fields, not 5: write {hint}")
    # Crontab counts weekdays from Sunday = 0, APScheduler 3 from Monday = 0: names are unambiguous.
    if re.search(r"\d", re.sub(r"/\d+", "", fields[4])):
        raise ScheduleError(
            f"{setting}={text!r}: write the weekdays by name (mon, tue, ..., sun; ranges like mon-fri), "
            f"not by number: crontab and the scheduler number them differently; e.g. {EXAMPLE!r}"
        )
    try:
        return CronTrigger.from_crontab(text, timezone=zone)
    except ValueError as exc:
        raise ScheduleError(f"{setting}={text!r} is not a valid schedule ({exc}): write {hint}") from None


def next_run_times(trigger: CronTrigger, count: int, now: dt.datetime) -> list[dt.datetime]:
    """The next `count` times `trigger` fires at or after `now` (aware datetimes in its time zone)."""
    times: list[dt.datetime] = []
    previous = None
    current = now
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        times.append(fire)
        previous = current = fire
    return times


def registered_commands() -> set[str]:
    """The top-level commands and groups of `fascl`."""
    from typer.main import get_command

    from fascl.cli.main import app

    return set(get_command(app).commands)


def build_plan(
    settings: Settings, commands: Collection[str], *, console: Console | None = None
) -> list[ScheduledJob]:
    """The jobs to schedule, their schedules checked; raises ScheduleError on any bad setting."""
    zone = time_zone(settings.schedule_timezone)
    plan = [
        ScheduledJob(
            "reindex",
            "FASCL_REINDEX_SCHEDULE",
            settings.reindex_schedule,
            cron_trigger("FASCL_REINDEX_SCHEDULE", settings.reindex_schedule, zone),
            lambda: run_reindex_once(settings, console=console),
        )
    ]
    if settings.retrain_schedule:
        trigger = cron_trigger("FASCL_RETRAIN_SCHEDULE", settings.retrain_schedule, zone)
        if "retrain" not in commands:
            raise ScheduleError(
                f"FASCL_RETRAIN_SCHEDULE={settings.retrain_schedule!r} is set, but this version of fascl "
                "has no `fascl retrain` command to run; unset FASCL_RETRAIN_SCHEDULE (retrain by hand "
                "with `fascl train`, then `fascl reindex --model ...`)"
            )
        plan.append(
            ScheduledJob(
                "retrain", "FASCL_RETRAIN_SCHEDULE", settings.retrain_schedule, trigger, run_retrain_once
            )
        )
    return plan


def run_reindex_once(settings: Settings, *, console: Console | None = None) -> str:
    """One scheduled reindex; returns its status ("raised" when it raised), never raises."""
    from fascl.jobs.reindex import run_reindex

    log.info("reindex starts")
    try:
        outcome = run_reindex(settings, console=console or Console())
    except Exception:
        log.exception("reindex raised; the scheduler goes on and runs it again at its next time")
        return "raised"
    level = logging.ERROR if outcome.status == "failed" else logging.INFO
    log.log(level, "reindex %s: %s (version %s)", outcome.status, outcome.message, outcome.index_version)
    return outcome.status


def run_retrain_once() -> str:
    """One scheduled `fascl retrain`, in its own process (its memory goes back when it ends)."""
    log.info("retrain starts")
    try:
        done = subprocess.run([sys.executable, "-m", "fascl.cli.main", "retrain"], check=False)
    except Exception:
        log.exception("retrain could not be started; the scheduler goes on")
        return "raised"
    if done.returncode != 0:
        log.error(
            "retrain ended with exit status %d (candidate refused or run failed, see its output); "
            "the scheduler goes on",
            done.returncode,
        )
        return "failed"
    log.info("retrain promoted its candidate")
    return "succeeded"


def make_scheduler(plan: list[ScheduledJob], zone: ZoneInfo) -> BlockingScheduler:
    """A scheduler (not started) holding `plan`'s jobs: one worker thread, so a job never runs beside
    another; one that falls due meanwhile waits (up to MISFIRE_GRACE) and missed runs coalesce."""
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(max_workers=1)}, timezone=zone)
    for job in plan:
        scheduler.add_job(
            job.run,
            job.trigger,
            id=job.name,
            name=job.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
        )
    return scheduler


def schedule(
    next_runs: Annotated[
        int | None,
        typer.Option("--next", min=1, help="Print the next N run times of each job and exit"),
    ] = None,
    after: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"],
            help="With --next: list the runs from this moment (in FASCL_SCHEDULE_TIMEZONE) instead of now",
        ),
    ] = None,
) -> None:
    """Run the reindex job on FASCL_REINDEX_SCHEDULE (and `fascl retrain` on FASCL_RETRAIN_SCHEDULE)
    until stopped; crontab fields in FASCL_SCHEDULE_TIMEZONE. Runs never overlap."""
    settings = get_settings()
    try:
        plan = build_plan(settings, registered_commands(), console=console)
    except ScheduleError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    zone = time_zone(settings.schedule_timezone)
    if next_runs is not None:
        now = after.replace(tzinfo=zone) if after is not None else dt.datetime.now(zone)
        for job in plan:
            print(f"{job.name} ({job.setting}={job.cron!r}, {settings.schedule_timezone}):")
            for when in next_run_times(job.trigger, next_runs, now):
                print(f"  {when.isoformat()}")
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheduler = make_scheduler(plan, zone)
    for job in plan:
        first = next_run_times(job.trigger, 1, dt.datetime.now(zone))
        log.info(
            "%s scheduled by %s=%r; next run %s",
            job.name,
            job.setting,
            job.cron,
            first[0].isoformat() if first else "never",
        )

    def stop(signum, _frame) -> None:
        log.info("signal %d: stopping the scheduler (a run in progress finishes first)", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
