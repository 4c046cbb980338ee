"""Which index versions may be deleted, and when: the jobs' side of pruning.

The store (index/store.py) deletes versions only when told which to keep, because which version is
served is recorded in SQL, above it. The rule:

- prune only after a new version has been published *and* activated: a build that is not activated
  (`--no-activate`, or a database that refuses the activation) deletes nothing;
- never delete the active version, nor the one active before it: a service polling SQL may still
  answer from it until its next poll, and its older dates load lazily from disk; nor the version a
  service last recorded serving (indexes/.served), which it serves when it cannot read SQL;
- otherwise keep the newest FASCL_INDEX_KEEP versions.

Pruned versions are marked `retired` in SQL.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalogue.models import IndexVersionRecord
from index.store import SERVED_FILE, IndexStore

# Staging and trash directories untouched for this long are removed by the next build or reindex.
# A staging directory is what a rerun of an interrupted build resumes from: within this age a rerun
# still resumes; after it, the rerun starts over.
LEFTOVER_AGE_SECONDS = 24 * 3600


def served_versions(session: Session, store: IndexStore) -> set[str]:
    """The versions a service may be reading: the active one, the one activated before it, and the
    one a service last recorded serving."""
    active = session.scalars(
        select(IndexVersionRecord.version).where(IndexVersionRecord.active.is_(True))
    ).all()
    previous = session.scalar(
        select(IndexVersionRecord.version)
        .where(IndexVersionRecord.active.is_(False), IndexVersionRecord.activated_at.is_not(None))
        .order_by(IndexVersionRecord.activated_at.desc())
        .limit(1)
    )
    try:
        recorded = (store.root / SERVED_FILE).read_text().strip()
    except OSError:
        recorded = ""
    return set(active) | {v for v in (previous, recorded) if v}


def prune_after_activation(session: Session, store: IndexStore, keep: int | None = None) -> list[str]:
    """Delete versions beyond the newest `keep` (default the store's) except those served; mark them
    retired in SQL. Call only once the new version's activation is committed."""
    pruned = store.prune(keep, protect=served_versions(session, store))
    for row in session.scalars(select(IndexVersionRecord).where(IndexVersionRecord.version.in_(pruned))):
        row.status = "retired"
    return pruned
