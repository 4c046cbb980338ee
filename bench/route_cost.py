"""In-process cost of one GET /similar through the ASGI app, beside a canned FastAPI endpoint.

No server and no sockets: requests go straight into the app's ASGI callable, so the figure is the
framework and the route alone, the part of bench/query_load.py's latency this project controls.
`--profile` adds cProfile's top functions by own time (where the time goes).

    .venv/bin/python bench/route_cost.py [--assets 5000] [--requests 20000] [--historical 0.5] [--profile]

Uses the same deployment as bench/query_load.py (built once under --home).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI
from query_load import prepare  # bench/ is the script's directory, first on sys.path
from rich.console import Console
from rich.table import Table
from starlette.responses import Response

console = Console()


def floor_app(body: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/similar/{ticker}")
    async def similar(ticker: str) -> Response:
        return Response(body, media_type="application/json")

    return app


async def drive(app, paths: list[str], n: int) -> tuple[float, list[dict]]:
    """Seconds per request over `n` requests; and the first response's messages."""

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message):
        if len(sent) < 2:
            sent.append(message)

    started = time.perf_counter()
    for i in range(n):
        path, _, query = paths[i % len(paths)].partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
    return (time.perf_counter() - started) / n, sent


async def run(args) -> None:
    from fascl.settings import get_settings
    from service.app import create_app

    app = create_app(get_settings())
    async with app.router.lifespan_context(app):
        if app.state.registry.current is None:
            raise SystemExit(
                f"no index to serve under {app.state.settings.indexes_dir}: run `make demo` or "
                "`fascl index build` first (FASCL_HOME selects the home)"
            )
        reader = app.state.registry.current.reader
        rng = random.Random(0)
        older = [d.isoformat() for d in reader.dates[:-1]]
        paths = [
            f"/similar/{rng.choice(reader.tickers)}?k=10"
            + (f"&date={rng.choice(older)}" if older and rng.random() < args.historical else "")
            for _ in range(10_000)
        ]
        _, first = await drive(app, paths, 1)
        floor = floor_app(first[1]["body"])
        rows = []
        for _ in range(2):  # alternate, so both see the same machine
            rows.append(("floor: canned async endpoint", (await drive(floor, paths, args.requests))[0]))
            rows.append(("FASCL GET /similar", (await drive(app, paths, args.requests))[0]))
        table = Table(
            title=f"in-process ASGI cost, {len(reader.tickers):,} assets, {args.historical:.0%} older dates"
        )
        table.add_column("app")
        table.add_column("us / request", justify="right")
        for name, seconds in rows:
            table.add_row(name, f"{seconds * 1e6:.1f}")
        console.print(table)
        service = min(s for n, s in rows if n.startswith("FASCL"))
        base = min(s for n, s in rows if n.startswith("floor"))
        console.print(
            f"the route adds {(service - base) * 1e6:.1f} us to the framework's {base * 1e6:.1f} us"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await drive(app, paths, args.requests)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--historical", type=float, default=0.0, help="share of requests on older dates")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "fascl-bench-query-load")
    args = parser.parse_args()
    prepare(args.home, args.assets)
    os.environ.update(
        FASCL_HOME=str(args.home),
        FASCL_DATABASE_URL=f"sqlite:///{args.home / 'fascl.db'}",
        FASCL_OMP_THREADS="1",
        FASCL_REQUIRE_API_KEY="false",
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
