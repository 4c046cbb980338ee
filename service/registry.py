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
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from index.query import IndexReader
from index.store import IndexStore
from market.panel import Panel, PanelError
from service.models import Asset
from service.repository import active_index, active_key_hashes
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


def _closes(reader: IndexReader) -> tuple[np.ndarray | None, dict, np.ndarray | None]:
    source = (reader.manifest.get("data") or {}).get("source")
    if not source or not Path(source).exists():
        return None, {}, None
    try:
        panel = Panel.load(source)
    except PanelError as exc:
        log.warning("realised correlations unavailable: %s", exc)
        return None, {}, None
    positions = {d.item(): i for i, d in enumerate(panel.dates)}
    column = {t: i for i, t in enumerate(panel.tickers)}
    columns = np.array([column.get(t, -1) for t in reader.tickers], dtype=np.int64)
    return np.ascontiguousarray(panel.close), positions, columns


def build_snapshot(reader: IndexReader, session: Session | None) -> Snapshot:
    close, positions, columns = _closes(reader)
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
    )


def settle_heap() -> None:
    """Collect once, then freeze the survivors (snapshot, app, libraries) out of the cyclic GC's reach.

    A full collection walks every tracked object: about 80 ms with a 5,000-asset snapshot loaded, a
    pause that requests in flight would wait through. Unfreezing first lets the previous snapshot's
    cycles be collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class IndexRegistry:
    """Holds the current snapshot and the API key cache; `refresh()` swaps when SQL says so."""

    def __init__(
        self, store: IndexStore, sessions: sessionmaker[Session], *, cache_bytes: int, omp_threads: int
    ):
        self.store, self.sessions = store, sessions
        self.cache_bytes, self.omp_threads = cache_bytes, omp_threads
        self.current: Snapshot | None = None
        self.api_keys: dict[str, tuple[str, frozenset[str]]] = {}
        self.swaps = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time

    def wanted_version(self, session: Session) -> str | None:
        """The active version in SQL; without one, the newest version in the store (a fresh install)."""
        row = active_index(session)
        if row is not None:
            return row.version
        return self.store.latest_version()

    def refresh(self, *, force: bool = False) -> bool:
        """Reload API keys; open and swap in the wanted index version if it changed. True if swapped."""
        with self._lock, self.sessions() as session:
            self.api_keys = active_key_hashes(session)
            wanted = self.wanted_version(session)
            if wanted is None or (
                not force and self.current is not None and self.current.index_version == wanted
            ):
                return False
            try:
                # The reader keeps every asset's top-MAX_K peers on the newest date: most queries ask
                # about the newest date without filters and are then a row lookup, not a search.
                # verify="lazy": the manifest is checked now and each date's files when that date is
                # loaded, so one damaged file fails its own date, not the whole version.
                reader = IndexReader(
                    wanted,
                    store=self.store,
                    verify="lazy",
                    cache_bytes=self.cache_bytes,
                    omp_threads=self.omp_threads,
                    hot_neighbors=MAX_K,
                )
                snapshot = build_snapshot(reader, session)
            except Exception as exc:  # a bad version must not take down the one being served
                self.last_error = f"cannot load index version {wanted}: {exc}"
                log.error(self.last_error)
                return False
        self.current = snapshot  # one reference assignment: requests see the old or the new, never a mix
        self.swaps += 1
        self.last_error = None
        settle_heap()
        log.info("serving index version %s (model %s)", snapshot.index_version, snapshot.model_version)
        return True
