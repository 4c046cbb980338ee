"""A tiny real deployment for the service tests: synthetic panel, trained checkpoint, published index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from index.build import build_version
from index.store import IndexStore
from market.synthetic import generate, save_synthetic
from model.train import TrainConfig, train


@dataclass
class Deployment:
    home: Path
    panel_path: Path
    checkpoint: Path
    versions: list[str]


def make_deployment(home: Path, versions: int = 1) -> Deployment:
    """FASCL_HOME with a 40-asset synthetic market, a tiny model and `versions` published index versions."""
    market = generate(n_assets=40, years=1.5, seed=3)
    # The last asset misses a week of bars: no complete window, so no vector, for the next 64 days.
    gap = market.panel.date_position("2011-02-01")
    market.panel.values[:, gap : gap + 5, -1] = np.nan
    panel_path = save_synthetic(market, home / "market" / "synthetic")
    config = TrainConfig(
        encoder="tiny",
        batch_size=40,
        epochs=1,
        steps_per_epoch=2,
        warmup_epochs=0,
        valid_start="2010-11-01",
        test_start="2011-03-01",
    )
    model_dir = home / "models" / "tiny"
    train(market.panel, config, model_dir, resume=False, console=Console(quiet=True))
    store = IndexStore(home / "indexes", keep=5)
    published = []
    for i in range(versions):
        result = build_version(
            model_dir / "best.pt",
            market.panel,
            start="2010-10-01" if i == 0 else "2010-11-01",
            store=store,
            data_source=str(panel_path),
            progress=False,
        )
        published.append(result.version)
    return Deployment(home, panel_path, model_dir / "best.pt", published)
