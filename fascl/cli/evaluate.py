"""`fascl evaluate`: FASCL checkpoints against the baselines on the test period, with a report.

What runs and what the report warns about is the evaluation job's (fascl/jobs/evaluation.py);
this file parses the options and prints the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fascl.cli.panels import load_panel_or_exit
from fascl.jobs.evaluation import DEFAULT_METHODS
from fascl.settings import get_settings

console = Console()


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
    import time

    from fascl.jobs.errors import EvaluationRefused
    from fascl.jobs.evaluation import plan_evaluation, run_evaluation
    from model.report import diff_cell, difference_rows, frc_rows

    started = time.perf_counter()
    path, panel = load_panel_or_exit(data, console)
    try:
        plan = plan_evaluation(
            panel,
            methods=methods,
            models=model,
            test_start=test_start,
            test_end=test_end,
            stride=stride,
            bootstrap=bootstrap,
            dtw_queries=dtw_queries,
            seed=seed,
        )
    except EvaluationRefused as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if plan.added:
        console.print(
            f"adding {', '.join(plan.added)}: the gap closed and the differences to Pearson need them"
        )
    if plan.starts:
        console.print(
            f"adding {', '.join(plan.starts)}: what training added is measured against the models' start"
        )
    out = out or get_settings().home / "reports" / path.name
    positions = plan.positions
    if len(positions):
        console.print(
            f"evaluating {len(plan.retrievers)} methods on {path.name}: {len(positions)} query dates from "
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
            task = progress.add_task("scoring", total=len(positions) * len(plan.retrievers))

            def step(name: str, date_index: int) -> None:
                progress.update(task, advance=1, description=f"date {date_index + 1}: {name}")

            outcome = run_evaluation(plan, out, data_name=path.name, data_path=path, on_step=step)
    except EvaluationRefused as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None

    summary = outcome.summary
    ks = [str(k) for k in outcome.config.ks]
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
    learned = {name: e for name, e in summary["methods"].items() if "frc_minus_start" in e}
    if learned:
        added = Table(
            title="What training added: FRC@K − the model's classical start, paired, date-block 95% CI"
        )
        for column in ["method", "start"] + [f"@{k}" for k in ks]:
            added.add_column(column)
        for name, e in learned.items():
            added.add_row(name, e["start"], *[diff_cell(e["frc_minus_start"][k], ".3f") for k in ks])
        console.print(added)
    if best:
        console.print(f"best classical retriever (FRC@{ks[0]}): {best}")
    for note in outcome.notes:
        console.print(f"note: {note}")
    console.print(f"wrote {', '.join(sorted(p.name for p in outcome.files.values()))} to {out}")
    console.print(f"elapsed {time.perf_counter() - started:.1f} s")
