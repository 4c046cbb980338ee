"""`fascl db ...` and `fascl keys ...`: the SQL store's schema, asset metadata and API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fascl.settings import get_settings

app = typer.Typer(help="SQL store: migrations and asset metadata.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; shown once on creation).", no_args_is_help=True)
console = Console()


def _factory():
    from catalogue.sessions import make_engine, session_factory

    return session_factory(make_engine(get_settings().sqlalchemy_url))


@app.command("upgrade")
def upgrade_command(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply the Alembic migrations (the only way the schema changes)."""
    from catalogue.migrate import upgrade as run_upgrade

    run_upgrade(get_settings().sqlalchemy_url, revision)
    console.print(f"[green]database at {revision}[/] ({_safe_url()})")


@app.command("downgrade")
def downgrade_command(revision: Annotated[str, typer.Argument(help="Target revision")] = "base") -> None:
    """Revert the migrations down to `revision` (base = empty)."""
    from catalogue.migrate import downgrade as run_downgrade

    run_downgrade(get_settings().sqlalchemy_url, revision)
    console.print(f"[yellow]database at {revision}[/] ({_safe_url()})")


@app.command("load-assets")
def load_assets_command(
    data: Annotated[
        str | None, typer.Option(help="Panel name under FASCL_HOME/market, or a panel directory")
    ] = None,
) -> None:
    """Load ticker, name, sector, industry, exchange and date range of every panel asset."""
    from catalogue.repository import upsert_assets as upsert
    from catalogue.sessions import session_scope
    from fascl.cli.panels import load_panel_or_exit

    path, panel = load_panel_or_exit(data, console)
    with session_scope(_factory()) as session:
        added, updated = upsert(session, panel, path.name)
    console.print(f"[green]assets from {path.name}:[/] {added} added, {updated} updated")


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().sqlalchemy_url).render_as_string(hide_password=True)


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="Who or what the key is for")],
    scope: Annotated[list[str], typer.Option(help="read (queries) and/or admin (reload)")] = ["read"],  # noqa: B006
) -> None:
    """Create an API key and print it once."""
    from catalogue.repository import create_api_key
    from catalogue.sessions import session_scope

    try:
        with session_scope(_factory()) as session:
            key = create_api_key(session, name, scope)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"key for {name} ({', '.join(scope)}); store it now, it is not kept in clear:")
    print(key)


@keys_app.command("revoke")
def revoke_key(prefix: Annotated[str, typer.Argument(help="The 8-character prefix after 'fascl_'")]) -> None:
    """Revoke a key by its prefix."""
    from catalogue.repository import revoke_api_key
    from catalogue.sessions import session_scope

    with session_scope(_factory()) as session:
        done = revoke_api_key(session, prefix)
    if not done:
        console.print(f"[red]no active key with prefix {prefix!r}[/]; see `fascl keys list`")
        raise typer.Exit(1)
    console.print(f"revoked {prefix}")


@keys_app.command("list")
def list_keys() -> None:
    """Keys by prefix, name, scopes and state (never the keys themselves)."""
    from sqlalchemy import select

    from catalogue.models import ApiKey

    table = Table("prefix", "name", "scopes", "created", "revoked")
    with _factory()() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            table.add_row(
                key.prefix,
                key.name,
                key.scopes,
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
            )
    console.print(table)
