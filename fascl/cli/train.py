"""`fascl train`: fit a FASCL encoder on a panel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fascl.settings import get_settings

console = Console()


def train(
    data: Annotated[
        str | None, typer.Option(help="Panel name under FASCL_HOME/market, or a panel directory")
    ] = None,
    config: Annotated[
        str, typer.Option(help="Encoder configuration: small (CPU default) | paper | tiny")
    ] = "small",
    out: Annotated[
        Path | None, typer.Option(help="Model directory (default FASCL_HOME/models/<data>-<config>)")
    ] = None,
    channels: Annotated[str, typer.Option(help="ohlcva (paper) | close (ablation) | ohlcva_ret")] = "ohlcva",
    loss: Annotated[
        str, typer.Option(help="soft (FASCL) | hard (InfoNCE) | observed (historical targets)")
    ] = "soft",
    batch_size: Annotated[int, typer.Option(help="Assets per step (one date's cross-section)")] = 4096,
    epochs: Annotated[int, typer.Option()] = 100,
    steps_per_epoch: Annotated[int, typer.Option()] = 300,
    warmup_epochs: Annotated[int, typer.Option()] = 10,
    lr: Annotated[float, typer.Option()] = 1e-3,
    patience: Annotated[
        int, typer.Option(help="Epochs without a better validation FRC@1 before stopping")
    ] = 10,
    minutes: Annotated[
        float | None, typer.Option(help="Wall-clock budget; training stops cleanly when spent")
    ] = None,
    valid_start: Annotated[
        str | None, typer.Option(help="First validation date (default: the year before the last)")
    ] = None,
    test_start: Annotated[
        str | None, typer.Option(help="First test date (default: Jan 1 of the last year)")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Override the encoder width")] = None,
    depth: Annotated[int | None, typer.Option(help="Override the number of blocks")] = None,
    projection_head: Annotated[bool, typer.Option(help="Ablation: add a projection head")] = False,
    pooling: Annotated[str, typer.Option(help="mean (paper) | cls (ablation)")] = "mean",
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt when present")] = True,
) -> None:
    """Train FASCL embeddings; validation FRC@1 is printed beside the historical-Pearson retriever's."""
    from market.panel import Panel, PanelError
    from model.train import TrainConfig
    from model.train import train as run_training

    settings = get_settings()
    name = data or settings.dataset
    path = Path(name) if Path(name).is_dir() else settings.panel_path(name)
    try:
        panel = Panel.load(path)
    except PanelError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    out = out or settings.models_dir / f"{path.name}-{config}"
    overrides = {"width": width, "depth": depth, "pooling": pooling, "projection_head": projection_head}
    cfg = TrainConfig(
        encoder=config,
        encoder_overrides={k: v for k, v in overrides.items() if v is not None},
        channels=channels,
        loss=loss,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=min(warmup_epochs, max(epochs - 1, 0)),
        lr=lr,
        patience=patience,
        max_minutes=minutes,
        valid_start=valid_start,
        test_start=test_start,
        seed=seed,
    )
    try:
        result = run_training(panel, cfg, out, resume=resume, console=console, data_source=str(path))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    table = Table(title=f"trained {out}", show_header=False)
    table.add_row("validation FRC@1, FASCL (best epoch)", f"{result.best_valid_frc:.4f}")
    table.add_row("validation FRC@1, historical Pearson", f"{result.pearson_valid_frc:.4f}")
    table.add_row("epochs / steps", f"{result.epochs_run} / {result.steps}")
    table.add_row("samples per second", f"{result.samples_per_second:,.0f}")
    table.add_row("stopped because", result.stopped_because)
    console.print(table)
