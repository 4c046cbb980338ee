"""The routes' dependencies: what create_app puts on `app.state`, read back per request.

They are `async def` on purpose: they do no I/O, and a sync dependency would cost a hop to the
threadpool on every request (measured: most of the request time). `current_snapshot` is the plain
function under SnapshotDep, for GET /similar, which solves no dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from service.errors import APIError
from service.metrics import ServiceMetrics
from service.registry import IndexRegistry, Snapshot

if TYPE_CHECKING:  # the settings are read by the entry point (service/main.py), not here
    from fascl.settings import Settings


def current_snapshot(request: Request) -> Snapshot:
    """The snapshot served now, read once per request, or a 503 `no_index`."""
    registry = request.app.state.registry
    snap = registry.current
    if snap is None:
        detail = registry.last_error or "build one with `fascl index build`"
        raise APIError(503, "no_index", "no index is loaded yet", detail)
    return snap


async def get_snapshot(request: Request) -> Snapshot:
    return current_snapshot(request)


async def get_registry(request: Request) -> IndexRegistry:
    return request.app.state.registry


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


SnapshotDep = Annotated[Snapshot, Depends(get_snapshot)]
RegistryDep = Annotated[IndexRegistry, Depends(get_registry)]
SettingsDep = Annotated["Settings", Depends(get_app_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
EngineDep = Annotated[Engine, Depends(get_engine)]
