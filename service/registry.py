"""The in-memory index registry: the served snapshot, swapped whole when SQL names a new active version.

A request reads `registry.current` once and works on that immutable snapshot to the end, so a swap
never changes the ground under a request in flight; the old snapshot is released when the last
request holding it finishes. Everything a request needs (metadata, closes for realised
correlations, API key hashes) is loaded here, off the request path.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from catalogue.models import Asset
from catalogue.repository import active_index, active_key_hashes
from index.query import IndexReader
from index.store import SERVED_FILE, IndexStore
from market.panel import Panel, PanelError
from service.schemas import MAX_K

log = logging.getLogger("fascl.service")
META_FIELDS = ("name", "sector", "industry", "exchange")


@dataclass(frozen=True)
class Snapshot:
    reader: IndexReader
    index_version: str
    model_version: str
    meta: list[dict]  # per asset id: ticker, name, sector, industry, exchange
    meta_json: list[bytes]  # the same, serialised once: the inside of a JSON object
    first_last: list[tuple[str | None, str | None]]  # per asset id: first and last indexed dates
    dates_iso: list[str]
    # For include_realized: the panel's closes and the position of each indexed date in them.
    close: np.ndarray | None = None
    close_position: dict[dt.date, int] = field(default_factory=dict)
    close_column: np.ndarray | None = None  # asset id -> panel column (-1: absent)
    # The panel's dates (datetime64[D], ascending), row by row of `close`: for GET /assets/{ticker}/prices.
    close_dates: np.ndarray | None = None

    @property
    def newest_date(self) -> dt.date:
        return self.reader.last_date


def _metadata(records: list[dict], session: Session | None) -> list[dict]:
    """The index's ticker table, overridden by the SQL store's names and sectors where it has them."""
    sql: dict[str, Asset] = {}
    if session is not None:
        tickers = [r["ticker"] for r in records]
        sql = {a.ticker: a for a in session.scalars(select(Asset).where(Asset.ticker.in_(tickers)))}
    out = []
    for record in records:
        row = {"ticker": record["ticker"], **{f: record.get(f) or "" for f in META_FIELDS}}
        asset = sql.get(record["ticker"])
        if asset is not None:
            row.update({f: getattr(asset, f) or row[f] for f in META_FIELDS})
        out.append(row)
    return out


def _closes(reader: IndexReader) -> tuple[np.ndarray | None, dict, np.ndarray | None, np.ndarray | None]:
    source = (reader.manifest.get("data") or {}).get("source")
    if not source or not Path(source).exists():
        return None, {}, None, None
    try:
        panel = Panel.load(source)
    except PanelError as exc:
        log.warning("realised correlations unavailable: %s", exc)
        return None, {}, None, None
    positions = {d.item(): i for i, d in enumerate(panel.dates)}
    column = {t: i for i, t in enumerate(panel.tickers)}
    columns = np.array([column.get(t, -1) for t in reader.tickers], dtype=np.int64)
    return np.ascontiguousarray(panel.close), positions, columns, panel.dates


def build_snapshot(reader: IndexReader, session: Session | None) -> Snapshot:
    close, positions, columns, close_dates = _closes(reader)
    records = reader.asset_records()
    meta = _metadata(records, session)
    return Snapshot(
        reader=reader,
        index_version=reader.version,
        model_version=reader.model_version,
        meta=meta,
        meta_json=[orjson.dumps(row)[1:-1] for row in meta],
        first_last=[(r.get("first_date"), r.get("last_date")) for r in records],
        dates_iso=[d.isoformat() for d in reader.dates],
        close=close,
        close_position=positions,
        close_column=columns,
        close_dates=close_dates,
    )


def settle_heap() -> None:
    """Collect once, then freeze the survivors (snapshot, app, libraries) out of the cyclic GC's reach.

    A full collection walks every tracked object: about 80 ms with a 5,000-asset snapshot loaded, a
    pause that requests in flight would wait through. Unfreezing first lets the previous snapshot's
    cycles be collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class RefreshInProgress(RuntimeError):
    """Another refresh holds the registry (a slow or hanging database): nothing was checked."""


