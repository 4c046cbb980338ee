"""`fascl train`: fit a FASCL encoder on a panel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fascl.cli.panels import load_panel_or_exit
from fascl.settings import get_settings

console = Console()


def train(
    data: Annotated[
        str | None, typer.Option(help="Panel name under FASCL_HOME/market, or a panel directory")
    ] = None,
    preset: Annotated[
        str, typer.Option("--config", help="Encoder preset: small (CPU default) | paper | tiny")
    ] = "small",
    out: Annotated[
        Path | None, typer.Option(help="Model directory (default FASCL_HOME/models/<data>-<config>)")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="ohlcva (paper) | close (ablation) | ohlcva_ret")
    ] = None,
    history: Annotated[
        int | None,
        typer.Option(help="Days of long-history returns for the history path (0: off, the paper's encoder)"),
    ] = None,
    tau: Annotated[
        float | None,
        typer.Option(help="Fixed prediction temperature (default: the preset's)"),
    ] = None,
    bf16: Annotated[bool | None, typer.Option(help="bfloat16 autocast (default: on CUDA only)")] = None,
    dates_per_step: Annotated[int | None, typer.Option(help="Dates per optimisation step")] = None,
    valid_every: Annotated[int | None, typer.Option(help="Epochs between validations")] = None,
    history_lr_scale: Annotated[
        float | None, typer.Option(help="LR multiplier of the history path (0: keep the classical start)")
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            help="soft (FASCL) | hard (InfoNCE) | observed (historical targets) | expected (smooth FRC@1); "
            "default: the preset's (small: expected, paper: soft)"
        ),
    ] = None,
    recent: Annotated[
        int | None, typer.Option(help="Days of the history path's recent block (0: none)")
    ] = None,
    prior: Annotated[
        bool | None, typer.Option(help="The candidate prior coordinate (default: the preset's)")
    ] = None,
    train_days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Train on the last N trading days of the training split (default: the preset's)"
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Assets per step (one date's cross-section)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    steps_per_epoch: Annotated[int | None, typer.Option()] = None,
    warmup_epochs: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    patience: Annotated[
        int | None, typer.Option(help="Epochs without a better validation FRC@1 before stopping")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option(help="Wall-clock budget; training stops cleanly when spent")
    ] = None,
    valid_start: Annotated[
        str | None, typer.Option(help="First validation date (default: Jan 1 of the year before test)")
    ] = None,
    test_start: Annotated[
        str | None, typer.Option(help="First test date (default: Jan 1 of the last year)")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Override the encoder width")] = None,
    depth: Annotated[int | None, typer.Option(help="Override the number of blocks")] = None,
    projection_head: Annotated[bool | None, typer.Option(help="Ablation: add a projection head")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean (paper) | cls (ablation)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads (default: every core; 1 beside other work)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt when present")] = True,
) -> None:
    """Train FASCL embeddings; validation FRC@1 is printed beside the historical-Pearson retriever's.

    Unset options take the preset of --config (model/train.py PRESETS): `small` fits minutes on a CPU,
    `paper` is the paper's recipe."""
    from model.train import preset_config
    from model.train import train as run_training

    path, panel = load_panel_or_exit(data, console)
    out = out or get_settings().models_dir / f"{path.name}-{preset}"
    overrides = {
        "width": width,
        "depth": depth,
        "pooling": pooling,
        "projection_head": projection_head,
        "history": history,
        "recent": recent,
        "prior": prior,
    }
    try:
        cfg = preset_config(
            preset,
            encoder_overrides={k: v for k, v in overrides.items() if v is not None},
            channels=channels,
            tau=tau,
            bf16=bf16,
            dates_per_step=dates_per_step,
            valid_every=valid_every,
            history_lr_scale=history_lr_scale,
            # An explicit --history is the start's length; otherwise the preset chooses on validation.
            history_choices=() if history is not None else None,
            loss=loss,
            train_days=train_days,
            batch_size=batch_size,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=warmup_epochs,
            lr=lr,
            patience=patience,
            max_minutes=minutes,
            valid_start=valid_start,
            test_start=test_start,
            seed=seed,
            threads=threads,
        )
        result = run_training(panel, cfg, out, resume=resume, console=console, data_source=str(path))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    table = Table(title=f"trained {out}", show_header=False)
    table.add_row("validation FRC@1, FASCL (best)", f"{result.best_valid_frc:.4f}")
    table.add_row("validation FRC@1, FASCL at step 0", f"{result.start_valid_frc:.4f}")
    table.add_row("what training added", f"{result.best_valid_frc - result.start_valid_frc:+.4f}")
    for name, value in result.baseline_valid_frc.items():
        table.add_row(f"validation FRC@1, {name}", f"{value:.4f}")
    table.add_row("epochs / steps", f"{result.epochs_run} / {result.steps}")
    table.add_row("samples per second (validation included)", f"{result.samples_per_second:,.0f}")
    table.add_row("share of time validating", f"{100 * result.valid_share:.0f}%")
    table.add_row("wall clock", f"{result.seconds / 60:.1f} min")
    table.add_row("stopped because", result.stopped_because)
    console.print(table)
