"""Fixtures for the index tests: a synthetic panel with holes and a tiny checkpoint trained once
(fascl.jobs.sample), and a published version built from them (real files under tmp paths, no mocks)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fascl.jobs.sample import Gap, Sample, SampleSpec, build_sample
from index.build import build_version
from index.query import IndexReader
from index.store import IndexStore
from market.panel import Panel
from model.train import TrainConfig

RANGE = ("2012-01-02", "2012-06-01")  # ~110 trading dates, Monday to Friday
SHORT = ("2012-05-01", "2012-06-01")  # ~23 dates, for tests that build several versions
GAP_ASSET = 5  # its closes are missing on two days in the range: no vector for the 64 days after
GONE_ASSET = 7  # delisted before the range: not in the index at all


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Sample:
    """60 assets over 2.5 years (seed 0) with the two holes above; the checkpoint is trained 3 steps
    on the market before the holes are punched, and no index version is built here."""
    spec = SampleSpec(
        assets=60,
        years=2.5,
        seed=0,
        gaps=(Gap(GAP_ASSET, "2012-02-01", days=2), Gap(GONE_ASSET, 400)),
        train_on_gaps=False,
        # the candidate prior moves fast, so that queries that read it as 1 rank otherwise than the
        # stored vectors' plain inner products would
        training=TrainConfig(
            encoder="tiny",
            batch_size=32,
            epochs=1,
            steps_per_epoch=3,
            warmup_epochs=0,
            threads=1,
            prior_lr_scale=100.0,
        ),
        model_name="synthetic-tiny",
        index_starts=(),
    )
    return build_sample(tmp_path_factory.mktemp("sample"), spec)


@pytest.fixture(scope="session")
def panel(sample) -> Panel:
    return sample.panel


@pytest.fixture(scope="session")
def checkpoint(sample):
    """The model after its steps (last.pt), whose prior has moved; best.pt may be its step-0 start."""
    return sample.checkpoint.with_name("last.pt")


def build(checkpoint, panel, root, *, start=SHORT[0], end=SHORT[1], keep=5, **kwargs):
    return build_version(
        checkpoint,
        panel,
        start=start,
        end=end,
        store=IndexStore(root, keep=keep),
        threads=1,
        console=quiet(),
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="session")
def built(checkpoint, panel, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    result = build(checkpoint, panel, root, start=RANGE[0], end=RANGE[1])
    return root, result


@pytest.fixture(scope="session")
def reader(built) -> IndexReader:
    root, result = built
    return IndexReader(result.version, root=root, cache_bytes=64 * 2**20, omp_threads=1)
