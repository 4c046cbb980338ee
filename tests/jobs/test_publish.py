"""Build-and-publish and its one reuse rule (fascl/jobs/publish.py), on real files."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fascl.jobs.errors import ReuseUnavailable
from fascl.jobs.publish import publish_version, reuse_source
from index.store import IndexStore

START = "2011-05-02"  # the last few weeks of the sample panel: a build takes seconds


def publish(sample, store, reuse):
    return publish_version(
        store,
        sample.checkpoint,
        sample.panel,
        data_source=str(sample.panel_path),
        reuse=reuse,
        start=START,
        threads=1,
        progress=False,
        console=Console(file=io.StringIO()),
    )


def test_the_reuse_rule_on_an_empty_store(tmp_path):
    store = IndexStore(tmp_path / "indexes")
    assert reuse_source(store, "latest") is None  # nothing published yet: embed everything
    assert reuse_source(store, "none") is None
    assert reuse_source(store, "active", active=None) is None  # nothing served yet
    with pytest.raises(ReuseUnavailable, match=r"--reuse v-missing: .*--reuse none embeds every date"):
        reuse_source(store, "v-missing")


def test_latest_takes_every_unchanged_date_and_none_embeds_them_again(sample, tmp_path):
    store = IndexStore(tmp_path / "indexes", keep=10)
    first = publish(sample, store, "latest")
    assert first.embedded_dates == first.n_dates > 0 and first.reused_dates == 0

    again = publish(sample, store, "latest")
    assert (again.reused_dates, again.embedded_dates) == (first.n_dates, 0)
    assert reuse_source(store, "latest").version == again.version

    fresh = publish(sample, store, "none")
    assert (fresh.reused_dates, fresh.embedded_dates) == (0, first.n_dates)

    # By name, and the catalogue's active version: the same rule picks the version asked for.
    assert reuse_source(store, first.version).version == first.version
    assert reuse_source(store, "active", active=first.version).version == first.version
    named = publish(sample, store, first.version)
    assert named.reused_dates == first.n_dates
