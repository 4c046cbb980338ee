"""Scenario 6, a bounded soak: a real `fascl serve` answers mixed newest-date and historical GET /similar
and POST /similar batches from several client threads for a fixed time (10 minutes at the full
level) while its resident set size is sampled (every 5 s; every second at the fast level).

The figure is the slope of a least-squares line through the RSS samples after a warm-up (the LRU of
historical dates filling, allocator arenas growing), in MiB per minute; the anonymous part (RssAnon,
the heap, where a leak lives) and the slope over the second half alone are reported beside it. The
historical dates span more than FASCL_INDEX_CACHE_MB holds, so dates are loaded and evicted all
along: the path where a leak would live (faiss indexes, date files read and checked, filter caches).

The bound: a leak of 64 bytes per request, at the few hundred requests a second these clients
drive, grows the heap by more than 1 MiB a minute (1.4 GiB a day); so the full level asserts a
slope below SLOPE_BOUND (1 MiB/min, also under 100 bytes a request). The fast level's 12 s cannot
resolve that (one arena step is a few MiB), so it asserts only a gross bound, a leak of a few KiB a
request, and that the service answered throughout.

The service inherits this process's environment, so an allocator setting can be tried on the same
run, e.g. `MALLOC_MMAP_THRESHOLD_=131072 FASCL_RELIABILITY=full .venv/bin/python -m pytest
tests/reliability/test_soak.py`.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from tests.databases import _postgres_database
from tests.reliability.harness import (
    DOCS,
    FULL,
    LoadClient,
    Service,
    clone_home,
    level,
    percentile,
    prepare_database,
    query_targets,
)

TITLE = "6. Bounded soak"
DURATION_S = level(12.0, 600.0)
SAMPLE_S = level(1.0, 5.0)
WARMUP_S = level(4.0, 120.0)
CLIENTS = 3
SLOPE_BOUND_MIB_MIN = level(30.0, 1.0)
BYTES_PER_REQUEST_BOUND = level(None, 100.0)
CACHE_MB = level(1, 16)  # smaller than the historical dates queried: loads and evictions all along


@pytest.fixture
def soak_database_url(tmp_path):
    """The fast level soaks on SQLite; the full level on PostgreSQL, the production database."""
    if FULL:
        from tests.reliability.conftest import _require_postgres

        _require_postgres()
        yield from _postgres_database()
    else:
        yield f"sqlite:///{tmp_path / 'fascl.db'}"


def fit_slope(samples: list[tuple[float, int]], after: float) -> tuple[float, float, int]:
    """(MiB per minute, intercept MiB, points) of the least-squares line through samples at t >= after."""
    points = [(t, rss) for t, rss in samples if t >= after]
    if len(points) < 3:
        return float("nan"), float("nan"), len(points)
    t = np.array([p[0] for p in points]) / 60.0
    mib = np.array([p[1] for p in points]) / 2**20
    slope, intercept = np.polyfit(t, mib, 1)
    return float(slope), float(intercept), len(points)


def plot(samples, after: float, slope: float, intercept: float, path, title: str) -> None:
    """RSS and its anonymous part over time, the warm-up shaded, the fitted line over RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = np.array([s[0] for s in samples]) / 60.0
    rss = np.array([s[1] for s in samples]) / 2**20
    anon = np.array([s[2] for s in samples]) / 2**20
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.2), dpi=110)
    top.plot(minutes, rss, lw=1.2, marker=".", ms=3, label="RSS of the fascl serve process")
    fit_t = np.array([after / 60.0, minutes[-1]])
    top.plot(fit_t, intercept + slope * fit_t, "r--", lw=1.2, label=f"least squares: {slope:+.3f} MiB/min")
    bottom.plot(minutes, anon, lw=1.2, marker=".", ms=3, color="tab:green", label="of which anonymous (heap)")
    for ax in (top, bottom):
        ax.axvspan(0, after / 60.0, color="0.9", label="warm-up (not fitted)" if ax is top else None)
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("minutes")
    top.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@pytest.mark.timeout(level(300, 1500))  # the full level's 10 minutes, the deployment and the warm-up
