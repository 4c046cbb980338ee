"""Activation, written once: register a published version in the catalogue, make it the active
one, then prune what is no longer served. `fascl index build`, `fascl index activate` and the
reindex job all come through here.

A running service swaps to the new active version at its next poll (or POST /admin/reload).
Pruning happens only after the activation is committed (fascl/jobs/retention.py says which
versions it never deletes)."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from catalogue.repository import register_index, upsert_assets
from catalogue.sessions import session_scope
from fascl.jobs.errors import ActivationRefused
from fascl.jobs.retention import prune_after_activation
from index.store import IndexStore
from market.panel import Panel


def activate_version(
    sessions: sessionmaker[Session],
    store: IndexStore,
    version: str,
    *,
    panel: Panel | None = None,
    dataset: str | None = None,
) -> None:
    """Record `version` in the catalogue as the active one (with `panel`'s asset metadata under
    `dataset` when given, in the same transaction). Raises ActivationRefused when the database
    cannot take it (unreachable or not migrated): the version then stays published, not active."""
    opened = store.open_version(version)
    try:
        with session_scope(sessions) as session:
            if panel is not None:
                upsert_assets(session, panel, dataset or "")
            register_index(session, opened, activate=True)
    except (OperationalError, ProgrammingError) as exc:
        raise ActivationRefused(version, exc.__class__.__name__) from exc


def prune(sessions: sessionmaker[Session], store: IndexStore) -> list[str]:
    """After an activation is committed: delete the versions beyond the store's `keep` that no
    service may be serving, mark them retired in the catalogue; returns their names."""
    with session_scope(sessions) as session:
        return prune_after_activation(session, store)
