"""Finding and loading the panel a command works on (shared by train, evaluate, index and db)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fascl.settings import get_settings


def resolve_panel_path(data: str | None) -> Path:
    """A panel directory, or a panel name under FASCL_HOME/market (default FASCL_DATASET)."""
    settings = get_settings()
    name = data or settings.dataset
    return Path(name) if Path(name).is_dir() else settings.panel_path(name)


def load_panel_or_exit(data: str | None, console: Console, **load_options):
    """(path, panel), or the load error printed and exit status 1."""
    from market.panel import Panel, PanelError

    path = resolve_panel_path(data)
    try:
        return path, Panel.load(path, **load_options)
    except PanelError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
