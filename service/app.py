"""The FastAPI application factory: registry, engine and metrics on `app.state`, the lifespan that
keeps the index current, middlewares, error handlers and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from catalogue.sessions import make_engine, session_factory
from index import ann
from index.store import IndexStore
from service.auth import ApiKeyMiddleware, document_api_keys
from service.connection import document_head_limits
from service.errors import install_error_handlers
from service.fastpath import SimilarFastPath
from service.limits import BodyLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics, publish_index_metrics
from service.registry import IndexRegistry
from service.routers import assets, operations, page, similar
from service.routing import include_flat

if TYPE_CHECKING:  # the entry point reads the settings (service/main.py) and passes them
    from fascl.settings import Settings

log = logging.getLogger("fascl.service")


def create_app(settings: Settings) -> FastAPI:
    # Every SQL call of the service gives up after database_timeout_seconds: a hanging database
    # fails a poll, it does not hold threads (queries never need it).
    engine = make_engine(settings.sqlalchemy_url, timeout_seconds=settings.database_timeout_seconds)
    registry = IndexRegistry(
        IndexStore(settings.indexes_dir, keep=settings.index_keep),
        session_factory(engine),
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
        publish_index_metrics(registry, metrics)

        async def poll() -> None:
            while True:
                await asyncio.sleep(settings.index_poll_seconds)
                try:
                    if await asyncio.to_thread(registry.refresh):
                        publish_index_metrics(registry, metrics)
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
    # What the dependencies (service/deps.py) read.
    app.state.registry, app.state.settings, app.state.metrics = registry, settings, metrics
    app.state.engine = engine
    install_error_handlers(app)
    for router in (similar.router, assets.router, operations.router, page.router):
        include_flat(app, router)
    # Outermost first: metrics see every answer; the key is checked before the body bound, and
    # both before anything reads the body. GET /similar/{ticker} is answered inside the key check,
    # past the framework's own layers (service/fastpath.py).
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
    hot = next(r for r in app.router.routes if getattr(r, "path", None) == "/similar/{ticker}")
    app.add_middleware(SimilarFastPath, route=hot, handlers=app.exception_handlers)
    if settings.require_api_key:
        app.add_middleware(ApiKeyMiddleware, registry=registry)
        document_api_keys(app)
    document_head_limits(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
