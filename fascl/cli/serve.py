"""`fascl serve`: run the similarity service under uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fascl.settings import get_settings


def metrics_dir(given: str | None) -> Path:
    """The workers' shared metrics directory, emptied: values from an earlier run must not count."""
    if not given:
        return Path(tempfile.mkdtemp(prefix="fascl-metrics-"))
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


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

    from service.connection import guarded_protocol

    settings = get_settings()
    threads = omp_threads or settings.omp_threads
    workers = workers or settings.workers
    # Before faiss and torch load in the workers: a thread pool per worker, sized on purpose.
    os.environ["OMP_NUM_THREADS"] = os.environ["FASCL_OMP_THREADS"] = str(threads)
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    shared = metrics_dir(given) if workers > 1 else None
    if shared is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    try:
        uvicorn.run(
            "service.main:app",
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_level=log_level,
            access_log=False,  # a log line per request costs more than the query; /metrics has the counts
            # request heads must arrive in time and within a size
            http=guarded_protocol(settings.header_timeout_seconds),
        )
    finally:
        if shared is not None and not given:
            shutil.rmtree(shared, ignore_errors=True)
