from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from catalogue.migrate import downgrade, upgrade
from catalogue.models import Base
from catalogue.sessions import make_engine

TABLES = {"assets", "model_versions", "index_versions", "reindex_runs", "api_keys", "ingested_files"}


def test_upgrade_from_empty_then_downgrade_back(database_url):
    engine = make_engine(database_url)
    try:
        upgrade(database_url)
        tables = set(inspect(engine).get_table_names())
        assert TABLES <= tables
        assert "alembic_version" in tables
        downgrade(database_url, "base")
        assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
        upgrade(database_url)  # and up again: the downgrade left nothing behind that blocks it
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_match_the_migrated_schema(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree; add a migration: {diff}"
    finally:
        engine.dispose()
