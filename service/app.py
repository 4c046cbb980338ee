"""The FastAPI application factory: registry, engine and metrics on `app.state`, the lifespan that
keeps the index current, middlewares, error handlers and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.resources
import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
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

# The documentation pages' scripts and styles come from the fastapi-offline package's files, served
# by the app: FastAPI's default pages load them from a CDN and are blank where it cannot be reached.
# The package version in the path changes with the files, so browsers may keep them for a year.
DOCS_ASSETS = f"/static/docs/{importlib.metadata.version('fastapi-offline')}"
# ReDoc shows its maker's logo from the maker's CDN: the pages may show images from the service only
# (the logo hides itself when refused), so viewing the documentation never calls an outside host.
DOCS_POLICY = "img-src 'self' data:"


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
        # The pages are served offline below (serve_docs_offline), not from FastAPI's CDN defaults.
        docs_url=None,
        redoc_url=None,
    )
    # With keys required the HTML pages are off (a browser cannot send the key header);
    # /openapi.json stays, behind a read key, for tools.
    if not settings.require_api_key:
        serve_docs_offline(app)
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


class _ImmutableFiles(StaticFiles):
    """Static files with a year-long cache lifetime: their URLs are versioned (DOCS_ASSETS)."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def serve_docs_offline(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with every script, style and icon from DOCS_ASSETS."""
    static = importlib.resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, _ImmutableFiles(directory=str(static)), name="docs-assets")

    def assets(request: Request) -> str:
        # Behind a proxy that strips a prefix, the page's URLs need it back.
        return request.scope.get("root_path", "").rstrip("/") + DOCS_ASSETS

    def openapi_url(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + app.openapi_url

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        html = get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets(request)}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets(request)}/swagger-ui.css",
            swagger_favicon_url=f"{assets(request)}/favicon.png",
        )
        html.headers["Content-Security-Policy"] = DOCS_POLICY
        return html

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        html = get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets(request)}/redoc.standalone.js",
            redoc_favicon_url=f"{assets(request)}/favicon.png",
            # Google Fonts is another outside host; the page falls back to the system's fonts.
            with_google_fonts=False,
        )
        html.headers["Content-Security-Policy"] = DOCS_POLICY
        return html
