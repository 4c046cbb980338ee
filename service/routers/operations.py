"""Operations: liveness and readiness, Prometheus metrics, and a reload of the active index version."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import PlainTextResponse, Response

from service.deps import EngineDep, MetricsDep, RegistryDep, SettingsDep
from service.errors import APIError, error_response
from service.metrics import publish_index_metrics
from service.registry import RefreshInProgress, one_line
from service.routing import json_response
from service.schemas import ErrorResponse

router = APIRouter(tags=["operations"])


def sessions_behind(snap, now: dt.datetime) -> int | None:
    """Sessions closed since the newest indexed date, the most over its assets' exchanges; None when
    a calendar cannot say (a date past the span it was built for): the gauges then keep their value."""
    from market.calendar import CalendarError, stale_sessions  # exchange_calendars loads on first scrape

    exchanges = {m["exchange"] for m in snap.meta} or {""}
    try:
        return max(stale_sessions(snap.newest_date, now, exchange) for exchange in exchanges)
    except CalendarError:
        return None


@router.get("/health/live")
async def live() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"model": ErrorResponse}})
def ready(registry: RegistryDep, engine: EngineDep) -> Response:
    """Ready: an index is loaded, chosen by the database, which answers and whose polls are not stuck.
    Not ready says why; queries are answered from memory either way while an index is loaded."""
    snap = registry.current
    health = registry.health()
    problems = list(health["problems"])
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unreachable ({one_line(exc)})"
        if registry.database_error is None:
            problems.append(f"the database cannot be reached ({one_line(exc)})")
    body = {
        "index_version": snap.index_version if snap else None,
        "model_version": snap.model_version if snap else None,
        "newest_date": snap.dates_iso[-1] if snap else None,
        "index_source": health["index_source"],
        "database": database,
    }
    if problems:
        detail = {**body, "problems": problems, "index_error": health["index_error"]}
        return error_response(503, "not_ready", "not ready: " + "; ".join(problems), detail)
    return json_response({"status": "ready", **body})


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(registry: RegistryDep, metrics: MetricsDep, settings: SettingsDep) -> Response:
    """Prometheus metrics: latency histograms by route and status, index version, newest date's age,
    trading sessions since it and whether that makes the index stale."""
    # The served version as of now: a poll publishes it only once its swap has tidied up (the
    # heap settled), and queries see the new version before that.
    publish_index_metrics(registry, metrics)
    snap = registry.current
    if snap is not None:
        metrics.newest_date_age.set((dt.date.today() - snap.newest_date).days)
        behind = sessions_behind(snap, dt.datetime.now(dt.UTC))
        if behind is not None:
            metrics.sessions_behind.set(behind)
            limit = settings.stale_after_sessions
            metrics.stale.set(int(limit is not None and behind > limit))
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")


@router.post(
    "/admin/reload",
    responses={503: {"model": ErrorResponse, "description": "The database is unreachable"}},
)
def reload(registry: RegistryDep, metrics: MetricsDep) -> Response:
    """Check SQL for the active index version now, and swap to it if it changed."""
    try:
        swapped = registry.refresh(wait=1.0)
    except RefreshInProgress:  # a poll is waiting on the database: do not queue behind it
        raise APIError(
            503,
            "refresh_in_progress",
            "another check of the active index version is still waiting for the database; "
            "the served version is unchanged, retry shortly",
            registry.database_error,
        ) from None
    except SQLAlchemyError as exc:  # the served version stays; say why nothing was checked
        raise APIError(
            503,
            "database_unavailable",
            "cannot read the active index version: the database is unreachable; the served version is unchanged",
            one_line(exc),
        ) from None
    if swapped:
        publish_index_metrics(registry, metrics)
    snap = registry.current
    return json_response(
        {
            "swapped": swapped,
            "index_version": snap.index_version if snap else None,
            "error": registry.last_error,
        }
    )
