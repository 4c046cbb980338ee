"""One typed settings object for every job and the service (environment prefix FASCL_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASCL_", env_file=".env", extra="ignore")

    home: Path = Field(
        Path("var"), description="Root of the price store, models, indexes and the SQLite file"
    )
    dataset: str = Field("synthetic", description="Name of the panel under HOME/market used by default")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file under HOME")
    omp_threads: int = Field(1, ge=1, description="OpenMP/torch threads per process")
    index_keep: int = Field(3, ge=1, description="Index versions kept under HOME/indexes (newest first)")
    inbox: Path | None = Field(
        None,
        description="Folder where bar files (CSV or Parquet long tables) are dropped for the reindex job "
        "to merge into the panel; default HOME/inbox",
    )
    stale_after_sessions: int | None = Field(
        None,
        ge=1,
        description="A reindex run is an error (status stale) when the panel's newest bar is more than this "
        "many trading sessions old (the exchange calendars of its assets); /metrics exposes the count. "
        "Unset: not checked (a historical data set)",
    )
    embed_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Precision of the encoder's forward passes when exporting embeddings: bf16 doubles the "
        "rate of its matrix products where the hardware multiplies bfloat16 natively (CUDA, AVX512-BF16, "
        "AMX), which auto picks (fp32 elsewhere); recall@10 against fp32 measured 0.999",
    )
    index_vector_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="How flat dates' vectors are stored: float16 halves their disk and memory (recall@10 "
        "of searched queries against float32 measured 0.9995)",
    )
    index_cache_mb: int = Field(
        1024, ge=0, description="Memory bound of the query side's LRU of historical dates, in MiB"
    )

    # the service
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    require_api_key: bool = Field(False, description="Every route but health needs X-API-Key")
    max_body_bytes: int = Field(
        8 * 2**20,
        ge=1024,
        description="Largest request body accepted (413 beyond): the largest batch, 1,000 queries with "
        "every field set, is about 0.2 MB; the rest is room for `among` universes (8 kB a query)",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request head (URL and headers) must arrive within this many seconds of its first "
        "byte, or of connecting, else the connection is closed with 408: slow-header clients",
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="The longest wait for the next part of a request body (408 beyond)"
    )
    index_poll_seconds: float = Field(
        10.0, gt=0, description="How often the service checks SQL for a new active index"
    )
    database_timeout_seconds: float = Field(
        5.0, gt=0, description="The longest any SQL call of the service waits (connect, lock, statement)"
    )

    # the scheduler (`fascl schedule`)
    reindex_schedule: str = Field(
        "30 18 * * mon-fri",
        description="When `fascl schedule` runs the reindex job: crontab fields (minute hour day month "
        "weekday, weekdays by name) in FASCL_SCHEDULE_TIMEZONE; default 18:30 every weekday",
    )
    retrain_schedule: str | None = Field(
        None,
        description="When `fascl schedule` runs `fascl retrain` (crontab fields, as FASCL_REINDEX_SCHEDULE); "
        "unset: never. The scheduler refuses to start with it set while no `retrain` command exists",
    )
    schedule_timezone: str = Field(
        "UTC", description="IANA time zone of the schedules, e.g. UTC, Europe/London, America/New_York"
    )

    @property
    def market_dir(self) -> Path:
        return self.home / "market"

    def panel_path(self, name: str | None = None) -> Path:
        return self.market_dir / (name or self.dataset)

    @property
    def inbox_dir(self) -> Path:
        return self.inbox or self.home / "inbox"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def indexes_dir(self) -> Path:
        return self.home / "indexes"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'fascl.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
