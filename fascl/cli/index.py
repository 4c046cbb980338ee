"""`fascl index ...`: build, list, verify, export and query the versioned FAISS indexes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fascl.settings import get_settings

app = typer.Typer(help="Embedding indexes: build, list, verify, export, query.", no_args_is_help=True)
console = Console()

VersionOption = Annotated[str | None, typer.Option("--version", help="Index version (default: the latest)")]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _store(keep: int | None = None):
    from index.store import IndexStore

    settings = get_settings()
    return IndexStore(settings.indexes_dir, keep=keep or settings.index_keep)


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{message}[/]")
    return typer.Exit(code)


@app.command()
def build(
    model: Annotated[Path, typer.Option(help="Checkpoint file or model directory (its best.pt)")],
    data: Annotated[
        str | None, typer.Option(help="Panel name under FASCL_HOME/market, or a panel directory")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First date to index (default: first possible)")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last date to index (default: the panel's last)")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(min=1, help="Versions to keep, newest first (default FASCL_INDEX_KEEP)")
    ] = None,
    kind: Annotated[
        str, typer.Option(help="auto | flat | hnsw | ivf (auto: flat up to 100k a date)")
    ] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Windows per forward pass")] = None,
    threads: Annotated[int | None, typer.Option(help="torch and faiss threads (default: settings)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    activate: Annotated[
        bool, typer.Option(help="Make the new version active in SQL (the service swaps to it)")
    ] = True,
    neighbors: Annotated[
        int,
        typer.Option(
            min=0,
            help="Store each date's top-K neighbors: unfiltered queries for k <= K become lookups (0: none)",
        ),
    ] = 20,
    reuse: Annotated[
        str,
        typer.Option(
            help="Take the dates whose input is unchanged from this version instead of embedding them "
            "again (same checkpoint and index settings only): a version name, 'latest' or 'none'"
        ),
    ] = "latest",
    precision: Annotated[
        str | None,
        typer.Option(help="auto | fp32 | bf16 for the forward passes (default FASCL_EMBED_PRECISION)"),
    ] = None,
    vectors: Annotated[
        str | None,
        typer.Option(help="float32 | float16 for flat dates' vectors (default FASCL_INDEX_VECTOR_DTYPE)"),
    ] = None,
) -> None:
    """Embed every eligible asset on every date of the range, index each date, publish a version.

    Resumable: rerun the same command after an interruption and finished dates are kept.
    Incremental: dates unchanged since the --reuse version are taken from it, not embedded again.
    Distributed: `torchrun --nproc_per_node N -m fascl.cli.main index build ...` shares the dates
    out between N processes (one GPU each where there are GPUs); rank 0 publishes and activates."""
    import pandas as pd

    from fascl.cli.panels import load_panel_or_exit
    from fascl.jobs.errors import JobError
    from fascl.jobs.publish import publish_version
    from fascl.jobs.stages import reached
    from index.shards import current_shard
    from model.checkpoint import CheckpointError
    from model.history import HISTORY

    settings = get_settings()

    # What an encoder reads before --from: its window, and the history path's 504 trading days
    # (about 730 calendar days); 1.6 calendar days per trading day is ample.
    load_from = None if from_ is None else pd.Timestamp(from_) - pd.Timedelta(days=round(1.6 * HISTORY))
    path, panel = load_panel_or_exit(data, console, start=load_from, end=to)
    store = _store(keep)
    reached("ingest", console)
    try:
        result = publish_version(
            store,
            model,
            panel,
            data_source=str(path),
            reuse=reuse,
            start=from_,
            end=to,
            index_kind=kind,
            batch_size=batch_size,
            threads=threads,
            neighbors=neighbors,
            vector_dtype=vectors or settings.index_vector_dtype,
            precision=precision or settings.embed_precision,
            progress=progress,
            console=console,
        )
    except (CheckpointError, ValueError, JobError) as exc:
        raise _fail(str(exc)) from None
    if not current_shard().main:  # under torchrun rank 0 published; it reports and activates
        return
    table = Table(title=f"published {result.version}", show_header=False)
    table.add_row("version", result.version)
    table.add_row("model", result.model_version)
    table.add_row("dates", f"{result.first_date} to {result.last_date} ({result.n_dates:,})")
    table.add_row("vectors", f"{result.vectors:,} x {result.dim}")
    table.add_row("index kinds", ", ".join(result.kinds))
    table.add_row(
        "embedded / resumed / reused dates",
        f"{result.embedded_dates:,} / {result.resumed_dates:,} / {result.reused_dates:,}",
    )
    table.add_row("seconds", f"{result.seconds:,.1f}")
    table.add_row("disk size", human_bytes(result.disk_bytes))
    table.add_row("device", result.device)
    table.add_row("path", str(result.path))
    console.print(table)
    if not activate:
        console.print(
            f"not activated (--no-activate): nothing was pruned; `fascl index activate {result.version}` "
            "serves it, and the next activated build prunes"
        )
        return
    reached("activate", console)
    _activate(store, result.version)
    reached("prune", console)
    _prune(store)


def _activate(store, version: str) -> None:
    """Make the version active in the catalogue; exits 1 when the database refuses (the version then
    stays published, not active)."""
    from fascl.jobs.activation import activate_version
    from fascl.jobs.database import catalogue_sessions
    from fascl.jobs.errors import ActivationRefused

    with catalogue_sessions(get_settings()) as sessions:
        try:
            activate_version(sessions, store, version)
        except ActivationRefused as exc:
            raise _fail(str(exc)) from None
    console.print(
        f"[green]active:[/] {version} (the service swaps to it at its next poll or POST /admin/reload)"
    )


def _prune(store) -> None:
    from fascl.jobs.activation import prune
    from fascl.jobs.database import catalogue_sessions

    with catalogue_sessions(get_settings()) as sessions:
        pruned = prune(sessions, store)
    if pruned:
        console.print(f"pruned (beyond FASCL_INDEX_KEEP={store.keep}): {', '.join(pruned)}")


@app.command()
def activate(
    version: Annotated[str, typer.Argument(help="A published version (see `fascl index list`)")],
) -> None:
    """Make a published version the one the service answers from."""
    from index.errors import IndexStoreError

    store = _store()
    try:
        store.open_version(version, verify="all")
    except IndexStoreError as exc:
        raise _fail(str(exc)) from None
    _activate(store, version)


@app.command("list")
def list_(
    verify: Annotated[
        bool, typer.Option(help="Full sha256 check of every file (slow for big versions)")
    ] = False,
) -> None:
    """Published versions, oldest first; `corrupt?` checks file presence and sizes (or checksums)."""
    from index.errors import IndexCorruptError

    store = _store()
    infos = store.list_versions()
    if not infos:
        console.print(f"no index versions under {store.root}; build one with `fascl index build`")
        return
    table = Table(
        title=f"index versions under {store.root}",
        caption=f"on disk together: {human_bytes(store.total_disk_bytes())} "
        "(a version reuses unchanged dates of an earlier one as hard links: shared files count once)",
    )
    for column in ("version", "model", "dates covered", "vectors", "size", "created", "corrupt?"):
        table.add_column(column, justify="right" if column in ("vectors", "size") else "left")
    for info in infos:
        if not info.readable:
            status = f"[red]yes: {info.error}[/]"
        else:
            try:
                opened = store.open_version(info.version, verify="lazy")
                problems = opened.problems() if verify else opened.size_problems()
            except IndexCorruptError as exc:
                problems = [exc]
            status = (
                f"[red]yes: {problems[0]}[/]" if problems else ("no (sha256)" if verify else "no (sizes)")
            )
        dates = f"{info.first_date} to {info.last_date} ({info.n_dates:,})" if info.n_dates else "-"
        table.add_row(
            info.version,
            info.model_version or "?",
            dates,
            f"{info.vectors:,}",
            human_bytes(info.bytes),
            info.created,
            status,
        )
    console.print(table)


@app.command()
def verify(
    version: Annotated[str | None, typer.Argument(help="Version to check (default: every version)")] = None,
) -> None:
    """Check every file's sha256 against its manifest; exit 1 if any version is corrupt."""
    from index.errors import VersionNotFound

    store = _store()
    names = [version] if version else [info.version for info in store.list_versions()]
    if not names:
        raise _fail(f"no index versions under {store.root}")
    bad = 0
    for name in names:
        started = time.perf_counter()
        try:
            problems = store.verify(name)
        except VersionNotFound as exc:
            raise _fail(str(exc)) from None
        if problems:
            bad += 1
            console.print(f"[red]CORRUPT[/] {name}: {len(problems)} file(s)")
            for problem in problems:
                console.print(f"  {problem}")
        else:
            console.print(f"[green]ok[/] {name} ({time.perf_counter() - started:.1f} s)")
    if bad:
        raise typer.Exit(1)


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .npz)")],
    version: VersionOption = None,
    from_: Annotated[str | None, typer.Option("--from", help="First date")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last date")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="parquet | npz (default: from the file name)")
    ] = None,
) -> None:
    """Write (date, ticker, vector) rows for research."""
    from index.errors import IndexStoreError
    from index.research import export_vectors

    try:
        opened = _store().open_version(version, verify="lazy")
        result = export_vectors(opened, out, fmt, start=from_, end=to)
    except (IndexStoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"[green]wrote[/] {result.path} ({result.format}): {result.rows:,} rows over {result.dates:,} dates, "
        f"d={result.dim}, {human_bytes(result.bytes)}"
    )


