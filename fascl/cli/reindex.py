"""`fascl reindex`: the nightly job that keeps the served index current."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fascl.settings import get_settings

console = Console()


def reindex(
    model: Annotated[Path | None, typer.Option(help="Checkpoint (default: the active index's model)")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Panel directory (default: the active index's panel)")
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(exists=True, help="Re-import these bars into the panel first (all or nothing)"),
    ] = None,
    assets: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="CSV of ticker,name,sector,industry,exchange for --source's new tickers (or to update "
            "some); the panel's current metadata is kept for the others",
        ),
    ] = None,
    keep_days: Annotated[
        int | None, typer.Option(min=1, help="Index only the last N trading days (default: the active range)")
    ] = None,
    inbox: Annotated[
        bool,
        typer.Option(
            help="Merge the bar files dropped in FASCL_INBOX (default HOME/inbox) into the panel first: new "
            "bars added, corrected past bars applied, files seen before ignored, bad files quarantined"
        ),
    ] = True,
    every_day_at: Annotated[
        str | None, typer.Option(help="Run forever, once a day at this UTC time (HH:MM)")
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="List the recent runs (marking abandoned ones) and exit")
    ] = False,
) -> None:
    """Index the dates the active version lacks, publish atomically and make the new version active.

    The service picks the new version up by polling SQL (FASCL_INDEX_POLL_SECONDS)."""
    from fascl.jobs.reindex import next_run, run_reindex

    settings = get_settings()
    if assets is not None and source is None:
        console.print("[red]--assets gives metadata for the tickers of --source bars; pass --source too[/]")
        raise typer.Exit(2)
    if status:
        _print_runs(settings)
        return
    while True:
        if every_day_at is not None:
            try:
                when = next_run(every_day_at)
            except ValueError as exc:
                console.print(f"[red]{exc}[/]")
                raise typer.Exit(2) from None
            console.print(f"next reindex at {when:%Y-%m-%d %H:%M} UTC")
            time.sleep(max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()))
        outcome = run_reindex(
            settings,
            model=model,
            data=data,
            source=source,
            assets=assets,
            keep_days=keep_days,
            inbox=inbox,
            console=console,
        )
        colour = {"succeeded": "green", "up_to_date": "cyan"}.get(outcome.status, "red")
        console.print(
            f"[{colour}]reindex {outcome.status}[/]: {outcome.message} (version {outcome.index_version})"
        )
        if outcome.stages:
            console.print("seconds by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in outcome.stages.items()))
        if every_day_at is None:
            if outcome.status in ("failed", "refused", "stale"):
                raise typer.Exit(1)
            return


def _print_runs(settings, limit: int = 20) -> None:
    from rich.table import Table
    from sqlalchemy.exc import SQLAlchemyError

    from fascl.jobs.reindex import recent_runs

    try:
        runs = recent_runs(settings, limit)
    except SQLAlchemyError as exc:
        console.print(
            f"[red]cannot read reindex_runs: the database is unreachable or not migrated "
            f"(`fascl db upgrade`) ({str(exc).splitlines()[0]})[/]"
        )
        raise typer.Exit(1) from None
    if not runs:
        console.print("no reindex runs recorded")
        return
    table = Table(title=f"the last {limit} reindex runs, newest first")
    for column in ("id", "started", "finished", "status", "version", "dates added", "process", "message"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else "-",
            run.status,
            run.index_version or "-",
            str(run.dates_added),
            f"{run.pid} on {run.host}" if run.pid else "-",
            run.message,
        )
    console.print(table)
