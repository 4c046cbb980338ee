"""Shared fixtures: where the real data sets live (FASCL_SHARED_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.databases import database_url, postgres_url  # noqa: F401 - fixtures, shared by the service and e2e tests

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("FASCL_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}; set FASCL_SHARED_DATA")
    return path


def _dataset(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not (path / "ohlcv.parquet").exists():
        pytest.skip(f"{name} data not found at {path}; set FASCL_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def stocknet_dir(shared_data) -> Path:
    return _dataset(shared_data, "stocknet")


@pytest.fixture(scope="session")
def us_nasdaq_dir(shared_data) -> Path:
    return _dataset(shared_data, "us_nasdaq")
