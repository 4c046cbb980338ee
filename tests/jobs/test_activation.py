"""Activation written once (fascl/jobs/activation.py): on real SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from sqlalchemy import select

from catalogue.migrate import upgrade
from catalogue.models import Asset, IndexVersionRecord
from catalogue.repository import active_index
from catalogue.sessions import make_engine, session_factory
from fascl.jobs.activation import activate_version, prune
from fascl.jobs.errors import ActivationRefused, JobError
from fascl.jobs.publish import publish_version
from index.store import IndexStore


def publish(sample, store):
    return publish_version(
        store,
        sample.checkpoint,
        sample.panel,
        data_source=str(sample.panel_path),
        reuse="latest",
        start="2011-05-16",
        threads=1,
        progress=False,
        console=Console(file=io.StringIO()),
    ).version


def test_a_database_that_is_not_migrated_refuses_and_the_version_stays_published(sample, tmp_path):
    store = IndexStore(tmp_path / "indexes")
    version = publish(sample, store)
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(ActivationRefused) as refused:
            activate_version(session_factory(engine), store, version)
    finally:
        engine.dispose()
    assert isinstance(refused.value, JobError)
    assert "published but not active" in str(refused.value)
    assert f"fascl db upgrade`, then `fascl index activate {version}`" in str(refused.value)
    assert store.latest_version() == version and store.verify(version) == []


def test_activation_flips_the_active_version_and_prune_keeps_what_is_served(sample, tmp_path, database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    store = IndexStore(tmp_path / "indexes", keep=1)
    try:
        first = publish(sample, store)
        activate_version(sessions, store, first, panel=sample.panel, dataset="synthetic")
        with sessions() as session:
            assert active_index(session).version == first
            assert session.scalar(select(Asset).where(Asset.ticker == sample.panel.tickers[0])) is not None

        second = publish(sample, store)
        third = publish(sample, store)
        activate_version(sessions, store, third)
        with sessions() as session:
            assert active_index(session).version == third
            rows = {r.version: r for r in session.scalars(select(IndexVersionRecord))}
        assert rows[first].active is False and rows[third].active is True

        # keep=1, but the previously active version is protected: only the never-activated one goes.
        assert prune(sessions, store) == [second]
        assert [info.version for info in store.list_versions()] == [first, third]
        with sessions() as session:
            assert active_index(session).version == third
    finally:
        engine.dispose()