class IndexRegistry:
    """Holds the current snapshot and the API key cache; `refresh()` swaps when SQL says so.

    The database is needed to learn which version to serve, never to answer a query: `start()` falls
    back to the version last served (or the newest on disk) when SQL cannot be read, and later polls
    catch up. `health()` says what is served, from where, and whether polls are succeeding."""

    def __init__(
        self,
        store: IndexStore,
        sessions: sessionmaker[Session],
        *,
        cache_bytes: int,
        omp_threads: int,
        stuck_after: float = 30.0,
    ):
        self.store, self.sessions = store, sessions
        self.cache_bytes, self.omp_threads = cache_bytes, omp_threads
        self.stuck_after = stuck_after
        self.current: Snapshot | None = None
        self.api_keys: dict[str, tuple[str, frozenset[str]]] = {}
        self.keys_loaded = False
        self.swaps = 0
        self.last_error: str | None = None  # the last version that failed to load, and why
        self.database_error: str | None = None  # why the last read of SQL failed (None: it worked)
        self.source: str | None = None  # "database": SQL's active version; "disk": a fallback
        self.refresh_started: float | None = None  # time.monotonic() of the refresh running now
        self.last_success: float | None = None
        self._lock = threading.Lock()  # one refresh at a time

    def wanted_version(self, session: Session) -> str | None:
        """The active version in SQL; without one, the newest version in the store (a fresh install)."""
        row = active_index(session)
        if row is not None:
            return row.version
        return self.store.latest_version()

    def start(self) -> None:
        """The first load: SQL's active version, or, when SQL cannot be read, the version this store
        last served (else its newest), marked as a fallback until a poll reaches the database."""
        try:
            self.refresh()
            return
        except SQLAlchemyError:
            pass  # recorded in database_error by refresh
        fallback = self._last_served() or self.store.latest_version()
        if fallback is not None:
            with self._lock:
                self._swap_to(fallback, session=None, source="disk")

    def refresh(self, *, force: bool = False, wait: float | None = None) -> bool:
        """Reload API keys; open and swap in the wanted index version if it changed. True if swapped.

        Raises SQLAlchemyError when SQL cannot be read (recorded in `database_error`), and
        RefreshInProgress when another refresh holds the registry longer than `wait` seconds."""
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise RefreshInProgress("another refresh of the index registry is still waiting for the database")
        self.refresh_started = time.monotonic()
        try:
            with self.sessions() as session:
                self.api_keys = active_key_hashes(session)
                self.keys_loaded = True
                wanted = self.wanted_version(session)
                self.database_error = None
                self.last_success = time.monotonic()
                if wanted is None:
                    return False
                if not force and self.source == "database" and self.current.index_version == wanted:
                    return False
                # A fallback from disk is reloaded even when it is the right version: its metadata
                # did not come from SQL.
                return self._swap_to(wanted, session=session, source="database")
        except SQLAlchemyError as exc:
            self.database_error = one_line(exc)
            raise
        finally:
            self.refresh_started = None
            self._lock.release()

    def _swap_to(self, version: str, *, session: Session | None, source: str) -> bool:
        """Open `version` and make it current (the caller holds the lock). False if it cannot load."""
        self.refresh_started = None  # opening a version takes its time; it is not a database wait
        try:
            # The reader keeps every asset's top-MAX_K peers on the newest date: most queries ask
            # about the newest date without filters and are then a row lookup, not a search.
            # verify="lazy": the manifest is checked now and each date's files when that date is
            # loaded, so one damaged file fails its own date, not the whole version.
            reader = IndexReader(
                version,
                store=self.store,
                verify="lazy",
                cache_bytes=self.cache_bytes,
                omp_threads=self.omp_threads,
                hot_neighbors=MAX_K,
            )
            snapshot = build_snapshot(reader, session)
        except SQLAlchemyError:  # the database, not the version: the caller records it
            raise
        except Exception as exc:  # a bad version must not take down the one being served
            # Said to clients without the exception's text, which names files; the log has it.
            self.last_error = (
                f"cannot load index version {version} ({exc.__class__.__name__}; see the service log)"
            )
            log.error("cannot load index version %s: %s", version, exc)
            return False
        self.current = snapshot  # one reference assignment: requests see the old or the new, never a mix
        self.source = source
        self.swaps += 1
        self.last_error = None
        if source == "database":
            self._remember(version)
        settle_heap()
        log.info(
            "serving index version %s (model %s) from %s",
            snapshot.index_version,
            snapshot.model_version,
            "the database's choice" if source == "database" else "disk, the database being unreachable",
        )
        return True

    def health(self) -> dict:
        """What readiness reports: problems (empty when ready) and the facts behind them."""
        problems = []
        if self.current is None:
            problems.append("no index version is loaded")
        if self.database_error is not None:
            problems.append(f"the database cannot be read ({self.database_error})")
        started = self.refresh_started
        if started is not None and time.monotonic() - started > self.stuck_after:
            problems.append(f"a poll of the database has been waiting for {time.monotonic() - started:.0f} s")
        if self.source == "disk":
            problems.append("serving the last known version from disk until the database answers")
        return {"problems": problems, "index_source": self.source, "index_error": self.last_error}

    # The version last served by SQL's choice, kept beside the versions so that a start without the
    # database serves what was served before rather than an unactivated newer build.
    def _remember(self, version: str) -> None:
        path = self.store.root / SERVED_FILE
        try:
            tmp = path.with_name(f"{SERVED_FILE}.{os.getpid()}.tmp")
            tmp.write_text(version + "\n")
            os.replace(tmp, path)
        except OSError as exc:  # a read-only store still serves; the fallback is then the newest
            log.warning("cannot record the served version: %s", exc)

    def _last_served(self) -> str | None:
        try:
            version = (self.store.root / SERVED_FILE).read_text().strip()
        except OSError:
            return None
        return version if (self.store.root / version / "manifest.json").is_file() else None


def one_line(exc: Exception) -> str:
    """An exception's class and first line, without connection details (host, database name, user)."""
    original = getattr(exc, "orig", None) or exc
    kind = original.__class__.__name__
    text = str(original).splitlines()[0] if str(original) else ""
    if "timeout" in text.lower() or "timed out" in text.lower() or "canceling statement" in text.lower():
        return f"{kind}: timed out"
    if "connection" in text.lower() or "connect" in text.lower():
        return f"{kind}: cannot connect"
    if "locked" in text.lower():
        return f"{kind}: database is locked"
    return kind
