"""The FastAPI application factory: settings, registry, error shape, metrics, API keys and the routes."""

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import PlainTextResponse, Response

from catalogue.sessions import make_engine, session_factory
from fascl.settings import Settings, get_settings
from index import ann
from index.errors import UnknownTicker
from index.store import IndexStore
from service.auth import ApiKeyMiddleware, document_api_keys
from service.connection import document_head_limits
from service.errors import APIError, install_error_handlers
from service.limits import BodyLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.params import SIMILAR_PARAMETERS, parse_similar_params, parse_ticker
from service.registry import IndexRegistry, RefreshInProgress, Snapshot, one_line
from service.schemas import (
    MAX_NAME,
    MAX_OFFSET,
    AssetOut,
    AssetPage,
    DatesOut,
    ErrorResponse,
    SimilarBatch,
    SimilarBatchResponse,
    SimilarResponse,
)
from service.similar import answer, to_api_error

log = logging.getLogger("fascl.service")

ERRORS = {
    404: {
        "model": ErrorResponse,
        "description": "Unknown ticker (with close matches) or no data on that date",
    },
    422: {
        "model": ErrorResponse,
        "description": "Malformed date, k outside 1..100, unknown sector or exchange",
    },
    503: {"model": ErrorResponse, "description": "No index loaded yet"},
}


