"""A small sample deployment built by the real jobs' parts, for tests and benchmarks.

Tests of the index, the service, the end-to-end paths and the reliability suite, and the benchmarks,
all need the same thing: a FASCL_HOME holding a market panel, a trained checkpoint, published index
versions and sometimes a SQL catalogue. Built here once, by the same functions the commands use
(`market.synthetic`, `model.train`, `index.build.build_version`, `catalogue`), so that they all run
against what a real deployment looks like, and a change to how one is made lands in one place.

Nothing here reads `fascl.settings`: every value is in the `SampleSpec`, so a test's deployment
does not depend on the environment it runs in. The defaults are the service tests' deployment.

    sample = build_sample(home, SampleSpec(assets=500, database_url=f"sqlite:///{home / 'fascl.db'}"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from market.panel import Panel
from model.train import TrainConfig

DATASET = "synthetic"  # the panel's name under HOME/market, and its dataset in the SQL catalogue


@dataclass(frozen=True)
class Gap:
    """Bars missing from one asset, punched into the generated panel.

    Real panels have holes (halts, late data, delistings) and the builder and the service must
    answer around them: an asset with a hole has no complete window, so no vector, for the 64
    trading days that follow. Tests put some in on purpose to check that."""

    asset: int  # the asset's column (negative: from the last)
    start: str | int  # first missing date: ISO (the first trading date on or after it) or a position
    days: int | None = None  # trading days missing; None: every date from `start` on (a delisting)


def _service_training() -> TrainConfig:
    # A tiny encoder and two steps: enough for a checkpoint the builder can load, in seconds.
    return TrainConfig(
        encoder="tiny",
        batch_size=40,
        epochs=1,
        steps_per_epoch=2,
        warmup_epochs=0,
        valid_start="2010-11-01",
        test_start="2011-03-01",
    )


@dataclass(frozen=True)
class SampleSpec:
    """What to build. The defaults are the service tests' deployment: 40 assets over 1.5 years
    (seed 3) whose last asset misses a week of bars from 2011-02-01, a tiny model trained two steps,
    and one index version from 2010-10-01; no SQL database."""

    assets: int = 40
    years: float = 1.5
    seed: int = 3
    gaps: tuple[Gap, ...] = (Gap(-1, "2011-02-01", 5),)
    # False: the model is trained on the panel before the gaps are punched, so that the checkpoint
    # stays the same whatever holes a test puts in the panel it indexes (the index tests).
    train_on_gaps: bool = True
    # A TrainConfig, or a function of the (generated) panel that returns one, for splits placed
    # relative to the panel's last dates whatever its length.
    training: TrainConfig | Callable[[Panel], TrainConfig] = field(default_factory=_service_training)
    model_name: str = "tiny"  # the checkpoint's directory under HOME/models: the model version's name
    # One index version per entry, built in order over the dates from that start to the panel's end:
    # an ISO date, or a position in the panel's dates (-5: the last five dates).
    index_starts: tuple[str | int, ...] = ("2010-10-01",)
    keep: int = 5  # the index store's retention (nothing is pruned here)
    progress: bool = False  # the builder's progress bars
    # A URL: the catalogue is migrated, the panel's assets loaded and every version registered, the
    # newest active (what `fascl db upgrade`, `fascl assets load` and `fascl index activate` do).
    database_url: str | None = None


@dataclass
class Sample:
    """A built sample deployment: the paths the commands would use under `home`."""

    home: Path
    panel_path: Path  # HOME/market/synthetic
    panel: Panel  # as saved, gaps included
    checkpoint: Path  # HOME/models/<model_name>/best.pt
    versions: list[str]  # published index versions, oldest first
    database_url: str | None = None


def _punch(panel: Panel, gaps: tuple[Gap, ...]) -> None:
    for gap in gaps:
        if isinstance(gap.start, str):
            start = int(np.searchsorted(panel.dates, np.datetime64(gap.start, "D")))
        else:
            start = gap.start
        end = None if gap.days is None else start + gap.days
        panel.values[:, start:end, gap.asset] = np.nan


def build_sample(home: Path, spec: SampleSpec | None = None) -> Sample:
    """Build the sample deployment `spec` under `home` (created as needed) and describe it.

    Deterministic in the spec (the market in its seed, training in its TrainConfig's seed), so a
    test may assert on tickers, dates and gaps; index version names carry their creation time."""
    from catalogue.migrate import upgrade
    from catalogue.repository import register_index, upsert_assets
    from catalogue.sessions import make_engine, session_factory, session_scope
    from index.build import build_version
    from index.store import IndexStore
    from market.synthetic import generate, save_synthetic
    from model.train import train

    spec = spec or SampleSpec()
    home = Path(home)
    market = generate(n_assets=spec.assets, years=spec.years, seed=spec.seed)
    panel = market.panel
    clean = panel
    if spec.gaps and not spec.train_on_gaps:
        clean = Panel(panel.dates, panel.tickers, panel.values.copy(), panel.assets)
    _punch(panel, spec.gaps)
    panel_path = save_synthetic(market, home / "market" / DATASET)

    config = spec.training if isinstance(spec.training, TrainConfig) else spec.training(clean)
    model_dir = home / "models" / spec.model_name
    train(clean, config, model_dir, resume=False, console=Console(quiet=True))
    checkpoint = model_dir / "best.pt"

    store = IndexStore(home / "indexes", keep=spec.keep)
    versions = []
    for start in spec.index_starts:
        result = build_version(
            checkpoint,
            panel,
            start=str(panel.dates[start]) if isinstance(start, int) else start,
            store=store,
            data_source=str(panel_path),
            progress=spec.progress,
        )
        versions.append(result.version)

    if spec.database_url is not None:
        upgrade(spec.database_url)
        engine = make_engine(spec.database_url)
        try:
            with session_scope(session_factory(engine)) as session:
                upsert_assets(session, panel, DATASET)
                for version in versions:
                    register_index(session, store.open_version(version), activate=version == versions[-1])
        finally:
            engine.dispose()
    return Sample(home, panel_path, panel, checkpoint, versions, spec.database_url)
