"""`fascl serve`: run the similarity service under uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from fascl.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default FASCL_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default FASCL_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default FASCL_WORKERS)")] = None,
    omp_threads: Annotated[
        int | None, typer.Option(help="OpenMP threads per worker (default FASCL_OMP_THREADS)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve GET /similar/{ticker} and friends from the active index version."""
    import uvicorn

    settings = get_settings()
    threads = omp_threads or settings.omp_threads
    # Before faiss and torch load in the workers: a thread pool per worker, sized on purpose.
    os.environ["OMP_NUM_THREADS"] = os.environ["FASCL_OMP_THREADS"] = str(threads)
    uvicorn.run(
        "service.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level=log_level,
        access_log=False,  # a log line per request costs more than the query; /metrics has the counts
    )
