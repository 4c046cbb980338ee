"""Bars from the inbox: new files merged into the panel, each file once, bad files quarantined.

The inbox is a folder (FASCL_INBOX, default HOME/inbox) where a data vendor drops bar files: CSV or
Parquet long tables (date, ticker, open, high, low, close, volume[, amount]) of any date range,
one day or a month. Each run of the reindex job takes every file in it:

- a bar for a new (date, ticker) is added; a bar that differs from the panel's for a past date is a
  correction: applied, counted, and recorded with the file; a bar equal to the panel's is ignored;
- a file whose content was taken before (under any name: the ledger in SQL is keyed by sha256)
  changes nothing;
- a file that cannot be read or validated goes to inbox/quarantine/ with a `.reason.txt` beside it,
  and the good files proceed.

Order makes it safe to kill at any point: the merged panel is saved atomically first, then the
ledger rows are committed, then the files are moved out of the inbox. A rerun after a kill finds
either the same files and an unchanged panel (it merges them again), or files already merged
(their bars are now identical: ignored), or files already in the ledger (duplicates)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalogue.models import IngestedFile
from catalogue.sessions import session_scope
from index.store import sha256_file
from market.importers import PARQUET_SUFFIXES, import_dataset, read_long
from market.panel import FIELDS, Panel, PanelError

BAR_SUFFIXES = (".csv", *PARQUET_SUFFIXES)
INGESTED_DIR = "ingested"
QUARANTINE_DIR = "quarantine"
REASON_SUFFIX = ".reason.txt"


@dataclass
class FileOutcome:
    name: str
    sha256: str
    status: str  # ingested | duplicate | quarantined
    bars_added: int = 0
    bars_corrected: int = 0
    bars_identical: int = 0
    reason: str = ""


MISSING_LISTED = 50  # sessions without a bar named in a run's record (all are counted)


@dataclass
class IngestResult:
    files: list[FileOutcome] = field(default_factory=list)
    # Sessions of the delivered span on which a listed asset has no bar (market/calendar.py): what a
    # vendor left out. Weekends and holidays are not gaps.
    missing_count: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (ticker, date), the first MISSING_LISTED

    @property
    def changed(self) -> bool:
        """Whether the panel changed: some bar added or corrected."""
        return any(f.bars_added or f.bars_corrected for f in self.files)

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    def summary(self) -> dict:
        return {
            "files": [asdict(f) for f in self.files],
            "taken": self.count("ingested"),
            "duplicates": self.count("duplicate"),
            "quarantined": self.count("quarantined"),
            "bars_added": sum(f.bars_added for f in self.files),
            "bars_corrected": sum(f.bars_corrected for f in self.files),
            "bars_identical": sum(f.bars_identical for f in self.files),
            "missing_sessions": self.missing_count,
            "missing_examples": [list(m) for m in self.missing],
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"inbox: {s['taken']} file(s) taken ({s['bars_added']:,} bars added, {s['bars_corrected']:,} "
            f"corrected, {s['bars_identical']:,} identical), {s['duplicates']} already ingested, "
            f"{s['quarantined']} quarantined"
            + (
                f"; {self.missing_count:,} session(s) without a bar for a listed asset, e.g. "
                + ", ".join(f"{t} {d}" for t, d in self.missing[:5])
                if self.missing_count
                else ""
            )
        )

    def to_json(self) -> str:
        return json.dumps(self.summary())


def inbox_files(inbox: Path) -> list[Path]:
    """The bar files waiting in the inbox, oldest name first (vendors name files by date)."""
    if not inbox.is_dir():
        return []
    return sorted(
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in BAR_SUFFIXES
    )


def merge_bars(panel: Panel, new: Panel) -> tuple[Panel, int, int, int]:
    """`panel` with the bars of `new` merged in; returns (merged, added, corrected, identical).

    A field the new bar leaves empty keeps the panel's value (a vendor file without `amount` does
    not erase it); a bar counts as corrected when any field it gives differs from the panel's."""
    dates = np.union1d(panel.dates, new.dates)
    known = set(panel.tickers.tolist())
    tickers = np.concatenate(
        [panel.tickers, np.array([t for t in new.tickers if t not in known], dtype=object)]
    )
    values = np.full((len(FIELDS), len(dates), len(tickers)), np.nan, dtype=np.float32)
    d_old = np.searchsorted(dates, panel.dates)
    values[:, d_old, : panel.n_assets] = panel.values
    column = {t: i for i, t in enumerate(tickers)}
    d_new = np.searchsorted(dates, new.dates)
    a_new = np.array([column[t] for t in new.tickers])
    before = values[:, d_new][:, :, a_new]  # (F, new dates, new tickers)
    given = ~np.isnan(new.values)
    has_bar = given.any(axis=0)
    had_bar = ~np.isnan(before).all(axis=0)
    differs = (given & ~((before == new.values) | (np.isnan(before) & ~given))).any(axis=0)
    added = int((has_bar & ~had_bar).sum())
    corrected = int((has_bar & had_bar & differs).sum())
    identical = int((has_bar & had_bar & ~differs).sum())
    merged_block = np.where(given, new.values, before)
    values[np.ix_(np.arange(len(FIELDS)), d_new, a_new)] = merged_block
    assets = panel.assets.set_index("ticker").reindex(tickers).fillna("").reset_index()
    return Panel(dates, tickers, values, assets), added, corrected, identical


