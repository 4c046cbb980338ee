"""The served deployment most service tests share: one published index version, a migrated database
(SQLite and PostgreSQL, from the `database_url` fixture) holding its assets with that version
active, and a TestClient of the app on it. A module that needs another deployment overrides
`deployment`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from market.panel import Panel
from service.app import create_app
from tests.service.fixtures import make_deployment, serving


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    return make_deployment(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def panel(deployment):
    return Panel.load(deployment.panel_path)  # cleaned, as the service loads it


@pytest.fixture
def env(deployment, database_url):
    """(settings, session factory) of the deployment served from its first version."""
    settings, factory, engine = serving(deployment, database_url)
    yield settings, factory
    engine.dispose()


@pytest.fixture
def client(env):
    with TestClient(create_app(env[0])) as client:
        yield client
