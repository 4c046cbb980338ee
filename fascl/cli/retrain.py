"""`fascl retrain`: a candidate model, gated against the active one, promoted only if not worse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fascl.settings import get_settings

console = Console()


def retrain(
    preset: Annotated[
        str,
        typer.Option("--config", help="Encoder preset of the candidate: small (CPU default) | paper | tiny"),
    ] = "small",
    minutes: Annotated[
        float | None, typer.Option(min=0.1, help="Training budget in minutes (default: the preset's)")
    ] = None,
    margin: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Promote only if the candidate's validation FRC@1 is at least the active model's minus this",
        ),
    ] = 0.0,
    window_days: Annotated[
        int,
        typer.Option(min=20, help="Trading days of the validation window, ending where the future is known"),
    ] = 252,
    stride: Annotated[int, typer.Option(min=1, help="Trading days between the window's query dates")] = 16,
    candidate: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Gate this checkpoint (trained elsewhere, e.g. on a GPU) instead of training one",
        ),
    ] = None,
) -> None:
    """Train a candidate on the latest data, score it and the active model on the same recent window
    (date-level FRC@1), promote it (rebuild the kept history, flip the active version) or keep it
    for inspection. Exits 1 when the candidate is refused or the run fails."""
    from fascl.jobs.retrain import run_retrain

    outcome = run_retrain(
        get_settings(),
        preset=preset,
        minutes=minutes,
        margin=margin,
        window_days=window_days,
        stride=stride,
        candidate=candidate,
        console=console,
    )
    colour = {"promoted": "green"}.get(outcome.status, "red")
    console.print(f"[{colour}]retrain {outcome.status}[/]: {outcome.message}")
    if outcome.status != "promoted":
        raise typer.Exit(1)
