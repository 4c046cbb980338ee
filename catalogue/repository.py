"""Reads and writes of the SQL store, shared by the CLI jobs and the service."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from catalogue.models import ApiKey, Asset, IndexVersionRecord, ModelVersion
from market.panel import Panel

SCOPES = ("read", "admin")


def upsert_assets(session: Session, panel: Panel, dataset: str) -> tuple[int, int]:
    """Upsert one row per panel ticker with its metadata and first/last dates; returns (added, updated)."""
    present = np.isfinite(panel.close)
    has_any = present.any(axis=0)
    first = present.argmax(axis=0)
    last = panel.n_dates - 1 - present[::-1].argmax(axis=0)
    existing = {a.ticker: a for a in session.scalars(select(Asset))}
    added = updated = 0
    for i, row in enumerate(panel.assets.itertuples(index=False)):
        values = {
            "name": row.name,
            "sector": row.sector,
            "industry": row.industry,
            "exchange": row.exchange,
            "first_date": panel.dates[first[i]].item() if has_any[i] else None,
            "last_date": panel.dates[last[i]].item() if has_any[i] else None,
            "dataset": dataset,
        }
        asset = existing.get(row.ticker)
        if asset is None:
            session.add(Asset(ticker=row.ticker, **values))
            added += 1
        else:
            for key, value in values.items():
                setattr(asset, key, value)
            updated += 1
    return added, updated


def register_model(session: Session, version: str, path: str, meta: dict) -> ModelVersion:
    model = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if model is None:
        model = ModelVersion(version=version, path=path)
        session.add(model)
    model.config = {k: meta.get(k) for k in ("encoder_config", "train_config", "splits")}
    model.metrics = {k: meta.get(k) for k in ("best_valid_frc", "pearson_valid_frc") if k in meta}
    model.data_fingerprint = (meta.get("data") or {}).get("fingerprint", "")
    model.trained_at = datetime.now(UTC)
    session.flush()
    return model


def activate_index(session: Session, index: IndexVersionRecord) -> None:
    """Make `index` the one active version (in the caller's transaction)."""
    session.execute(update(IndexVersionRecord).where(IndexVersionRecord.id != index.id).values(active=False))
    index.active = True
    index.status = "ready"
    index.activated_at = datetime.now(UTC)


def active_index(session: Session) -> IndexVersionRecord | None:
    return session.scalar(select(IndexVersionRecord).where(IndexVersionRecord.active.is_(True)))


# ----------------------------------------------------------------- API keys
def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, name: str, scopes: list[str]) -> str:
    """Store a new key hashed and return it in clear, once: it cannot be recovered later."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; scopes are {', '.join(SCOPES)}")
    prefix = secrets.token_hex(4)
    key = f"fascl_{prefix}_{secrets.token_urlsafe(24)}"
    session.add(
        ApiKey(name=name, prefix=prefix, key_hash=_hash_key(key), scopes=",".join(sorted(set(scopes))))
    )
    return key


def revoke_api_key(session: Session, prefix: str) -> bool:
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = datetime.now(UTC)
    return True


def active_key_hashes(session: Session) -> dict[str, tuple[str, frozenset[str]]]:
    """prefix -> (sha256 hex, scopes) of every unrevoked key: the service caches this."""
    rows = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
    return {k.prefix: (k.key_hash, frozenset(k.scopes.split(","))) for k in rows}


def check_api_key(keys: dict[str, tuple[str, frozenset[str]]], key: str | None) -> frozenset[str] | None:
    """Scopes of `key`, or None. The hash comparison is constant-time."""
    if not key or not key.startswith("fascl_"):
        return None
    parts = key.split("_", 2)
    entry = keys.get(parts[1]) if len(parts) == 3 else None
    if entry is None:
        # Compare anyway so an unknown prefix costs the same time as a wrong secret.
        hmac.compare_digest(_hash_key(key), "0" * 64)
        return None
    return entry[1] if hmac.compare_digest(_hash_key(key), entry[0]) else None


def register_index(session: Session, version, *, activate: bool = True) -> IndexVersionRecord:
    """Record a published store version (index.store.IndexVersionRecord) in SQL, optionally as the active one."""
    manifest = version.manifest
    model = session.scalar(select(ModelVersion).where(ModelVersion.version == version.model_version))
    if model is None:
        info = manifest.get("model", {})
        model = ModelVersion(
            version=version.model_version,
            path=str(info.get("checkpoint", "")),
            config={k: info.get(k) for k in ("encoder_config", "train_config", "splits") if k in info},
            data_fingerprint=(manifest.get("data") or {}).get("fingerprint") or "",
        )
        session.add(model)
        session.flush()
    row = session.scalar(select(IndexVersionRecord).where(IndexVersionRecord.version == version.version))
    if row is None:
        row = IndexVersionRecord(version=version.version, path=str(version.path))
        session.add(row)
    dates = manifest["dates"]
    row.model_version_id = model.id
    row.checksum = version.manifest_sha256
    row.first_date = datetime.fromisoformat(dates[0]).date() if dates else None
    row.last_date = datetime.fromisoformat(dates[-1]).date() if dates else None
    row.n_dates = len(dates)
    row.n_vectors = int(sum(manifest.get("counts", [])))
    row.status = "ready"
    session.flush()
    if activate:
        activate_index(session, row)
    return row
