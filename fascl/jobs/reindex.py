"""The nightly reindex job: bring new bars in, index the new dates, publish, flip the active version.

A job: it uses the panel importer, the index builder (through fascl/jobs/publish.py, with the
reuse rule "active") and the catalogue (through fascl/jobs/activation.py). Each run is recorded in `reindex_runs`;
a failed run leaves the served version untouched (publishing is atomic and the active flag flips
only after a verified publish).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from catalogue.models import ReindexRun, utcnow
from catalogue.repository import active_index
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.jobs.activation import activate_version, prune
from fascl.jobs.ingest import IngestResult, ingest_inbox
from fascl.jobs.lock import RunLocked, run_lock
from fascl.jobs.publish import publish_version, reuse_source
from fascl.jobs.stages import reached
from fascl.settings import Settings
from index.store import IndexStore
from market.panel import Panel, restore_interrupted_save

# Panel files besides the bars that a re-import keeps.
KEEP_FILES = ("truth.npz",)
# A run left `running` that cannot be checked by its pid (another host, or recorded before pids were)
# is taken as abandoned after this long: far longer than any reindex takes.
STALE_AFTER = dt.timedelta(days=2)


@dataclass
class ReindexOutcome:
    status: str  # "succeeded" | "up_to_date" | "failed" | "refused" (another run holds the lock)
    index_version: str | None
    dates_added: int
    message: str
    ingest: IngestResult | None = None
    # seconds by stage: ingest (re-import, inbox, panel load), the build's (prepare, embed, index,
    # commit, publish: index.build.BuildResult.stages), activate (SQL flip and prune)
    stages: dict[str, float] = field(default_factory=dict)


def _window_start(panel: Panel, first_kept: dt.date | None, keep_days: int | None) -> str:
    """First date of the new version: the old version's first date, or the last `keep_days` trading days."""
    if keep_days:
        return str(panel.dates[max(0, panel.n_dates - keep_days)])
    return str(first_kept) if first_kept else str(panel.dates[min(63, panel.n_dates - 1)])


def run_reindex(
    settings: Settings,
    *,
    model: Path | None = None,
    data: Path | None = None,
    source: Path | None = None,
    assets: Path | None = None,
    keep_days: int | None = None,
    inbox: bool = True,
    now: dt.datetime | None = None,
    console: Console | None = None,
) -> ReindexOutcome:
    """One reindex: optional re-import of `source` (with `assets` metadata for its new tickers) into
    the panel, the inbox's bar files merged in (fascl/jobs/ingest.py; `inbox=False` leaves them),
    then a new index version if there are new or corrected dates. One run at a time: a run that
    finds another holding the lock changes nothing and says so (status "refused")."""
    console = console or Console()
    try:
        with run_lock(settings.sqlalchemy_url, "reindex"):
            return _recorded_run(settings, model, data, source, assets, keep_days, inbox, now, console)
    except RunLocked as exc:
        return ReindexOutcome("refused", None, 0, f"{exc}; {_lock_holder(settings)}")
    except SQLAlchemyError as exc:  # the lock itself needs the database (PostgreSQL)
        return _unreachable(exc)


def _unreachable(exc: Exception) -> ReindexOutcome:
    first_line = str(exc).splitlines()[0]
    return ReindexOutcome(
        "failed",
        None,
        0,
        f"the database is unreachable or not migrated (`fascl db upgrade`) ({first_line}); nothing was changed",
    )


