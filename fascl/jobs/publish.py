"""Build and publish an index version, with the reuse rule written once.

`reuse` names the version whose unchanged dates are taken over instead of embedded again: a
version name, "latest" (the newest published, when there is one), "active" (the one the catalogue
serves, what the nightly reindex takes from) or "none". The builder itself (index/build.py) only
copies the dates whose input is unchanged and whose checkpoint and index settings match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from fascl.jobs.errors import ReuseUnavailable
from fascl.jobs.retention import LEFTOVER_AGE_SECONDS
from fascl.jobs.stages import reached
from index.build import BuildResult, build_version
from index.errors import IndexStoreError
from index.shards import current_shard
from index.store import IndexStore, IndexVersion
from market.panel import Panel

REUSE_CHOICES = ("latest", "active", "none")


def reuse_source(store: IndexStore, reuse: str, active: str | None = None) -> IndexVersion | None:
    """The version to take unchanged dates from, by the rule above (`active`: the catalogue's
    active version name, needed for reuse="active"). None when there is nothing to take from."""
    if reuse == "none":
        return None
    if reuse == "latest" and store.latest_version() is None:
        return None
    if reuse == "active" and active is None:
        return None
    name = {"latest": None, "active": active}.get(reuse, reuse)
    try:
        return store.open_version(name, verify="lazy")
    except IndexStoreError as exc:
        raise ReuseUnavailable(f"--reuse {reuse}: {exc} (--reuse none embeds every date)") from None


def remove_leftovers(store: IndexStore, console: Console) -> None:
    """Staging and trash directories an interrupted job left more than a day ago."""
    for leftover in store.remove_leftovers(LEFTOVER_AGE_SECONDS):
        console.print(f"removed {leftover} (left by an interrupted job)", style="dim")


def publish_version(
    store: IndexStore,
    checkpoint: str | Path,
    panel: Panel,
    *,
    data_source: str,
    reuse: str | IndexVersion | None = "latest",
    start=None,
    end=None,
    index_kind: str = "auto",
    batch_size: int | None = None,
    threads: int | None = None,
    neighbors: int | None = None,
    vector_dtype: str = "float32",
    precision: str = "auto",
    progress: bool = True,
    console: Console | None = None,
    on_date: Callable[[str, int], None] | None = None,
) -> BuildResult:
    """The caller reports the "ingest" stage once its bars are in. Remove old leftovers, resolve `reuse` (a rule name, a version name or an opened version),
    then embed, index and publish the dates of `panel` in [start, end]. Publishing is atomic;
    nothing is activated or pruned here."""
    console = console or Console(quiet=not progress)
    if current_shard().main:  # under torchrun, one rank tidies
        remove_leftovers(store, console)
    source = reuse if isinstance(reuse, IndexVersion) or reuse is None else reuse_source(store, reuse)
    options = {} if neighbors is None else {"neighbors": neighbors}
    return build_version(
        checkpoint,
        panel,
        store=store,
        start=start,
        end=end,
        index_kind=index_kind,
        batch_size=batch_size,
        threads=threads,
        data_source=data_source,
        console=console,
        progress=progress,
        reuse=source,
        on_date=on_date,
        on_stage=lambda stage: reached(stage, console),
        vector_dtype=vector_dtype,
        precision=precision,
        **options,
    )
