"""SQL schema of the catalogue: what is served, to whom, and what the jobs did. Changed only through
Alembic migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticker: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    sector: Mapped[str] = mapped_column(String(128), default="", index=True)
    industry: Mapped[str] = mapped_column(String(128), default="")
    exchange: Mapped[str] = mapped_column(String(32), default="", index=True)
    first_date: Mapped[date | None] = mapped_column(Date)
    last_date: Mapped[date | None] = mapped_column(Date)
    dataset: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    trained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexVersionRecord(Base):
    __tablename__ = "index_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64), default="")  # sha256 of the version's manifest
    first_date: Mapped[date | None] = mapped_column(Date)
    last_date: Mapped[date | None] = mapped_column(Date)
    n_dates: Mapped[int] = mapped_column(Integer, default=0)
    n_vectors: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # building | ready | failed | retired
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReindexRun(Base):
    __tablename__ = "reindex_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # running | succeeded | up_to_date | failed | stale (the newest bar too old) | abandoned (its process
    # died before it could finish)
    status: Mapped[str] = mapped_column(String(16), default="running")
    index_version: Mapped[str | None] = mapped_column(String(128))
    dates_added: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer)  # the process running it, on `host`
    host: Mapped[str | None] = mapped_column(String(255))
    # JSON: the inbox files taken, corrected, ignored and quarantined by this run, with bar counts
    ingest_summary: Mapped[str | None] = mapped_column(Text)


class IngestedFile(Base):
    """One bar file taken from the inbox (or quarantined), known by its content: a file delivered
    again under any name is recognised here and changes nothing."""

    __tablename__ = "ingested_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # ingested | quarantined
    bars_added: Mapped[int] = mapped_column(Integer, default=0)
    bars_corrected: Mapped[int] = mapped_column(Integer, default=0)  # a past bar replaced by new values
    bars_identical: Mapped[int] = mapped_column(Integer, default=0)  # already in the panel as they are
    reason: Mapped[str] = mapped_column(Text, default="")  # why it was quarantined
    reindex_run_id: Mapped[int | None] = mapped_column(ForeignKey("reindex_runs.id"))
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # shown to people, used to find the row
    key_hash: Mapped[str] = mapped_column(
        String(64)
    )  # sha256 hex of the full key; the key itself is never stored
    scopes: Mapped[str] = mapped_column(String(256), default="read")  # comma-separated: read, admin
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
