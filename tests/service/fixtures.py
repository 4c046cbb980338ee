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
