"""`fascl index ...` end to end through the real CLI app, with FASCL_HOME in a temp directory."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from fascl.cli.main import app
from fascl.settings import get_settings
from tests.index.conftest import SHORT


@pytest.fixture
def home(tmp_path, monkeypatch, panel):
    monkeypatch.setenv("FASCL_HOME", str(tmp_path))
    monkeypatch.setenv("FASCL_INDEX_KEEP", "2")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    panel.save(tmp_path / "market" / "synthetic")
    yield tmp_path
    get_settings.cache_clear()


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def test_cli_end_to_end(home, checkpoint):
    out = invoke(
        "index", "build", "--model", str(checkpoint.parent), "--from", SHORT[0], "--to", SHORT[1],
        "--threads", "1", "--no-progress", "--no-activate",
    )  # fmt: skip
    assert "published synthetic-tiny-" in out and "disk size" in out and "vectors" in out
    version = next(p.name for p in (home / "indexes").iterdir() if not p.name.startswith("."))

    out = invoke("index", "list")
    assert version in out and "no (sizes)" in out and "2012-05-01 to 2012-06-01" in out
    assert "ok " + version in invoke("index", "verify")

    out = invoke("index", "query", "AZBV", "--date", "2012-05-26", "--k", "4")
    assert "as of 2012-05-25 (requested" in out and "2012-05-26)" in out and "4 of k=4" in out
    out = invoke("index", "query", "AZBX", code=1)
    assert "unknown ticker 'AZBX'; did you mean AZBV" in out
    invoke("index", "query", "AZBV", "--date", "2001-01-01", code=1)

    invoke("index", "export", "--out", str(home / "v.npz"), "--from", "2012-05-30")
    with np.load(home / "v.npz") as data:
        assert set(data["row_date"].tolist()) == {"2012-05-30", "2012-05-31", "2012-06-01"}
    out = invoke("index", "export", "--out", str(home / "v.parquet"), "--format", "parquet")
    assert "rows over 24 dates" in out

    target = next((home / "indexes" / version / "vectors").iterdir())
    target.write_bytes(target.read_bytes()[:-4])
    out = invoke("index", "verify", version, code=1)
    assert "CORRUPT" in out and "truncated" in out and target.name in out
    assert "yes:" in invoke("index", "list")
    invoke("index", "verify", "nope", code=1)


def test_build_activates_the_version_in_sql_once_the_database_is_migrated(home, checkpoint):
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from catalogue.models import IndexVersionRecord

    args = ("index", "build", "--model", str(checkpoint.parent), "--from", SHORT[0], "--to", SHORT[1],
            "--threads", "1", "--no-progress")  # fmt: skip
    out = " ".join(invoke(*args, code=1).split())  # rich wraps long lines
    first = next(p.name for p in (home / "indexes").iterdir() if not p.name.startswith("."))
    assert "published but not active" in out and f"fascl index activate {first}" in out
    invoke("db", "upgrade")
    assert f"active: {first}" in " ".join(invoke("index", "activate", first).split())
    invoke(*args)
    engine = create_engine(f"sqlite:///{home / 'fascl.db'}")
    with Session(engine) as session:
        rows = {r.version: r.active for r in session.scalars(select(IndexVersionRecord))}
    engine.dispose()
    assert len(rows) == 2 and rows[first] is False and sum(rows.values()) == 1
    invoke("index", "activate", "no-such-version", code=1)


@pytest.mark.parametrize("reuse", ["latest", "none"])
def test_cli_build_reuses_the_latest_version_unless_told_not_to(home, checkpoint, reuse):
    from index.store import IndexStore

    args = (
        "index",
        "build",
        "--model",
        str(checkpoint),
        "--from",
        SHORT[0],
        "--to",
        SHORT[1],
        "--no-progress",
        "--no-activate",
    )
    invoke(*args)
    out = invoke(*args, "--reuse", reuse)
    assert "embedded / resumed / reused dates" in out
    assert "on disk together" in invoke("index", "list")
    store = IndexStore(home / "indexes")
    done = store.open_version(store.latest_version()).manifest["build"]
    n_dates = done["embedded_dates"] + done["reused_dates"]
    assert (done["embedded_dates"], done["reused_dates"]) == (
        (0, n_dates) if reuse == "latest" else (n_dates, 0)
    )
    invoke(*args, "--reuse", "no-such-version", code=1)


def _versions(home) -> list[str]:
    from index.store import IndexStore

    return [info.version for info in IndexStore(home / "indexes").list_versions()]


def test_pruning_never_deletes_the_active_or_the_previously_active_version(home, checkpoint):
    """FASCL_INDEX_KEEP=2. Roll back to the oldest version, then publish two more without activating:
    the served version and the one it replaced survive, and nothing is pruned before an activation."""
    args = ("index", "build", "--model", str(checkpoint.parent), "--from", SHORT[0], "--to", SHORT[1],
            "--threads", "1", "--no-progress", "--reuse", "none")  # fmt: skip
    invoke("db", "upgrade")
    invoke(*args)
    invoke(*args)
    first, second = _versions(home)
    invoke("index", "activate", first)  # roll back: first is served, second was served before it
    invoke(*args, "--no-activate")
    invoke(*args, "--no-activate")
    assert _versions(home)[:2] == [first, second]  # nothing pruned without an activation
    assert "ok " + first in invoke("index", "verify", first)

    invoke(*args)  # published and activated: now pruning may run, keeping what may still be served
    kept = _versions(home)
    assert first in kept and len(kept) == 3  # active before this build, the new one, and one more
    newest = kept[-1]
    assert first in kept and newest not in (first, second)
    invoke("index", "activate", first)  # the version rolled back to is still whole
    for version in kept:
        assert "ok " + version in invoke("index", "verify", version)


def test_a_build_whose_activation_fails_exits_non_zero_and_prunes_nothing(home, checkpoint):
    args = ("index", "build", "--model", str(checkpoint.parent), "--from", SHORT[0], "--to", SHORT[1],
            "--threads", "1", "--no-progress", "--reuse", "none")  # fmt: skip
    for _ in range(3):  # no database yet: each build is published, none activated
        out = " ".join(invoke(*args, code=1).split())
        assert "published but not active" in out and "fascl index activate" in out
    assert len(_versions(home)) == 3  # FASCL_INDEX_KEEP=2, yet nothing was pruned


def test_pruning_keeps_the_version_a_service_last_recorded_serving(home, checkpoint):
    """A service that could not read SQL through two activations still answers from the version it
    recorded in indexes/.served: that version is not pruned either."""
    args = ("index", "build", "--model", str(checkpoint.parent), "--from", SHORT[0], "--to", SHORT[1],
            "--threads", "1", "--no-progress", "--reuse", "none")  # fmt: skip
    invoke("db", "upgrade")
    invoke(*args)
    stale = _versions(home)[0]
    (home / "indexes" / ".served").write_text(stale + "\n")
    for _ in range(3):
        invoke(*args)
    kept = _versions(home)
    assert stale in kept and len(kept) == 3  # the active one, the one active before it, the stale one
    (home / "indexes" / ".served").write_text(kept[-1] + "\n")
    invoke(*args)
    assert stale not in _versions(home)
