"""Nightly reindex: an incremental build (new dates embedded, the rest reused) against a full rebuild.

    .venv/bin/python bench/reindex_speed.py [--assets 500] [--years 4] [--new-days 1]
    .venv/bin/python bench/reindex_speed.py --data us_nasdaq --model PATH/best.pt

Yesterday's version is built over the whole history minus the last --new-days trading days (the
baseline: what a reindex without reuse costs every night). Then tonight's bars arrive and two builds
run on the full panel: one from scratch, one with `reuse=` yesterday's version. Prints the time of
each, the ratio, the dates embedded and reused, and the disk the two versions take together (reused
files are checked copies, so that damage to one version's file never reaches another; on XFS and
Btrfs the kernel's copy shares their extents, which file sizes do not show). Without --data it uses the synthetic market and a briefly
trained small checkpoint, made once under --home.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from index.build import build_version
from index.store import IndexStore, unique_bytes
from market.panel import Panel

console = Console()


def synthetic(home: Path, assets: int, years: float) -> tuple[Panel, Path]:
    """The synthetic market and a briefly trained small checkpoint (fascl.jobs.sample, no index),
    made once per size under `home` and loaded from there on later runs."""
    from fascl.jobs.sample import SampleSpec, build_sample
    from model.train import preset_config

    sample_home = home / f"sample-{assets}-{years}"
    checkpoint = sample_home / "models" / "bench" / "best.pt"
    if checkpoint.exists():
        return Panel.load(sample_home / "market" / "synthetic"), checkpoint

    def training(panel: Panel):
        return preset_config(
            "small",
            epochs=1,
            steps_per_epoch=2,
            warmup_epochs=0,
            batch_size=128,
            valid_start=str(panel.dates[-300]),
            test_start=str(panel.dates[-150]),
            max_valid_assets=128,
        )

    shutil.rmtree(sample_home, ignore_errors=True)  # a run cut short before its checkpoint
    spec = SampleSpec(
        assets=assets, years=years, seed=0, gaps=(), training=training, model_name="bench", index_starts=()
    )
    sample = build_sample(sample_home, spec)
    return sample.panel, sample.checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--years", type=float, default=4.0)
    parser.add_argument("--new-days", type=int, default=1, help="trading days that arrive tonight")
    parser.add_argument("--data", help="a panel (name under FASCL_HOME/market or a directory) instead")
    parser.add_argument("--model", type=Path, help="checkpoint for --data")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "fascl-bench-reindex")
    args = parser.parse_args()

    args.home.mkdir(parents=True, exist_ok=True)
    if args.data:
        from fascl.cli.panels import resolve_panel_path

        if args.model is None:
            raise SystemExit("--data needs --model")
        panel, checkpoint = Panel.load(resolve_panel_path(args.data)), args.model
    else:
        panel, checkpoint = synthetic(args.home, args.assets, args.years)
    shutil.rmtree(args.home / "indexes", ignore_errors=True)
    store = IndexStore(args.home / "indexes", keep=10)
    yesterday = panel.slice_dates(end=panel.dates[-1 - args.new_days])

    def timed(label: str, data: Panel, **kwargs):
        started = time.perf_counter()
        result = build_version(checkpoint, data, store=store, console=console, **kwargs)
        console.print(f"{label}: {time.perf_counter() - started:.1f} s")
        return result, time.perf_counter() - started

    base, _ = timed("yesterday's version (full build)", yesterday)
    full, full_s = timed("tonight, full rebuild", panel)
    incremental, inc_s = timed("tonight, incremental", panel, reuse=store.open_version(base.version))

    table = Table(title=f"reindex after {args.new_days} new trading day(s): {panel.n_assets:,} assets")
    for column in ("build", "seconds", "dates embedded", "dates reused", "vectors"):
        table.add_column(column, justify="right")
    table.add_row("full rebuild", f"{full_s:,.1f}", f"{full.embedded_dates:,}", "0", f"{full.vectors:,}")
    table.add_row(
        "incremental",
        f"{inc_s:,.1f}",
        f"{incremental.embedded_dates:,}",
        f"{incremental.reused_dates:,}",
        f"{incremental.vectors:,}",
    )
    console.print(table)
    pair = unique_bytes([base.path, incremental.path])
    console.print(
        f"incremental / full time = {inc_s / full_s:.3f}; disk of yesterday + tonight: {pair / 2**20:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