def tail_gaps(panel: Panel, start, end) -> list[tuple[str, str]]:
    """Sessions in [start, end] after an asset's last bar, for the assets that traded on the last
    date before `start`: still listed, but the delivery has no bar for them. (The calendar's own
    check, market.calendar.missing_sessions, sees only gaps between an asset's first and last bar.)"""
    from market.calendar import sessions

    close = panel.field("close")
    before = int(np.searchsorted(panel.dates, np.datetime64(start, "D"))) - 1
    if before < 0:
        return []
    present = ~np.isnan(close)
    last = np.where(present.any(axis=0), len(panel.dates) - 1 - np.argmax(present[::-1], axis=0), -1)
    exchanges = panel.assets.set_index("ticker").reindex(panel.tickers)["exchange"].fillna("").astype(str)
    gaps = []
    for col in np.flatnonzero(present[before] & (panel.dates[np.maximum(last, 0)] < np.datetime64(end, "D"))):
        after = panel.dates[last[col]] + np.timedelta64(1, "D")
        for day in sessions(exchanges.iloc[col], max(after, np.datetime64(start, "D")), end):
            gaps.append((str(panel.tickers[col]), str(day)))
    return gaps


def _move(path: Path, sha: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():  # the same name delivered again with other content: keep both
        target = folder / f"{path.stem}.{sha[:12]}{path.suffix}"
    shutil.move(str(path), target)
    return target


def ingest_inbox(
    sessions: sessionmaker[Session],
    inbox: Path,
    panel_path: Path,
    *,
    run_id: int | None = None,
    keep_files: tuple[str, ...] = (),
    console: Console | None = None,
) -> IngestResult:
    """Merge the inbox's bar files into the panel at `panel_path` (see the module's docstring)."""
    console = console or Console(quiet=True)
    files = inbox_files(inbox)
    result = IngestResult()
    if not files:
        return result
    panel = Panel.load(panel_path, clean=False)  # raw bars: corrections are detected again on save
    shas = [sha256_file(path) for path in files]
    with sessions() as session:
        ledger = {
            row.sha256: (row.name, row.status)
            for row in session.scalars(select(IngestedFile).where(IngestedFile.sha256.in_(shas)))
        }
    pending: list[tuple[Path, FileOutcome, str]] = []  # (file, outcome, the inbox folder it goes to)
    span: list[np.datetime64] = []  # first and last date delivered by the files taken
    for path, sha in zip(files, shas, strict=True):
        if sha in ledger:  # taken (or quarantined) before: it goes where its first delivery went
            name, status = ledger[sha]
            outcome = FileOutcome(path.name, sha, "duplicate", reason=f"the same content as {name}")
            folder = QUARANTINE_DIR if status == "quarantined" else INGESTED_DIR
        else:
            try:
                new, _report = read_long(path)
            except PanelError as exc:  # DataImportError included: the report's fatal issues
                outcome, folder = FileOutcome(path.name, sha, "quarantined", reason=str(exc)), QUARANTINE_DIR
            else:
                panel, added, corrected, identical = merge_bars(panel, new)
                span += [new.dates[0], new.dates[-1]]
                outcome = FileOutcome(path.name, sha, "ingested", added, corrected, identical)
                folder = INGESTED_DIR
        result.files.append(outcome)
        pending.append((path, outcome, folder))

    if result.changed:
        with tempfile.TemporaryDirectory(prefix="fascl-ingest-") as tmp:
            merged = Path(tmp) / "bars.parquet"
            panel.to_long().to_parquet(merged, index=False)
            import_dataset(merged, panel_path, fmt="long", assets=panel.assets, keep_files=keep_files)
    if span:
        from market.calendar import missing_sessions

        inside = missing_sessions(panel, start=min(span), end=max(span))
        gaps = sorted(
            [(str(r.ticker), str(r.date.date())) for r in inside.itertuples(index=False)]
            + tail_gaps(panel, min(span), max(span)),
            key=lambda gap: (gap[1], gap[0]),
        )
        result.missing_count = len(gaps)
        result.missing = gaps[:MISSING_LISTED]

    with session_scope(sessions) as session:
        for path, outcome, _folder in pending:
            if outcome.status == "duplicate":
                continue
            session.add(
                IngestedFile(
                    sha256=outcome.sha256,
                    name=outcome.name,
                    size=path.stat().st_size,
                    status=outcome.status,
                    bars_added=outcome.bars_added,
                    bars_corrected=outcome.bars_corrected,
                    bars_identical=outcome.bars_identical,
                    reason=outcome.reason,
                    reindex_run_id=run_id,
                )
            )
    for path, outcome, folder in pending:
        moved = _move(path, outcome.sha256, inbox / folder)
        if folder == QUARANTINE_DIR:
            moved.with_name(moved.name + REASON_SUFFIX).write_text(outcome.reason + "\n")
        if outcome.status == "quarantined":
            console.print(f"[red]quarantined[/] {outcome.name}: {outcome.reason}")
    console.print(result.line())
    return result
