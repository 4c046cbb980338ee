"""A sample deployment for the job tests: a synthetic panel and a tiny checkpoint, built once."""

from __future__ import annotations

import pytest

from fascl.jobs.sample import SampleSpec, build_sample


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """40 synthetic assets, a tiny model and no index versions (each test publishes its own)."""
    return build_sample(tmp_path_factory.mktemp("jobs-sample"), SampleSpec(index_starts=()))