def _lock_holder(settings: Settings) -> str:
    """What the catalogue says about the run holding the lock."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_factory(engine)() as session:
            run = session.scalar(
                select(ReindexRun)
                .where(ReindexRun.status == "running")
                .order_by(ReindexRun.id.desc())
                .limit(1)
            )
    except SQLAlchemyError:
        run = None
    finally:
        engine.dispose()
    if run is None:
        return "the run holding it has not recorded itself yet"
    return f"it is run {run.id}, pid {run.pid} on {run.host}, started {run.started_at:%Y-%m-%d %H:%M:%S} UTC"


def _recorded_run(settings, model, data, source, assets, keep_days, inbox, now, console) -> ReindexOutcome:
    engine = make_engine(settings.sqlalchemy_url)
    factory = session_factory(engine)
    try:
        with session_scope(factory) as session:
            for stale in mark_abandoned_runs(session):
                console.print(f"reindex run {stale.id} (pid {stale.pid} on {stale.host}) was abandoned")
            run = ReindexRun(status="running", pid=os.getpid(), host=socket.gethostname())
            session.add(run)
            session.flush()
            run_id = run.id
    except SQLAlchemyError as exc:  # nowhere to record the run: report it, change nothing
        engine.dispose()
        return _unreachable(exc)
    try:
        now = now or dt.datetime.now(dt.UTC)
        outcome = _reindex(
            settings, factory, run_id, model, data, source, assets, keep_days, inbox, now, console
        )
    except Exception as exc:
        outcome = ReindexOutcome("failed", None, 0, f"{exc.__class__.__name__}: {exc}")
    with session_scope(factory) as session:
        run = session.get(ReindexRun, run_id)
        run.status, run.index_version = outcome.status, outcome.index_version
        run.dates_added, run.message, run.finished_at = outcome.dates_added, outcome.message, utcnow()
    engine.dispose()
    return outcome


def _staleness(settings: Settings, panel: Panel, now: dt.datetime) -> str | None:
    """Why the run is an error when the panel's newest bar is more than FASCL_STALE_AFTER_SESSIONS
    sessions old (the inbox has stopped delivering); None when it is not, or nobody asked."""
    limit = settings.stale_after_sessions
    if limit is None:
        return None
    from market.calendar import panel_staleness

    behind = panel_staleness(panel, now)
    if behind <= limit:
        return None
    return (
        f"the inbox is stale: the newest bar ({panel.dates[-1]}) is {behind} sessions old, more than "
        f"FASCL_STALE_AFTER_SESSIONS={limit}; check the data delivery into {settings.inbox_dir}"
    )


def _finished(outcome: ReindexOutcome, stale: str | None) -> ReindexOutcome:
    """A finished run, status "stale" if its bars are too old: its work, if any, stands."""
    if stale is not None:
        outcome.status, outcome.message = "stale", f"{stale}; {outcome.message}"
    return outcome


def recent_runs(settings: Settings, limit: int = 20) -> list[ReindexRun]:
    """The newest `limit` runs, newest first, after marking the abandoned ones."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(session_factory(engine)) as session:
            mark_abandoned_runs(session)
            return list(session.scalars(select(ReindexRun).order_by(ReindexRun.id.desc()).limit(limit)))
    finally:
        engine.dispose()


def process_exists(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, dead but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def mark_abandoned_runs(session) -> list[ReindexRun]:
    """Mark `abandoned` the runs left `running` by a process that no longer exists: one on this host
    whose pid is gone, or one of another host (or from before pids were recorded) started more than
    STALE_AFTER ago. Returns them."""
    host = socket.gethostname()
    now = utcnow()
    stale = []
    for run in session.scalars(select(ReindexRun).where(ReindexRun.status == "running")):
        started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=dt.UTC)
        gone = (
            not process_exists(run.pid)
            if run.host == host and run.pid is not None
            else now - started > STALE_AFTER
        )
        if gone:
            run.status, run.finished_at = "abandoned", now
            run.message = (run.message + "; " if run.message else "") + (
                f"abandoned: its process (pid {run.pid} on {run.host}) ended before the run finished"
            )
            stale.append(run)
    return stale


