import numpy as np
import pandas as pd
from sqlalchemy import select

from catalogue.migrate import upgrade
from catalogue.models import Asset, IndexVersionRecord
from catalogue.repository import (
    activate_index,
    active_index,
    active_key_hashes,
    check_api_key,
    create_api_key,
    revoke_api_key,
    upsert_assets,
)
from catalogue.sessions import make_engine, session_factory, session_scope
from market.panel import FIELDS, Panel


def small_panel() -> Panel:
    dates = np.busday_offset("2021-01-01", np.arange(10), roll="forward")
    values = np.full((len(FIELDS), 10, 3), 10.0, dtype=np.float32)
    values[:, :4, 2] = np.nan  # C starts on the fifth date
    assets = pd.DataFrame(
        {"ticker": ["A", "B", "C"], "name": ["Alpha", "Beta", "Gamma"], "sector": ["Tech", "Energy", ""]}
    )
    return Panel(dates, ["A", "B", "C"], values, assets)


def factory_for(url):
    upgrade(url)
    engine = make_engine(url)
    return engine, session_factory(engine)


def test_load_assets_upserts_metadata_and_date_ranges(database_url):
    engine, factory = factory_for(database_url)
    panel = small_panel()
    with session_scope(factory) as session:
        assert upsert_assets(session, panel, "demo") == (3, 0)
    panel.assets.loc[0, "name"] = "Alpha Holdings"
    with session_scope(factory) as session:
        assert upsert_assets(session, panel, "demo") == (0, 3)
    with factory() as session:
        rows = {a.ticker: a for a in session.scalars(select(Asset))}
    assert rows["A"].name == "Alpha Holdings" and rows["A"].sector == "Tech"
    assert str(rows["C"].first_date) == str(panel.dates[4]) and str(rows["C"].last_date) == str(
        panel.dates[-1]
    )
    engine.dispose()


def test_only_one_index_version_is_active(database_url):
    engine, factory = factory_for(database_url)
    with session_scope(factory) as session:
        first, second = (
            IndexVersionRecord(version="v1", path="/a"),
            IndexVersionRecord(version="v2", path="/b"),
        )
        session.add_all([first, second])
        session.flush()
        activate_index(session, first)
    with session_scope(factory) as session:
        activate_index(
            session, session.scalar(select(IndexVersionRecord).where(IndexVersionRecord.version == "v2"))
        )
    with factory() as session:
        assert active_index(session).version == "v2"
        assert [
            v.version for v in session.scalars(select(IndexVersionRecord).where(IndexVersionRecord.active))
        ] == ["v2"]
    engine.dispose()


def test_api_keys_are_stored_hashed_checked_and_revoked(database_url):
    engine, factory = factory_for(database_url)
    with session_scope(factory) as session:
        key = create_api_key(session, "alice", ["read", "admin"])
        reader = create_api_key(session, "bob", ["read"])
    with factory() as session:
        keys = active_key_hashes(session)
        stored = [row[0] for row in keys.values()]
    assert key not in stored and reader not in stored  # only hashes are kept
    assert check_api_key(keys, key) == frozenset({"read", "admin"})
    assert check_api_key(keys, reader) == frozenset({"read"})
    assert check_api_key(keys, key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert check_api_key(keys, "fascl_00000000_nope") is None
    assert check_api_key(keys, None) is None
    with session_scope(factory) as session:
        assert revoke_api_key(session, key.split("_")[1])
        assert not revoke_api_key(session, key.split("_")[1])  # already revoked
    with factory() as session:
        assert check_api_key(active_key_hashes(session), key) is None
    engine.dispose()
