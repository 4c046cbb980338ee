"""`fascl data ...`: make, import and inspect price panels under FASCL_HOME/market."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fascl.settings import get_settings

app = typer.Typer(help="Price panels: synthetic market, importers, summaries.", no_args_is_help=True)
console = Console()

NameOption = Annotated[
    str | None, typer.Option("--name", help="Panel name under FASCL_HOME/market (default FASCL_DATASET)")
]


@app.command()
def synth(
    assets: Annotated[int, typer.Option(min=10, help="Number of assets")] = 500,
    years: Annotated[float, typer.Option(min=0.5, help="Years of daily bars")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same market")] = 0,
    name: NameOption = None,
) -> None:
    """Generate the synthetic market (factor model with drifting loadings and regime shifts)."""
    from market.synthetic import generate, save_synthetic

    dest = get_settings().panel_path(name)
    with console.status(f"generating {assets} assets x {years:g} years (seed {seed})"):
        market = generate(n_assets=assets, years=years, seed=seed)
        save_synthetic(market, dest)
    console.print(
        f"[green]wrote[/] {dest}  ({market.panel.n_assets} assets, {market.panel.n_dates} dates, "
        f"{len(market.truth.regime_dates)} regime shifts)"
    )


@app.command("import")
def import_(
    source: Annotated[
        Path, typer.Argument(exists=True, help="Per-ticker CSV folder, long CSV/Parquet or wide close matrix")
    ],
    name: Annotated[str, typer.Option("--name", help="Panel name under FASCL_HOME/market")],
    fmt: Annotated[str, typer.Option("--format", help="auto | csv-folder | long | wide")] = "auto",
    assets: Annotated[
        Path | None,
        typer.Option(exists=True, help="Asset metadata CSV (ticker,name,sector,industry,exchange)"),
    ] = None,
    clean: Annotated[
        bool, typer.Option(help="Detect unadjusted splits and one-day spikes and record corrections")
    ] = True,
    strict: Annotated[
        bool, typer.Option(help="Treat value problems (bad prices, high<low) as fatal")
    ] = False,
) -> None:
    """Import bars into a panel. All or nothing: on a fatal problem nothing is written."""
    from market.importers import import_dataset
    from market.validation import DataImportError

    dest = get_settings().panel_path(name)
    try:
        with console.status(f"importing {source}"):
            report = import_dataset(source, dest, fmt=fmt, assets=assets, clean=clean, strict=strict)
    except DataImportError as exc:
        exc.report.render(console)
        console.print(f"[red]import failed, nothing written:[/] {exc}")
        raise typer.Exit(1) from None
    report.render(console)
    console.print(f"[green]wrote[/] {dest}")


@app.command()
def info(
    name: NameOption = None,
    raw: Annotated[bool, typer.Option(help="Show the bars without corrections")] = False,
) -> None:
    """Summarise a panel: assets, date range, coverage, sectors, corrections, and its trading calendar
    per exchange (missing sessions, bars dated on a weekend or holiday)."""
    import numpy as np
    import pandas as pd

    from market.panel import Panel, PanelError, read_manifest

    path = get_settings().panel_path(name)
    try:
        panel = Panel.load(path, clean=not raw)
        manifest = read_manifest(path)
    except PanelError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    close = panel.close
    has_close = ~np.isnan(close)
    first = has_close.argmax(axis=0)
    last = panel.n_dates - 1 - has_close[::-1].argmax(axis=0)
    span = np.maximum(last - first + 1, 1)
    coverage = has_close.sum(axis=0) / span

    summary = Table(title=f"panel {path}", show_header=False)
    summary.add_row("source", str(manifest.get("source", "import")))
    summary.add_row("assets", f"{panel.n_assets:,}")
    summary.add_row("dates", f"{panel.n_dates:,}  ({panel.dates[0]} .. {panel.dates[-1]})")
    summary.add_row("bars", f"{int(has_close.sum()):,}")
    summary.add_row(
        "coverage",
        f"median {np.median(coverage):.1%} of each asset's own span; "
        f"{(coverage < 0.95).sum()} assets below 95%",
    )
    summary.add_row(
        "assets per date",
        f"min {has_close.sum(axis=1).min():,}, median {int(np.median(has_close.sum(axis=1))):,}",
    )
    summary.add_row("fingerprint", manifest.get("fingerprint", "?"))
    corrections = path / "corrections.parquet"
    if corrections.exists():
        kinds = pd.read_parquet(corrections)["kind"].value_counts()
        listed = ", ".join(f"{k}: {v}" for k, v in kinds.items()) or "none"
        summary.add_row("corrections", listed + (" (not applied)" if raw else " (applied)"))
    console.print(summary)

    sectors = panel.assets["sector"].replace("", "(unknown)").value_counts()
    table = Table(title="sectors")
    table.add_column("sector")
    table.add_column("assets", justify="right")
    for sector, count in sectors.items():
        table.add_row(sector, str(count))
    console.print(table)

    _print_calendar_report(panel, raw)


def _print_calendar_report(panel, raw: bool) -> None:
    """The calendar table of `fascl data info`: per exchange of the assets table, the calendar used,
    the sessions covered, the missing sessions and the bars dated on days that are not sessions."""
    from market.calendar import panel_calendar_report

    report = panel_calendar_report(panel)
    table = Table(
        title="trading calendar",
        show_edge=False,
        pad_edge=False,
        caption="missing: sessions inside an asset's life (first to last bar) without a close"
        + ("" if raw else ", the spikes removed by corrections included")
        + "; empty: sessions without any bar; off cal: bars on days that are not sessions",
    )
    table.add_column("exchange")
    table.add_column("calendar", no_wrap=True)
    for column in ("assets", "sessions", "empty", "off cal", "missing", "affected"):
        table.add_column(column, justify="right")
    for row in report.summary.itertuples(index=False):
        off = f"{row.non_session_bars:,}"
        table.add_row(
            row.exchange or "(none)",
            f"[yellow]{row.calendar}[/]" if row.fallback else row.calendar,
            f"{row.assets:,}",
            f"{row.sessions:,}",
            f"{row.empty_sessions:,}",
            f"[red]{off}[/]" if row.non_session_bars else off,
            f"{row.missing:,} ({row.missing_share:.1%})",
            f"{row.assets_missing:,}",
        )
    console.print(table)
    for title, frame, what in (
        ("sessions without any bar", report.empty_sessions, lambda r: ""),
        ("bars on days that are not sessions", report.non_sessions, lambda r: f" ({r.bars} bars)"),
    ):
        if frame.empty:
            continue
        shown = frame.head(10)
        listed = ", ".join(
            f"{r.date.date()} {r.exchange or '(none)'}{what(r)}" for r in shown.itertuples(index=False)
        )
        more = len(frame) - len(shown)
        console.print(f"[yellow]{title}:[/] {listed}" + (f" and {more} more" if more else ""))