def _reindex(
    settings, factory, run_id, model, data, source, assets, keep_days, inbox, now, console
) -> ReindexOutcome:
    store = IndexStore(settings.indexes_dir, keep=settings.index_keep)
    with factory() as session:
        current = active_index(session)
        current_path = Path(current.path) if current else None
    active = current_path.name if current_path and current_path.exists() else None
    old = reuse_source(store, "active", active=active)

    clock = time.perf_counter()
    panel_path = data or (Path(old.manifest["data"]["source"]) if old else settings.panel_path())
    restore_interrupted_save(panel_path)  # a re-import killed mid-save: its metadata is read below
    reached("ingest", console)
    if source is not None:
        from market.importers import import_dataset

        # All or nothing: a bad file raises and the panel stays. The bars replace the panel's; its
        # asset metadata and its other files (a synthetic market's truth.npz) are kept.
        report = import_dataset(
            source, panel_path, assets=merged_metadata(panel_path, assets), keep_files=KEEP_FILES
        )
        console.print(f"imported {report.rows_imported:,} rows from {source}")
    ingest = None
    if inbox:
        ingest = ingest_inbox(
            factory, settings.inbox_dir, panel_path, run_id=run_id, keep_files=KEEP_FILES, console=console
        )
        with session_scope(factory) as session:
            session.get(ReindexRun, run_id).ingest_summary = ingest.to_json()
    panel = Panel.load(panel_path)
    stages = {"ingest": round(time.perf_counter() - clock, 3)}
    stale = _staleness(settings, panel, now)
    checkpoint = model or (Path(old.manifest["model"]["checkpoint"]) if old else None)
    if checkpoint is None:
        raise ValueError("no active index to take the model from; pass --model")

    last_indexed = np.datetime64(old.manifest["dates"][-1]) if old else None
    new_dates = int((panel.dates > last_indexed).sum()) if last_indexed is not None else panel.n_dates
    same_model = old is not None and model is None
    # A corrected bar, or a late one for a date already indexed, changes past windows: rebuild (the
    # builder takes over every date whose input is unchanged).
    changed = ingest is not None and ingest.changed
    if same_model and new_dates == 0 and not changed:
        message = f"no bars after {last_indexed}" + (f"; {ingest.line()}" if ingest and ingest.files else "")
        return _finished(ReindexOutcome("up_to_date", old.version, 0, message, ingest), stale)

    first_kept = dt.date.fromisoformat(old.manifest["dates"][0]) if old else None
    start = _window_start(panel, first_kept, keep_days)
    started = time.perf_counter()
    # Incremental: the active version's unchanged dates are taken over, only new or corrected ones embedded.
    result = publish_version(
        store,
        checkpoint,
        panel,
        data_source=str(panel_path),
        reuse=old,
        start=start,
        vector_dtype=settings.index_vector_dtype,
        precision=settings.embed_precision,
        console=console,
    )
    stages.update(result.stages)
    clock = time.perf_counter()
    reached("activate", console)
    activate_version(factory, store, result.version, panel=panel, dataset=panel_path.name)
    reached("prune", console)
    pruned = prune(factory, store)  # only once the activation is committed
    stages["activate"] = round(time.perf_counter() - clock, 3)
    message = (
        f"indexed {result.n_dates} dates ({start} .. {result.last_date}) in {time.perf_counter() - started:.0f} s; "
        f"{new_dates} new; {result.embedded_dates} embedded, {result.reused_dates} reused from "
        f"{old.version if old else 'no earlier version'}"
        + (f"; pruned {', '.join(pruned)}" if pruned else "")
        + (f"; {ingest.line()}" if ingest and ingest.files else "")
    )
    return _finished(ReindexOutcome("succeeded", result.version, new_dates, message, ingest, stages), stale)


def merged_metadata(panel_path: Path, assets: Path | None) -> pd.DataFrame | None:
    """The panel's current asset metadata, updated by the non-empty fields of `assets` (a CSV of
    ticker plus name, sector, industry, exchange) and extended by its new tickers."""
    from market.importers import read_assets

    current = (
        pd.read_parquet(panel_path / "assets.parquet") if (panel_path / "assets.parquet").exists() else None
    )
    supplied = read_assets(assets) if assets is not None else None
    if current is None or supplied is None:
        return supplied if current is None else current
    merged = current.set_index("ticker")
    for row in supplied.itertuples(index=False):
        fields = {k: v for k, v in row._asdict().items() if k != "ticker" and v}
        if row.ticker not in merged.index:
            merged.loc[row.ticker] = ""
        for column, value in fields.items():
            merged.loc[row.ticker, column] = value
    return merged.reset_index()


def next_run(at: str, now: dt.datetime | None = None) -> dt.datetime:
    """The next UTC time of day `at` (HH:MM) after `now`."""
    try:
        hour, minute = (int(x) for x in at.split(":"))
        dt.time(hour, minute)
    except ValueError:
        raise ValueError(f"time of day {at!r} is not HH:MM (00:00 .. 23:59)") from None
    now = now or dt.datetime.now(dt.UTC)
    candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + dt.timedelta(days=1)