def test_bounded_soak(reliability_deployment, soak_database_url, tmp_path, scenario):
    backend = "postgresql" if soak_database_url.startswith("postgresql") else "sqlite"
    scenario.title, scenario.database = TITLE, backend
    home = clone_home(reliability_deployment, tmp_path / "home")
    prepare_database(
        soak_database_url, reliability_deployment, home / "indexes", active=reliability_deployment.version
    )
    env = {"FASCL_INDEX_CACHE_MB": str(CACHE_MB)}
    with Service(
        home, soak_database_url, tmp_path / "server.log", poll_seconds=level(1.0, 5.0), env=env
    ) as service:
        service.start()
        targets = query_targets(
            service.base_url, tickers=level(10, 40), historical_dates=level(40, 150), seed=6
        )
        newest = [p for p in targets["paths"] if "date=" not in p]
        historical = [p for p in targets["paths"] if "date=" in p]
        # Half the GETs ask for the newest date (a table lookup), half for a historical one (a load
        # from disk when the date is not cached); every 5th request is a batch of 25 mixed queries.
        paths = newest * max(1, len(historical) // max(1, len(newest))) + historical
        clients = [
            LoadClient(
                service.base_url,
                paths,
                targets["tickers"],
                targets["dates"],
                batch_every=5,
                batch_size=25,
                seed=10 + i,
                keep=False,
            )
            for i in range(CLIENTS)
        ]
        samples: list[tuple[float, int, int]] = []  # (seconds, RSS, anonymous RSS)
        requests_at: list[tuple[float, int]] = []
        halt = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while True:
                memory = service.memory()
                now = time.monotonic() - started
                if memory is not None:
                    samples.append((now, memory["rss"], memory.get("anon", 0)))
                    requests_at.append((now, sum(sum(c.statuses.values()) for c in clients)))
                if halt.wait(SAMPLE_S):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for client in clients:
            client.start()
        time.sleep(DURATION_S)
        for client in clients:
            client.stop()
        halt.set()
        sampler.join(timeout=10)
        alive = service.alive()

    statuses: dict = {}
    for client in clients:
        for code, n in client.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    total = sum(statuses.values())
    non_200 = {code: n for code, n in statuses.items() if code != 200}
    latencies = [x for c in clients for x in c.latencies]
    slope, intercept, points = fit_slope([(t, r) for t, r, _ in samples], WARMUP_S)
    anon_slope, _, _ = fit_slope([(t, a) for t, _, a in samples], WARMUP_S)
    half = (WARMUP_S + DURATION_S) / 2  # the second half of the fitted span alone: a plateau or a climb?
    late_slope, _, _ = fit_slope([(t, r) for t, r, _ in samples], half)
    fitted = [(t, n) for t, n in requests_at if t >= WARMUP_S]
    rate = (fitted[-1][1] - fitted[0][1]) / (fitted[-1][0] - fitted[0][0]) if len(fitted) > 1 else 0.0
    bytes_per_request = slope * 2**20 / 60.0 / rate if rate else float("nan")
    rss = [r for _, r, _ in samples]
    figure = (DOCS if FULL else tmp_path) / "reliability-soak.png"
    span = f"{DURATION_S / 60:.0f}-minute" if DURATION_S >= 60 else f"{DURATION_S:.0f}-second"
    if len(samples) >= 3:
        plot(
            samples,
            WARMUP_S,
            slope,
            intercept,
            figure,
            f"fascl serve RSS under a {span} soak ({backend}, {reliability_deployment.n_assets} "
            f"assets x {reliability_deployment.n_dates} dates, cache {CACHE_MB} MiB)",
        )
        scenario.artifacts.append(str(figure))

    scenario.load = (
        f"{CLIENTS} client threads for {DURATION_S:g} s: GET /similar half newest, half over "
        f"{len(targets['dates'])} historical dates, every 5th request a POST batch of 25; "
        f"{total:,} requests, {total / DURATION_S:,.0f}/s; FASCL_INDEX_CACHE_MB={CACHE_MB}"
    )
    scenario.faults = (
        f"none: time; RSS sampled every {SAMPLE_S:g} s, slope fitted after a {WARMUP_S:g} s warm-up"
    )
    scenario.lost = (
        f"{sum(non_200.values())} non-200; RSS {min(rss) / 2**20:.0f}-{max(rss) / 2**20:.0f} MiB, "
        f"slope {slope:+.3f} MiB/min after the warm-up ({bytes_per_request:+.1f} bytes a request; "
        f"heap {anon_slope:+.3f}; second half {late_slope:+.3f})"
        if rss
        else "no RSS sample"
    )
    scenario.metrics = {
        "duration_s": DURATION_S,
        "requests": total,
        "requests_per_s": round(total / DURATION_S, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": round(1e3 * (percentile(latencies, 50) or 0), 2),
        "p99_ms": round(1e3 * (percentile(latencies, 99) or 0), 2),
        "rss_mib": {
            "first": round(rss[0] / 2**20, 1) if rss else None,
            "after_warmup": round(intercept + slope * WARMUP_S / 60, 1) if points else None,
            "last": round(rss[-1] / 2**20, 1) if rss else None,
            "max": round(max(rss) / 2**20, 1) if rss else None,
        },
        "slope_mib_per_min": round(slope, 4),
        "anon_slope_mib_per_min": round(anon_slope, 4),
        "second_half_slope_mib_per_min": round(late_slope, 4),
        "bytes_per_request": round(bytes_per_request, 2),
        "fitted_samples": points,
        "samples": [(round(t, 1), r, a) for t, r, a in samples],
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "figure": str(figure),
    }

    check = scenario.check
    check(alive, "the service stayed up")
    check(
        total > 0 and not non_200,
        f"every request answered 200 ({sum(non_200.values())} of {total:,} did not: {non_200})",
    )
    check(points >= 3, f"{points} RSS samples after the warm-up")
    check(
        slope < SLOPE_BOUND_MIB_MIN,
        f"RSS slope {slope:+.3f} MiB/min after the warm-up < {SLOPE_BOUND_MIB_MIN} MiB/min",
    )
    if BYTES_PER_REQUEST_BOUND is not None:
        check(
            bytes_per_request < BYTES_PER_REQUEST_BOUND,
            f"{bytes_per_request:+.1f} bytes a request < {BYTES_PER_REQUEST_BOUND}",
        )
    scenario.conclude()
