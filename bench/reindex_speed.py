"""Nightly reindex of one new trading day, by stage, beside a full rebuild of the same dates.

    .venv/bin/python bench/reindex_speed.py [--assets 5000] [--indexed-days 20] [--new-days 1]
    .venv/bin/python bench/reindex_speed.py --precision fp32   # the forward passes in float32

Made once under --home: a synthetic market of --assets assets over three years (the history path
reads two), a briefly trained `small` checkpoint, and yesterday's deployment: the panel without its
last --new-days trading days, a SQLite catalogue with the assets and an active index version of the
--indexed-days dates before them, and tonight's bars as a Parquet file.

Each run copies that deployment into a fresh directory, drops tonight's file into the inbox and runs
the reindex job as `fascl reindex` does (fascl.jobs.reindex.run_reindex): ingest (merge the file into
the panel), the build's stages (prepare: model, features, digests and the takeover of yesterday's
unchanged dates; embed; index: neighbor tables and file writes; commit; publish) and activate (the
SQL flip and prune). Then, as the baseline, the same dates are built from scratch: what a reindex
without reuse would cost every night. Prints seconds by stage, the total against the 10 s target and
the ratio to the rebuild.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from catalogue.migrate import upgrade
from catalogue.repository import register_index, upsert_assets
from catalogue.sessions import make_engine, session_factory, session_scope
from fascl.jobs.reindex import run_reindex
from fascl.settings import Settings
from index.build import build_version
from index.store import IndexStore
from market.panel import Panel

console = Console(width=150)
TARGET_SECONDS = 10.0


def prepare(home: Path, assets: int, indexed_days: int, new_days: int) -> None:
    """Yesterday's deployment under `home` (made once; a run cut short before `ready` starts over)."""
    from fascl.jobs.sample import SampleSpec, build_sample
    from model.train import preset_config

    if (home / "ready").exists():
        return
    shutil.rmtree(home, ignore_errors=True)
    console.print(f"preparing {assets:,} assets under {home} (once)")

    def training(panel: Panel):
        return preset_config(
            "small",
            epochs=1,
            steps_per_epoch=2,
            warmup_epochs=0,
            batch_size=256,
            valid_start=str(panel.dates[-300]),
            test_start=str(panel.dates[-150]),
            max_valid_assets=256,
        )

    spec = SampleSpec(
        assets=assets, years=3.0, seed=0, gaps=(), training=training, model_name="bench", index_starts=()
    )
    sample = build_sample(home, spec)
    full = sample.panel
    cut = full.dates[-new_days - 1]
    bars = full.to_long()
    bars[bars["date"] > cut].to_parquet(home / "tonight.parquet", index=False)
    truth = (sample.panel_path / "truth.npz").read_bytes()
    full.slice_dates(end=cut).save(sample.panel_path, extra_files={"truth.npz": truth})
    yesterday = Panel.load(sample.panel_path)
    version = build_version(
        sample.checkpoint,
        yesterday,
        start=str(yesterday.dates[-indexed_days]),
        store=IndexStore(home / "indexes"),
        data_source=str(sample.panel_path),
        console=console,
    )
    url = f"sqlite:///{home / 'fascl.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        upsert_assets(session, yesterday, "synthetic")
        register_index(session, IndexStore(home / "indexes").open_version(version.version))
    engine.dispose()
    (home / "ready").write_text(version.version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--indexed-days", type=int, default=20, help="dates the active version holds")
    parser.add_argument("--new-days", type=int, default=1, help="trading days that arrive tonight")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (FASCL_EMBED_PRECISION)")
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "fascl-bench-reindex")
    args = parser.parse_args()

    deployment = args.home / f"{args.assets}-{args.indexed_days}-{args.new_days}"
    prepare(deployment, args.assets, args.indexed_days, args.new_days)
    work = Path(tempfile.mkdtemp(prefix="fascl-reindex-", dir=args.home))
    try:
        shutil.copytree(deployment, work, dirs_exist_ok=True)
        panel_path = work / "market" / "synthetic"
        settings = Settings(
            home=work,
            database_url=f"sqlite:///{work / 'fascl.db'}",
            omp_threads=args.threads,
            embed_precision=args.precision,
        )
        settings.inbox_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "tonight.parquet", settings.inbox_dir / "tonight.parquet")

        started = time.perf_counter()
        outcome = run_reindex(settings, data=panel_path, console=Console(quiet=True))
        total = time.perf_counter() - started
        if outcome.status != "succeeded":
            raise SystemExit(f"reindex {outcome.status}: {outcome.message}")

        panel = Panel.load(panel_path)
        tonight = IndexStore(work / "indexes").open_version(outcome.index_version).manifest
        started = time.perf_counter()
        rebuild = build_version(
            tonight["model"]["checkpoint"],
            panel,
            start=tonight["dates"][0],
            store=IndexStore(work / "rebuild"),
            threads=args.threads,
            precision=args.precision,
            progress=False,
        )
        rebuild_s = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(
        title=f"reindex of {args.new_days} new trading day(s): {panel.n_assets:,} assets, "
        f"{rebuild.n_dates} dates kept, {args.threads} threads, precision {args.precision}"
    )
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in outcome.stages.items():
        table.add_row(stage, f"{seconds:.2f}")
    table.add_row("[bold]reindex, end to end[/]", f"[bold]{total:.2f}[/]")
    table.add_row("full rebuild of the same dates (baseline)", f"{rebuild_s:.2f}")
    console.print(table)
    console.print(outcome.message)
    verdict = "PASS" if total < TARGET_SECONDS else "FAIL"
    console.print(
        f"reindex {total:.2f} s (target < {TARGET_SECONDS:.0f} s): {verdict}; "
        f"reindex / full rebuild = {total / rebuild_s:.3f}"
    )


if __name__ == "__main__":
    main()
