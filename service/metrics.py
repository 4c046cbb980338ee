"""Prometheus metrics: request latency by route and status, the served index version and its age.

Under several uvicorn workers each process counts its own requests, and a scrape reaches one of
them. `fascl serve --workers N` therefore sets PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode): every worker writes its values to files there, and /metrics, whichever worker
answers it, sums the histograms of all of them. Gauges take the maximum over the live workers.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from service.registry import IndexRegistry

# Buckets in seconds, dense below 10 ms where the similarity route lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServiceMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "fascl_request_seconds",
            "Request latency by route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_info = Gauge(
            "fascl_index_info",
            "The served index version (value 1)",
            ["index_version", "model_version"],
            registry=self.registry,
            multiprocess_mode="livemax",  # 1 for every version some live worker serves
        )
        self.newest_date_age = Gauge(
            "fascl_index_newest_date_age_days",
            "Days between today and the newest indexed date",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.sessions_behind = Gauge(
            "fascl_index_sessions_behind",
            "Trading sessions closed since the newest indexed date (the exchange calendars of its assets)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.stale = Gauge(
            "fascl_index_stale",
            "1 when the newest indexed date is more than FASCL_STALE_AFTER_SESSIONS sessions old",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.swaps = Gauge(
            "fascl_index_swaps_total",
            "Index versions swapped in since start (the most of any worker)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._served: tuple[str, str] | None = None

    def serving(self, index_version: str, model_version: str) -> None:
        """Mark the served version. The previous one is set to 0 rather than removed: in multiprocess
        mode a removed child's last value would stay in this worker's file."""
        if self._served is not None and self._served != (index_version, model_version):
            self.index_info.labels(*self._served).set(0)
        self.index_info.labels(index_version, model_version).set(1)
        self._served = (index_version, model_version)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """A worker's shutdown: its live gauges leave the aggregate (its histogram counts stay)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


def publish_index_metrics(registry: IndexRegistry, metrics: ServiceMetrics) -> None:
    """The served version and the swap count, after a start or a swap (nothing while none is served)."""
    snap = registry.current
    if snap is None:
        return
    metrics.serving(snap.index_version, snap.model_version)
    metrics.swaps.set(registry.swaps)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it adds a few microseconds per request, not a task switch."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics
        self._children: dict[tuple, object] = {}  # labels() builds a key and takes a lock on every call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.metrics.latency.labels(key[0], key[1], str(status))
            child.observe(time.perf_counter() - started)