@app.command()
def query(
    ticker: Annotated[str, typer.Argument(help="Query ticker")],
    date: Annotated[str | None, typer.Option(help="As of this date (default: the newest indexed)")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000, help="Number of similar assets")] = 10,
    sector: Annotated[str | None, typer.Option(help="Only assets of this sector")] = None,
    exchange: Annotated[str | None, typer.Option(help="Only assets listed on this exchange")] = None,
    exclude_same_sector: Annotated[bool, typer.Option(help="Skip assets of the query's sector")] = False,
    version: VersionOption = None,
) -> None:
    """The k assets whose embeddings are closest to TICKER's as of DATE."""
    from index.errors import IndexStoreError, QueryError
    from index.query import IndexReader

    started = time.perf_counter()
    try:
        reader = IndexReader(version, store=_store(), cache_bytes=get_settings().index_cache_mb * 2**20)
        result = reader.similar(
            ticker, date, k=k, sector=sector, exchange=exchange, exclude_same_sector=exclude_same_sector
        )
    except (QueryError, IndexStoreError) as exc:
        raise _fail(str(exc)) from None
    assets = reader.assets
    asof = result.as_of.isoformat()
    if result.requested_date is not None and result.requested_date != result.as_of:
        asof += f" (requested {result.requested_date})"
    q = assets.iloc[result.asset_id]
    table = Table(title=f"{result.ticker} ({q['name'] or '-'}, {q['sector'] or '-'}) as of {asof}")
    for column in ("#", "ticker", "name", "sector", "exchange", "score"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, n in enumerate(result.neighbors, 1):
        row = assets.iloc[n.asset_id]
        table.add_row(str(rank), n.ticker, row["name"], row["sector"], row["exchange"], f"{n.score:.4f}")
    console.print(table)
    console.print(
        f"version {result.version}; {len(result.neighbors)} of k={k}; "
        f"{(time.perf_counter() - started) * 1e3:.0f} ms including opening the index",
        style="dim",
    )
