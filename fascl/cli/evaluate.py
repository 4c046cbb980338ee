"""`fascl evaluate`: FASCL checkpoints against the baselines on the test period, with a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fascl.cli.panels import load_panel_or_exit
from fascl.settings import get_settings

console = Console()

DEFAULT_METHODS = (
    "random,oracle,pearson,pearson_w,pearson_w126,pearson_w252,pearson_w504,ewma504,"
    "shrink_market504,shrink_pca504,sector,pca,window,dtw"
)
REQUIRED = ("random", "pearson", "oracle")  # the report's gap closed and differences need them


def parse_models(specs: list[str] | None) -> list[tuple[str, Path]]:
    """`LABEL=PATH` or `PATH` (labelled fascl, or by its folder when several are unlabelled)."""
    specs = specs or []
    parsed = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            label, path = "", spec
        parsed.append((label.strip(), Path(path.strip())))
    unlabelled = [p for label, p in parsed if not label]
    out = []
    for label, path in parsed:
        if not label:
            label = "fascl" if len(unlabelled) == 1 else (path.parent.name if path.suffix else path.name)
        out.append((label, path))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise typer.BadParameter(f"model labels must be unique, got {labels}; use --model LABEL=PATH")
    return out


def evaluate(
    data: Annotated[
        str | None, typer.Option(help="Panel name under FASCL_HOME/market, or a panel directory")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="[LABEL=]PATH of a checkpoint (best.pt or its folder); repeatable"),
    ] = None,
    test_start: Annotated[
        str | None, typer.Option(help="First test date (default: the first model's test split)")
    ] = None,
    test_end: Annotated[
        str | None, typer.Option(help="Last test date, inclusive (default: end of data)")
    ] = None,
    stride: Annotated[
        int,
        typer.Option(
            min=1,
            help="Trading days between query dates (16: a year gives at least 10 dates for the date-level "
            "intervals; 64: non-overlapping futures)",
        ),
    ] = 16,
    methods: Annotated[
        str,
        typer.Option(
            help="Baselines, comma-separated. DTW is the slowest (a few seconds per date on 2,000 assets "
            "and 2 cores); leave it out for a quick run"
        ),
    ] = DEFAULT_METHODS,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=0, help="Bootstrap resamples of the query dates (date-block) for FRC and difference intervals"
        ),
    ] = 1000,
    dtw_queries: Annotated[
        int,
        typer.Option(
            min=0,
            help="DTW scores a random subsample of this many queries on dates with more than twice as many "
            "assets (0: always all); lower it for --stride 1",
        ),
    ] = 1500,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default FASCL_HOME/reports/<data>)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Evaluate retrievers on the test period and write metrics.json, report.md and figures."""
    from model.checkpoint import CheckpointError
    from model.evaluate import EvalConfig, history_needed, prepare_context, query_positions, summarize
    from model.evaluate import evaluate as run_evaluation
    from model.report import difference_rows, frc_rows, write_report
    from model.retrievers import BASELINES, DTWRetriever, FasclRetriever, make_baseline
    from model.splits import default_splits

    started = time.perf_counter()
    path, panel = load_panel_or_exit(data, console)

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in BASELINES]
    if unknown:
        console.print(f"[red]unknown method(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}[/]")
        raise typer.Exit(1)
    added = [m for m in REQUIRED if m not in names]
    if added:
        console.print(f"adding {', '.join(added)}: the gap closed and the differences to Pearson need them")
    names = [m for m in names if m != "oracle"] + [m for m in added if m != "oracle"]

    notes: list[str] = []
    models = []
    try:
        for label, model_path in parse_models(model):
            models.append(FasclRetriever.from_checkpoint(model_path, name=label))
    except (CheckpointError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    clash = [r.name for r in models if r.name in BASELINES]
    if clash:
        console.print(f"[red]model label(s) {', '.join(clash)} clash with baseline names[/]")
        raise typer.Exit(1)

    if test_start is None:
        splits = models[0].meta.get("splits") if models else None
        if splits:
            test_start, test_end = splits["test_start"], test_end or splits.get("test_end")
        else:
            test_start = default_splits(panel.dates).test_start
    fingerprint = panel.fingerprint() if models else None
    for r in models:
        model_test = (r.meta.get("splits") or {}).get("test_start")
        if model_test and str(model_test) > str(test_start):
            notes.append(
                f"warning: `{r.name}` was trained/validated up to {model_test}, after the test start {test_start}"
            )
        seen = (r.meta.get("data") or {}).get("fingerprint")
        if seen and seen != fingerprint:
            notes.append(
                f"`{r.name}` was trained on other data (fingerprint {seen}, this panel {fingerprint})"
            )

    config = EvalConfig(stride=stride, bootstrap=bootstrap, seed=seed)
    positions = query_positions(panel.dates, test_start, test_end, config.horizon)[::stride]
    retrievers = []
    for n in names:
        options = {"max_queries": dtw_queries or None} if n == "dtw" else {}
        retrievers.append(make_baseline(n, **options))
    retrievers += models + [make_baseline("oracle")]
    try:
        ctx, local = prepare_context(
            panel, positions, config, lookback=history_needed(retrievers, config.window)
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    out = out or get_settings().home / "reports" / path.name
    console.print(
        f"evaluating {len(retrievers)} methods on {path.name}: {len(positions)} query dates from "
        f"{panel.dates[positions[0]]} (stride {stride})"
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("scoring", total=len(positions) * len(retrievers))

            def step(name: str, date_index: int) -> None:
                progress.update(task, advance=1, description=f"date {date_index + 1}: {name}")

            result = run_evaluation(ctx, retrievers, local, config, on_step=step)
        with console.status(f"bootstrap ({bootstrap} resamples) and report"):
            dtw = next((r for r in retrievers if isinstance(r, DTWRetriever)), None)
            if dtw is not None and dtw.max_queries and result.queries_per_date.max() > 2 * dtw.max_queries:
                notes.append(
                    f"DTW (Sakoe-Chiba band {dtw.band} days, z-scored close path) scores a random subsample of "
                    f"{dtw.max_queries} queries, against every candidate, on dates with more than "
                    f"{2 * dtw.max_queries} eligible assets; its metrics are over the queries it scored and its "
                    "difference to Pearson is paired on them"
                )
            summary = summarize(result)
            elapsed = time.perf_counter() - started
            info = {
                "data": path.name,
                "data_path": str(path),
                "assets": int(panel.n_assets),
                "test_start": str(test_start),
                "test_end": str(test_end) if test_end else None,
                "models": {r.name: r.path for r in models},
                "notes": notes,
                "elapsed_s": elapsed,
            }
            files = write_report(summary, result, out, info)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None

    ks = [str(k) for k in config.ks]
    table = Table(
        title=f"FRC@K (date-block 95% CI) on {path.name}, {summary['queries']:,} queries "
        f"({', '.join(summary['dates'])})"
    )
    for column in ["method"] + [f"FRC@{k}" for k in ks] + ["gap closed @" + "/".join(ks)]:
        table.add_column(column)
    for row in frc_rows(summary, ".3f"):
        table.add_row(*row)
    console.print(table)
    best = summary.get("best_classical")
    keys = [("frc_minus_pearson", "Pearson")] + ([("frc_minus_best_classical", best)] if best else [])
    for key, label in keys:
        diffs = Table(title=f"FRC@K − {label}, paired, date-block 95% CI, dates with a positive difference")
        for column in ["method"] + [f"@{k}" for k in ks]:
            diffs.add_column(column)
        for row in difference_rows(summary, key, ".3f"):
            diffs.add_row(*row)
        console.print(diffs)
    if best:
        console.print(f"best classical retriever (FRC@{ks[0]}): {best}")
    for note in notes:
        console.print(f"note: {note}")
    console.print(f"wrote {', '.join(sorted(p.name for p in files.values()))} to {out}")
    console.print(f"elapsed {time.perf_counter() - started:.1f} s")
