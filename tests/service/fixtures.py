"""A tiny real deployment for the service, end-to-end and hardening tests: fascl.jobs.sample's default
sample (40 assets, seed 3, the last asset missing a week of bars from 2011-02-01, a tiny model) with
`versions` published index versions."""

from __future__ import annotations

from pathlib import Path

from fascl.jobs.sample import Sample, SampleSpec, build_sample

Deployment = Sample


def make_deployment(home: Path, versions: int = 1) -> Deployment:
    """FASCL_HOME with a 40-asset synthetic market, a tiny model and `versions` published index
    versions: the first from 2010-10-01, any later ones from 2010-11-01."""
    starts = ("2010-10-01",) + ("2010-11-01",) * (versions - 1) if versions else ()
    return build_sample(home, SampleSpec(index_starts=starts))


def serving(deployment: Deployment, database_url: str, version: int = 0):
    """A migrated database at `database_url` holding the deployment's assets with its `version`-th
    index version active, as `fascl db upgrade`, `db load-assets` and `index activate` leave it.
    Returns (the service's settings for it, a session factory, the engine to dispose of)."""
    from catalogue.migrate import upgrade
    from catalogue.repository import register_index, upsert_assets
    from catalogue.sessions import make_engine, session_factory, session_scope
    from fascl.settings import Settings
    from index.store import IndexStore
    from market.panel import Panel

    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        upsert_assets(session, Panel.load(deployment.panel_path), "synthetic")
        store = IndexStore(deployment.home / "indexes")
        register_index(session, store.open_version(deployment.versions[version]), activate=True)
    settings = Settings(home=deployment.home, database_url=database_url, index_poll_seconds=3600)
    return settings, factory, engine


def error_of(response, status: int, code: str) -> dict:
    """The error of a response in the service's one shape, checked to be `status` and `code`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]