def json_response(payload, status: int = 200) -> Response:
    # orjson and a plain Response: no response-model validation on the hot path (the schema is
    # documented through `responses=`), which is most of FastAPI's per-request cost.
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response, with no dependency solving.

    For GET /similar: FastAPI resolves an endpoint's parameters (path, query, header and cookie
    fields) on every call, which profiled at a third of the route's in-process cost. The endpoint
    parses its own parameters (service/params.py) and `openapi_extra` documents them."""

    def get_route_handler(self):
        return self.endpoint


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Every SQL call of the service gives up after database_timeout_seconds: a hanging database
    # fails a poll, it does not hold threads (queries never need it).
    engine = make_engine(settings.sqlalchemy_url, timeout_seconds=settings.database_timeout_seconds)
    sessions = session_factory(engine)
    registry = IndexRegistry(
        IndexStore(settings.indexes_dir, keep=settings.index_keep),
        sessions,
        cache_bytes=settings.index_cache_mb * 2**20,
        omp_threads=settings.omp_threads,
        stuck_after=3 * settings.database_timeout_seconds,
    )
    metrics = ServiceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        # OpenMP's thread count is per calling thread, and queries run on the event loop's thread.
        ann.set_threads(settings.omp_threads)
        # Starts without the database too: from the version last served, until a poll reaches it.
        await asyncio.to_thread(registry.start)
        publish_index_metrics()

        async def poll() -> None:
            while True:
                await asyncio.sleep(settings.index_poll_seconds)
                try:
                    if await asyncio.to_thread(registry.refresh):
                        publish_index_metrics()
                except SQLAlchemyError:  # keep polling: the database may be back at the next tick
                    log.warning("index poll: the database cannot be read (%s)", registry.database_error)
                except Exception:
                    log.exception("index poll failed")

        task = asyncio.create_task(poll())
        try:
            yield
        finally:
            task.cancel()
            engine.dispose()
            metrics.close()

    app = FastAPI(
        title="FASCL asset retrieval",
        summary="Which assets will move most like X after date D?",
        description="Peers ranked by the similarity of FASCL embeddings of each asset's trailing 64-day window "
        "and two years of returns, trained so that similarity follows the correlation of future 64-day returns.",
        version="0.1.0",
        lifespan=lifespan,
        # With keys required the HTML pages are off (a browser cannot send the key header);
        # /openapi.json stays, behind a read key, for tools.
        docs_url=None if settings.require_api_key else "/docs",
        redoc_url=None if settings.require_api_key else "/redoc",
    )
    app.state.registry, app.state.settings, app.state.metrics = registry, settings, metrics
    install_error_handlers(app)
    # Outermost first: metrics see every answer; the key is checked before the body bound, and
    # both before anything reads the body.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
    if settings.require_api_key:
        app.add_middleware(ApiKeyMiddleware, registry=registry)
        document_api_keys(app)
    document_head_limits(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def publish_index_metrics() -> None:
        snap = registry.current
        if snap is None:
            return
        metrics.serving(snap.index_version, snap.model_version)
        metrics.swaps.set(registry.swaps)

    # ------------------------------------------------------------ dependencies
    # Dependencies are `async def` on purpose: they do no I/O, and a sync dependency would cost a
    # hop to the threadpool on every request (measured: most of the request time).
    def current() -> Snapshot:
        snap = registry.current
        if snap is None:
            detail = registry.last_error or "build one with `fascl index build`"
            raise APIError(503, "no_index", "no index is loaded yet", detail)
        return snap

    async def snapshot() -> Snapshot:
        return current()

    SnapshotDep = Annotated[Snapshot, Depends(snapshot)]

    # ------------------------------------------------------------------ routes
    async def similar(request: Request) -> Response:
        """The k assets whose future returns the model expects to move most like `ticker`'s after `date`."""
        ticker = parse_ticker(request.path_params["ticker"])
        return json_response(answer(current(), ticker, **parse_similar_params(request.query_params)))

    app.router.add_api_route(
        "/similar/{ticker}",
        similar,
        methods=["GET"],
        response_model=None,
        tags=["similarity"],
        responses={200: {"model": SimilarResponse, "description": "Peers, best first"}, **ERRORS},
        openapi_extra={"parameters": SIMILAR_PARAMETERS},
        route_class_override=DirectRoute,
    )

    @app.post(
        "/similar",
        response_model=SimilarBatchResponse,
        tags=["similarity"],
        responses={
            **ERRORS,
            400: {"model": ErrorResponse, "description": "The body is not JSON encoded as UTF-8"},
            413: {"model": ErrorResponse, "description": "The body is over FASCL_MAX_BODY_BYTES"},
        },
    )
    def similar_batch(snap: SnapshotDep, batch: SimilarBatch) -> Response:
        """Many queries in one call; each item carries its result or the error it would have returned."""
        # A sync route: up to 1,000 searches stay off the event loop, on a threadpool thread whose
        # OpenMP thread count is its own (set here, as the loop's is in the lifespan).
        ann.set_threads(settings.omp_threads)
        items = []
        for q in batch.queries:
            try:
                items.append({"result": answer(snap, **q.model_dump()), "error": None})
            except APIError as exc:
                items.append(
                    {
                        "result": None,
                        "error": {"code": exc.code, "message": exc.message, "detail": exc.detail},
                    }
                )
        return json_response({"results": items})

    @app.get("/assets", response_model=AssetPage, tags=["assets"])
    def assets(
        snap: SnapshotDep,
        q: Annotated[
            str | None, Query(max_length=MAX_NAME, description="Ticker prefix or part of the name, any case")
        ] = None,
        sector: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Assets of the served index, searchable by ticker prefix or name."""
        needle = (q or "").strip().lower()
        rows = [
            (aid, m)
            for aid, m in enumerate(snap.meta)
            if (not needle or m["ticker"].lower().startswith(needle) or needle in m["name"].lower())
            and (sector is None or m["sector"] == sector)
        ]
        page = [asset_out(snap, aid) for aid, _ in rows[offset : offset + limit]]
        return json_response({"total": len(rows), "offset": offset, "limit": limit, "items": page})

    @app.get(
        "/assets/{ticker}",
        response_model=AssetOut,
        tags=["assets"],
        responses=ERRORS,
    )
    def asset(snap: SnapshotDep, ticker: str) -> Response:
        """One asset's metadata and the dates it has vectors for."""
        try:
            aid = snap.reader.asset_id(parse_ticker(ticker))
        except UnknownTicker as exc:
            raise to_api_error(exc) from None
        return json_response(asset_out(snap, aid))

    @app.get("/dates", response_model=DatesOut, tags=["assets"])
    def dates(snap: SnapshotDep) -> Response:
        """The indexed trading dates."""
        iso = snap.dates_iso
        return json_response(
            {
                "index_version": snap.index_version,
                "first": iso[0],
                "last": iso[-1],
                "count": len(iso),
                "dates": iso,
            }
        )

    @app.get("/health/live", tags=["operations"])
    async def live() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["operations"], responses={503: {"model": ErrorResponse}})
    def ready() -> Response:
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
            return json_response(
                {
                    "error": {
                        "code": "not_ready",
                        "message": "not ready: " + "; ".join(problems),
                        "detail": detail,
                    }
                },
                503,
            )
        return json_response({"status": "ready", **body})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus metrics: latency histograms by route and status, index version, newest date's age."""
        snap = registry.current
        if snap is not None:
            metrics.newest_date_age.set((dt.date.today() - snap.newest_date).days)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/admin/reload",
        tags=["operations"],
        responses={503: {"model": ErrorResponse, "description": "The database is unreachable"}},
    )
    def reload() -> Response:
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
            publish_index_metrics()
        snap = registry.current
        return json_response(
            {
                "swapped": swapped,
                "index_version": snap.index_version if snap else None,
                "error": registry.last_error,
            }
        )

    return app


def asset_out(snap: Snapshot, aid: int) -> dict:
    first, last = snap.first_last[aid]
    return {**snap.meta[aid], "first_date": first, "last_date": last}
